"""What organisers and admins oversee: each photo's processing and why it failed, retries of
failed jobs, job timings from the jobs table, and every event and account (for admins)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from findme import jobs
from findme.db import Event, EventMember, Face, Job, JobKind, JobStatus, Photo, PhotoStatus, User
from findme.domain.photos import PHOTO_COLUMNS
from findme.domain.views import event_json, iso, photo_json, user_json

# Timings are read from this many recent jobs of each kind: enough for a stable p95.
TIMED_JOBS = 500


async def photo_counts(session: AsyncSession, event_id: int) -> dict[str, int]:
    """The event's photos by status, and in all: what the organiser's page sums up."""
    rows = await session.execute(
        select(Photo.status, func.count()).where(Photo.event_id == event_id).group_by(Photo.status)
    )
    counts = {status.value: 0 for status in PhotoStatus} | {
        status.value: count for status, count in rows.all()
    }
    return {"photos": sum(counts.values()), **counts}


async def event_photos(
    session: AsyncSession,
    *,
    event_id: int,
    before: int | None,
    limit: int,
    status: PhotoStatus | None = None,
) -> list[dict[str, Any]]:
    """The event's photos, newest first, each with its faces and its latest job: the reason
    a failed photo failed is that job's last error."""
    faces = select(func.count()).where(Face.photo_id == Photo.id).scalar_subquery()
    tried = aliased(Job)
    latest_job = (
        select(tried.id)
        .where(tried.photo_id == Photo.id, tried.kind == JobKind.process_photo)
        .order_by(tried.id.desc())
        .limit(1)
        .correlate(Photo)
        .scalar_subquery()
    )
    query = (
        select(
            *PHOTO_COLUMNS,
            faces.label("faces"),
            Job.id.label("job_id"),
            Job.status.label("job_status"),
            Job.attempts,
            Job.max_attempts,
            Job.error,
        )
        .outerjoin(Job, Job.id == latest_job)
        .where(Photo.event_id == event_id)
    )
    if before is not None:
        query = query.where(Photo.id < before)
    if status is not None:
        query = query.where(Photo.status == status)
    rows = (await session.execute(query.order_by(Photo.id.desc()).limit(limit))).all()
    return [
        photo_json(row)
        | {
            "faces": row.faces,
            "job": None
            if row.job_id is None
            else {
                "id": row.job_id,
                "status": row.job_status.value,
                "attempts": row.attempts,
                "max_attempts": row.max_attempts,
                "error": row.error,
            },
        }
        for row in rows
    ]


async def retry_event_failures(session: AsyncSession, event_id: int) -> int:
    """Queue the event's failed photo jobs again, with fresh attempts; how many."""
    return await _retry(
        session,
        (
            Job.event_id == event_id,
            Job.kind == JobKind.process_photo,
            Job.status == JobStatus.failed,
        ),
    )


async def retry_all_failures(session: AsyncSession) -> int:
    """Queue every failed job again, with fresh attempts; how many."""
    return await _retry(session, (Job.status == JobStatus.failed,))


async def retry_job(session: AsyncSession, job_id: int) -> bool:
    """Queue one failed job again; False if it has not failed."""
    return bool(await _retry(session, (Job.id == job_id, Job.status == JobStatus.failed)))


async def _retry(session: AsyncSession, where: Sequence[ColumnElement[bool]]) -> int:
    found = (await session.execute(select(Job.id, Job.photo_id).where(*where))).all()
    retried = [row for row in found if await jobs.retry(session, row.id)]
    photo_ids = [row.photo_id for row in retried if row.photo_id is not None]
    if photo_ids:
        # The photo says "queued" again rather than "failed" while its job waits its turn.
        await session.execute(
            update(Photo)
            .where(Photo.id.in_(photo_ids), Photo.status == PhotoStatus.failed)
            .values(status=PhotoStatus.queued)
        )
    return len(retried)


async def jobs_with_names(
    session: AsyncSession, *, status: JobStatus, limit: int
) -> list[tuple[Job, dict[str, Any]]]:
    """Jobs by status, newest first, with the names a person recognises: the photo's file,
    the event and the attendee."""
    rows = await session.execute(
        select(Job, Photo.filename, Event.name.label("event_name"), User.name.label("user_name"))
        .outerjoin(Photo, Photo.id == Job.photo_id)
        .outerjoin(Event, Event.id == Job.event_id)
        .outerjoin(User, User.id == Job.user_id)
        .where(Job.status == status)
        .order_by(Job.id.desc())
        .limit(limit)
    )
    return [
        (
            row.Job,
            {
                "filename": row.filename,
                "event_name": row.event_name,
                "user_name": row.user_name,
            },
        )
        for row in rows.all()
    ]


async def job_timings(session: AsyncSession) -> dict[str, dict[str, Any]]:
    """Each kind's durations (from claim to finish) over its latest done jobs, from the jobs
    table: they survive a restart and cover every instance."""
    summary: dict[str, dict[str, Any]] = {}
    for kind in JobKind:
        rows = await session.execute(
            select(Job.started_at, Job.finished_at)
            .where(
                Job.kind == kind,
                Job.status == JobStatus.done,
                Job.started_at.is_not(None),
                Job.finished_at.is_not(None),
            )
            .order_by(Job.finished_at.desc())
            .limit(TIMED_JOBS)
        )
        seconds = sorted(
            max(0.0, (finished - started).total_seconds())
            for started, finished in rows.all()
            if started is not None and finished is not None
        )
        summary[kind.value] = {
            "count": len(seconds),
            "avg_s": round(statistics.fmean(seconds), 3) if seconds else None,
            "p50_s": round(seconds[len(seconds) // 2], 3) if seconds else None,
            "p95_s": round(seconds[int(len(seconds) * 0.95)], 3) if seconds else None,
        }
    return summary


async def all_events(
    session: AsyncSession, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Every event, newest first, with its organiser and its counts (an admin's list)."""
    photos = select(func.count()).where(Photo.event_id == Event.id).scalar_subquery()
    members = select(func.count()).where(EventMember.event_id == Event.id).scalar_subquery()
    query = select(
        Event,
        User.name.label("organiser_name"),
        User.email.label("organiser_email"),
        photos.label("photos"),
        members.label("members"),
    ).join(User, User.id == Event.organiser_id)
    if before is not None:
        query = query.where(Event.id < before)
    rows = await session.execute(query.order_by(Event.id.desc()).limit(limit))
    return [
        event_json(row.Event, role="admin")
        | {
            "organiser": {"name": row.organiser_name, "email": row.organiser_email},
            "counts": {"photos": row.photos, "members": row.members},
        }
        for row in rows.all()
    ]


async def all_users(
    session: AsyncSession, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Every account, newest first, with what it organises and joined (an admin's list)."""
    organised = select(func.count()).where(Event.organiser_id == User.id).scalar_subquery()
    joined = select(func.count()).where(EventMember.user_id == User.id).scalar_subquery()
    query = select(User, organised.label("organised"), joined.label("joined"))
    if before is not None:
        query = query.where(User.id < before)
    rows = await session.execute(query.order_by(User.id.desc()).limit(limit))
    return [
        user_json(row.User)
        | {
            "has_selfie": row.User.selfie_updated_at is not None,
            "selfie_updated_at": iso(row.User.selfie_updated_at),
            "events_organised": row.organised,
            "events_joined": row.joined,
        }
        for row in rows.all()
    ]
