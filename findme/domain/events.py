"""Events: codes, creation, settings, joining, progress and deletion."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme import jobs
from findme.auth import Principal
from findme.db import (
    Event,
    EventMember,
    Face,
    FaceMatch,
    Gallery,
    Job,
    JobKind,
    JobStatus,
    Joining,
    Photo,
    utcnow,
)
from findme.domain.access import my_events
from findme.domain.erasure import erase
from findme.domain.views import job_link
from findme.errors import CodeExpired, Forbidden, JoiningClosed, NotFound
from findme.services import AppState

# No 0/O, 1/I/L: codes are read off posters and typed on phones.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_CHARS = 8


def new_event_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_CHARS))


def normalise_code(raw: str) -> str:
    """A code as typed or read off a poster ("abcd efgh", "ABCD-EFGH") as it is stored."""
    return raw.upper().replace(" ", "").replace("-", "")


def join_url(base_url: str, code: str) -> str:
    """The absolute link a QR code or a poster points to."""
    return f"{base_url.rstrip('/')}/join/{code}"


def role_of(event: Event, user_id: int) -> str:
    """The relation shown in lists of one's own events."""
    return "organiser" if event.organiser_id == user_id else "member"


async def create_event(
    state: AppState,
    principal: Principal,
    *,
    name: str,
    date: dt.date | None,
    gallery: Gallery = Gallery.own,
) -> Event:
    async with state.db.transaction() as session:
        event = Event(
            name=name,
            date=date,
            code=await _unused_code(session),
            organiser_id=principal.id,
            gallery=gallery,
        )
        session.add(event)
        await session.flush()
    return event


async def _unused_code(session: AsyncSession) -> str:
    # Codes are random: a collision is rare, and the unique constraint catches it.
    code = new_event_code()
    while await session.scalar(select(func.count()).where(Event.code == code)):
        code = new_event_code()
    return code


async def change_settings(state: AppState, event_id: int, changes: Mapping[str, Any]) -> Event:
    """Change the event's settings (`gallery`, `joining`, `code_expires_at`, `code`) at once.

    Joining reads the settings from the database, not the cached event; every instance hears
    of the change and drops its cached copy of the event and of who may see its gallery, so
    closing the gallery or joining takes effect at once everywhere.
    """
    async with state.db.transaction() as session:
        await session.execute(update(Event).where(Event.id == event_id).values(**changes))
        event = await session.get(Event, event_id)
    await state.on_events_changed({event_id})
    if event is None:
        raise NotFound("There is no event with this id.")
    return event


async def replace_code(state: AppState, event_id: int) -> Event:
    """A new join code: the old one stops admitting anyone at once, and then answers as an
    unknown code does; members stay members. The expiry belonged to the old code, so the
    new one has none."""
    async with state.db.sessions() as session:
        code = await _unused_code(session)
    return await change_settings(state, event_id, {"code": code, "code_expires_at": None})


def joining_refusal(event: Event) -> Forbidden | None:
    """Why the event's code admits no newcomer now, or None if it does; members are in
    already, and this does not concern them."""
    if event.joining == Joining.closed:
        return JoiningClosed()
    if event.code_expires_at is not None and event.code_expires_at <= utcnow():
        return CodeExpired()
    return None


async def events_of(session: AsyncSession, user_id: int) -> list[Event]:
    """The events a person organises or joined, newest first."""
    rows = await session.scalars(
        select(Event).where(Event.id.in_(my_events(user_id))).order_by(Event.id.desc())
    )
    return list(rows)


async def event_by_code(session: AsyncSession, raw_code: str) -> Event:
    event = await session.scalar(select(Event).where(Event.code == normalise_code(raw_code)))
    if event is None:
        raise NotFound("No event has this code. Check the code on the poster or QR link.")
    return event


async def join_event(
    state: AppState, principal: Principal, raw_code: str
) -> tuple[Event, Job | None]:
    """Make the caller a member (the organiser already is one); matching starts at once.

    A closed event or an expired code admits no newcomer; a member joining again is let
    through whatever the settings, since they are in already.
    Returns the event and the job matching the caller's selfie with its photos, if one runs.
    """
    job = None
    async with state.db.transaction() as session:
        event = await event_by_code(session, raw_code)
        member = await session.get(EventMember, (event.id, principal.id))
        if member is None and event.organiser_id != principal.id:
            refusal = joining_refusal(event)
            if refusal is not None:
                raise refusal
            session.add(EventMember(event_id=event.id, user_id=principal.id))
            await session.flush()
            if principal.user.selfie_updated_at is not None:
                job = await jobs.enqueue_member_match(
                    session, event_id=event.id, user_id=principal.id
                )
        elif member is not None:
            job = await latest_member_job(session, event_id=event.id, user_id=principal.id)
    if state.pipeline is not None:
        state.pipeline.notify()
    return event, job


async def latest_member_job(session: AsyncSession, *, event_id: int, user_id: int) -> Job | None:
    """The newest job matching this member's selfie with the event's photos."""
    job: Job | None = await session.scalar(
        select(Job)
        .where(Job.kind == JobKind.match_member, Job.event_id == event_id, Job.user_id == user_id)
        .order_by(Job.id.desc())
        .limit(1)
    )
    return job


async def counts(session: AsyncSession, event_id: int) -> dict[str, int]:
    photos = await session.scalar(select(func.count()).where(Photo.event_id == event_id))
    members = await session.scalar(select(func.count()).where(EventMember.event_id == event_id))
    return {"photos": photos or 0, "members": members or 0}


async def progress(session: AsyncSession, event_id: int) -> dict[str, Any]:
    """What is done and what is left of the event's work.

    `queued` and `running` count every unfinished job of the event, its photos' and its
    members' matching alike, so that a script polling until both are 0 then sees every
    member's photos complete. `done` and `failed` count photo jobs, as they always did;
    `matching` breaks the member-matching jobs down by status.
    """
    counted = await session.execute(
        select(Job.kind, Job.status, func.count())
        .where(Job.event_id == event_id)
        .group_by(Job.kind, Job.status)
    )
    by_kind: dict[JobKind, dict[JobStatus, int]] = {kind: {} for kind in JobKind}
    for kind, status, count in counted.all():
        by_kind[kind][status] = count
    photo_jobs, member_jobs = by_kind[JobKind.process_photo], by_kind[JobKind.match_member]
    photos = await session.scalar(select(func.count()).where(Photo.event_id == event_id))
    faces = await session.scalar(select(func.count()).where(Face.event_id == event_id))
    matches = await session.scalar(select(func.count()).where(FaceMatch.event_id == event_id))
    return {
        "photos": photos or 0,
        "queued": sum(statuses.get(JobStatus.queued, 0) for statuses in by_kind.values()),
        "running": sum(statuses.get(JobStatus.running, 0) for statuses in by_kind.values()),
        "done": photo_jobs.get(JobStatus.done, 0),
        "failed": photo_jobs.get(JobStatus.failed, 0),
        "faces": faces or 0,
        "matches": matches or 0,
        "matching": {status.value: member_jobs.get(status, 0) for status in JobStatus},
    }


async def delete_event(state: AppState, event_id: int) -> None:
    """The event with its photos, faces and matches; its cloud faces go first."""

    async def forget(session: AsyncSession) -> None:
        await state.engine.forget_events(session, [event_id])

    await erase(
        state,
        forget=forget,
        rows=delete(Event).where(Event.id == event_id),
        photos=select(Photo.id).where(Photo.event_id == event_id),
        matched_users=select(FaceMatch.user_id).where(FaceMatch.event_id == event_id),
        events={event_id},
    )


async def my_matching(session: AsyncSession, user_id: int) -> list[dict[str, Any]]:
    """For each event a person joined: is their selfie still being matched with its photos,
    and are its photos still being processed? My photos of an event are complete when both
    `matching` and `photos_pending` say so."""
    joined = (
        await session.execute(
            select(Event.id, Event.name)
            .join(EventMember, EventMember.event_id == Event.id)
            .where(EventMember.user_id == user_id)
            .order_by(Event.id)
        )
    ).all()
    newest = (
        select(func.max(Job.id))
        .where(Job.kind == JobKind.match_member, Job.user_id == user_id)
        .group_by(Job.event_id)
    )
    latest = {
        job.event_id: job for job in await session.scalars(select(Job).where(Job.id.in_(newest)))
    }
    unfinished = dict(
        (
            await session.execute(
                select(Job.event_id, func.count())
                .where(
                    Job.kind == JobKind.process_photo,
                    Job.event_id.in_([row.id for row in joined]),
                    Job.status.in_([JobStatus.queued, JobStatus.running]),
                )
                .group_by(Job.event_id)
            )
        ).all()
    )
    return [
        {
            "event_id": row.id,
            "event_name": row.name,
            "matching": latest[row.id].status.value if row.id in latest else "none",
            "job": job_link(latest[row.id]) if row.id in latest else None,
            "photos_pending": unfinished.get(row.id, 0),
        }
        for row in joined
    ]
