"""Who may see what: the events a person can see, and the event, photo or job they ask for.

Ids are sequential, so what the caller may not see answers exactly as an unknown id does (404,
same sentence): nobody learns which events, photos or jobs exist by trying ids. A 403 is only
for what the caller can see but may not do: a member of an event asking for what only its
organiser may do (delete it or its photos, upload into it).

Photos: an event's organiser and admins see all of them; a member sees the photos they are
matched to, or every photo of the event if its organiser chose so (`Event.gallery`).
`photos_seen_by` is that rule for lists, and `viewable_photo` applies the same condition to one
photo, so lists, originals, thumbnails and "not me" cannot disagree. `gallery_member` says which
of the two lists one event's gallery is for the caller (its page may then come from a cache).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, bindparam, or_, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from findme.auth import Principal
from findme.db import Database, Event, EventMember, FaceMatch, Gallery, Job, Photo
from findme.errors import Forbidden, NotFound

if TYPE_CHECKING:
    # Annotations only, as in findme/domain/photos.py.
    from findme.services import AppState


def my_events(user_id: int) -> Select[Any]:
    """The ids of the events a person organises or joined."""
    member_of = select(EventMember.event_id).where(EventMember.user_id == user_id)
    return select(Event.id).where(or_(Event.organiser_id == user_id, Event.id.in_(member_of)))


def photos_seen_by(principal: Principal) -> ColumnElement[bool]:
    """The photos the caller may see, as a condition on Photo."""
    if principal.is_admin:
        return true()
    organised = select(Event.id).where(Event.organiser_id == principal.id)
    return or_(Photo.event_id.in_(organised), _member_sees(principal.id))


def _member_sees(user_id: int) -> ColumnElement[bool]:
    """Every photo of the joined events open to all; in the others, the person's matches."""
    joined = select(EventMember.event_id).where(EventMember.user_id == user_id)
    shared = select(Event.id).where(Event.id.in_(joined), Event.gallery == Gallery.all)
    matched = select(FaceMatch.photo_id).where(
        FaceMatch.user_id == user_id, FaceMatch.event_id.in_(joined)
    )
    return or_(Photo.event_id.in_(shared), Photo.id.in_(matched))


def sees_every_photo(event: Event, role: str) -> bool:
    """Whether the caller, in this relation to the event, sees all its photos (for pages)."""
    return role in {"organiser", "admin"} or event.gallery == Gallery.all


NO_EVENT = "There is no event with this id."
NO_PHOTO = "There is no photo with this id."
NO_JOB = "There is no job with this id."
ORGANISER_ONLY = "Only the event's organiser can do this."


async def event_for(
    state: AppState,
    session: AsyncSession,
    principal: Principal,
    event_id: int,
    *,
    organiser: bool = False,
) -> tuple[Event, str]:
    """The event and the caller's relation to it; 404 unless they may see it, 403 when they
    may see it but not change it (`organiser`)."""
    seen = await _seen_event(state, session, principal, event_id)
    if seen is None:
        raise NotFound(NO_EVENT)
    if organiser and seen[1] == "member":
        raise Forbidden(ORGANISER_ONLY)
    return seen


_MEMBER_GALLERY = (
    select(Event.gallery)
    .join(EventMember, EventMember.event_id == Event.id)
    .where(Event.id == bindparam("event_id"), EventMember.user_id == bindparam("user_id"))
)


async def gallery_member(state: AppState, principal: Principal, event_id: int) -> int | None:
    """Whose photos of the event the caller's gallery lists: None for every photo (its
    organiser, an admin, or a member when the gallery is open to all), else the caller's id (a
    member sees the photos they are matched to); 404 as `event_for`.

    Every page of a gallery asks, cached or not, so the answer comes from caches that every
    instance empties when it hears the event changed (`Caches.events_changed`): the database
    is read only on a miss. A membership ends only with its event or its account, and a
    refusal is never cached, so a person who just joined is let in at once.
    """

    async def load_event() -> Event | None:
        async with state.db.reads() as session:
            return await session.get(Event, event_id)

    event = await state.caches.events.get((event_id,), load_event)
    if event is None:
        raise NotFound(NO_EVENT)
    if event.organiser_id == principal.id or principal.is_admin:
        return None

    async def load_gallery() -> Gallery:
        async with state.db.reads() as session:
            connection = await session.connection()
            gallery = await connection.scalar(
                _MEMBER_GALLERY, {"event_id": event_id, "user_id": principal.id}
            )
        if gallery is None:
            raise NotFound(NO_EVENT)
        return gallery

    gallery = await state.caches.gallery_access.get((event_id, principal.id), load_gallery)
    return None if gallery == Gallery.all else principal.id


async def viewable_photo(
    state: AppState,
    session: AsyncSession,
    principal: Principal,
    photo_id: int,
    *,
    organiser: bool = False,
) -> Photo:
    """The photo if the caller may see it (see `photos_seen_by`), or change it (`organiser`);
    404 and 403 as for events: a member is told a photo not theirs to see does not exist."""
    photo = await session.get(Photo, photo_id)
    if photo is None:
        raise NotFound(NO_PHOTO)
    event = await state.caches.events.get(
        (photo.event_id,), lambda: session.get(Event, photo.event_id)
    )
    if event is not None and (event.organiser_id == principal.id or principal.is_admin):
        return photo
    # Anyone else sees it as a member who may (one query: membership, the gallery setting and
    # the person's matches). The setting is read afresh, not from the cached event: an
    # organiser who closes the gallery closes it at once, on every instance. Grids ask this
    # once per thumbnail, so it stays one query.
    if event is None or not await session.scalar(
        select(Photo.id).where(Photo.id == photo.id, _member_sees(principal.id))
    ):
        raise NotFound(NO_PHOTO)
    if organiser:
        raise Forbidden(ORGANISER_ONLY)
    return photo


async def _seen_event(
    state: AppState,
    session: AsyncSession,
    principal: Principal,
    event_id: int,
    *,
    is_member: Callable[[], Awaitable[bool]] | None = None,
) -> tuple[Event, str] | None:
    """The event and how the caller relates to it, or None if they may not see it.
    Membership is read in `session` unless `is_member` reads it."""
    found = await state.caches.events.get((event_id,), lambda: session.get(Event, event_id))
    if found is None:
        return None
    if found.organiser_id == principal.id:
        return found, "organiser"
    if principal.is_admin:
        return found, "admin"
    if is_member is None:
        member = await session.get(EventMember, (event_id, principal.id)) is not None
    else:
        member = await is_member()
    return (found, "member") if member else None


async def stream_event_for(state: AppState, principal: Principal, event_id: int) -> None:
    """`event_for`, for a live stream being set up: its membership is read with those of every
    stream connecting meanwhile (`memberships`), as thousands do after a restart."""

    async def is_member() -> bool:
        return bool(await state.memberships.load((event_id, principal.id)))

    async with state.db.sessions() as session:
        seen = await _seen_event(state, session, principal, event_id, is_member=is_member)
    if seen is None:
        raise NotFound(NO_EVENT)


async def memberships(
    db: Database, keys: Collection[tuple[int, int]]
) -> dict[tuple[int, int], bool]:
    """Which of these (event_id, user_id) are memberships, in one query."""
    async with db.sessions() as session:
        rows = await session.execute(
            select(EventMember.event_id, EventMember.user_id).where(
                tuple_(EventMember.event_id, EventMember.user_id).in_(list(keys))
            )
        )
        return {(row.event_id, row.user_id): True for row in rows}


async def job_for(session: AsyncSession, principal: Principal, job_id: int) -> Job:
    """A job, for whoever it concerns: its user, its event's organiser, or an admin; anyone
    else is told it does not exist."""
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(NO_JOB)
    if principal.is_admin or job.user_id == principal.id:
        return job
    if job.event_id is not None:
        event = await session.get(Event, job.event_id)
        if event is not None and event.organiser_id == principal.id:
            return job
    raise NotFound(NO_JOB)
