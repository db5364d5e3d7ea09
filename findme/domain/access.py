"""Who may see what: the events a person can see, and the event, photo or job they ask for.

Ids are sequential, so what the caller may not see answers exactly as an unknown id does (404,
same sentence): nobody learns which events, photos or jobs exist by trying ids. A 403 is only
for what the caller can see but may not do: a member of an event asking for what only its
organiser may do (delete it or its photos, upload into it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from findme.auth import Principal
from findme.db import Event, EventMember, Job, Photo
from findme.errors import Forbidden, NotFound
from findme.services import AppState


def my_events(user_id: int) -> Select[Any]:
    """The ids of the events a person organises or joined."""
    member_of = select(EventMember.event_id).where(EventMember.user_id == user_id)
    return select(Event.id).where(or_(Event.organiser_id == user_id, Event.id.in_(member_of)))


def visible_events(principal: Principal) -> Select[Any]:
    """The ids of the events whose photos the caller may see: an admin sees every event."""
    return select(Event.id) if principal.is_admin else my_events(principal.id)


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


async def viewable_photo(
    state: AppState,
    session: AsyncSession,
    principal: Principal,
    photo_id: int,
    *,
    organiser: bool = False,
) -> Photo:
    """The photo if the caller may see it (its event's organiser, a member, or an admin), or
    change it (`organiser`); 404 and 403 as for events."""
    photo = await session.get(Photo, photo_id)
    seen = None if photo is None else await _seen_event(state, session, principal, photo.event_id)
    if photo is None or seen is None:
        raise NotFound(NO_PHOTO)
    if organiser and seen[1] == "member":
        raise Forbidden(ORGANISER_ONLY)
    return photo


async def _seen_event(
    state: AppState, session: AsyncSession, principal: Principal, event_id: int
) -> tuple[Event, str] | None:
    """The event and how the caller relates to it, or None if they may not see it."""
    found = await state.caches.events.get((event_id,), lambda: session.get(Event, event_id))
    if found is None:
        return None
    if found.organiser_id == principal.id:
        return found, "organiser"
    if principal.is_admin:
        return found, "admin"
    if await session.get(EventMember, (event_id, principal.id)) is not None:
        return found, "member"
    return None


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
