"""The durable job queue: rows in the jobs table are the source of truth.

Every change is a short transaction. A claim marks a job `running` under a lease that belongs
to one claim token; finishing, failing and renewing all name that token, so a worker whose
lease expired (and whose job someone else reclaimed) can no longer touch the job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Database, Job, JobKind, JobStatus, Photo, PhotoStatus, utcnow

# Lower runs first: a newcomer's matches go ahead of a mass upload's photos.
PRIORITY = {JobKind.match_member: 0, JobKind.process_photo: 10}
MAX_ERROR_HISTORY = 20


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: JobKind
    token: str
    attempts: int
    max_attempts: int
    photo_id: int | None
    event_id: int | None
    user_id: int | None


async def enqueue_photo(session: AsyncSession, *, photo_id: int, event_id: int) -> Job:
    return await _enqueue(
        session, Job(kind=JobKind.process_photo, photo_id=photo_id, event_id=event_id)
    )


async def enqueue_member_match(session: AsyncSession, *, event_id: int, user_id: int) -> Job:
    return await _enqueue(
        session, Job(kind=JobKind.match_member, event_id=event_id, user_id=user_id)
    )


async def _enqueue(session: AsyncSession, job: Job) -> Job:
    job.priority = PRIORITY[job.kind]
    session.add(job)
    await session.flush()
    return job


def _claimable(now: dt.datetime) -> Any:
    queued = and_(Job.status == JobStatus.queued, Job.run_after <= now)
    # A running job whose lease ran out belongs to a process that died: take it over.
    abandoned = and_(Job.status == JobStatus.running, Job.lease_expires_at < now)
    return or_(queued, abandoned)


async def claim(db: Database, *, token_prefix: str, limit: int, lease_s: float) -> list[ClaimedJob]:
    """Take up to `limit` due jobs, most urgent first, each under its own claim token."""
    claimed: list[ClaimedJob] = []
    async with db.transaction() as session:
        now = utcnow()
        candidates = (
            select(Job.id)
            .where(_claimable(now))
            .order_by(Job.priority, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        for job_id in list(await session.scalars(candidates)):
            token = f"{token_prefix}:{job_id}:{now.timestamp():.6f}"
            row = (
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(
                        status=JobStatus.running,
                        locked_by=token,
                        lease_expires_at=now + dt.timedelta(seconds=lease_s),
                        attempts=Job.attempts + 1,
                        started_at=now,
                    )
                    .returning(
                        Job.kind,
                        Job.attempts,
                        Job.max_attempts,
                        Job.photo_id,
                        Job.event_id,
                        Job.user_id,
                    )
                )
            ).one()
            claimed.append(ClaimedJob(job_id, row.kind, token, *row[1:]))
    return claimed


async def renew(db: Database, tokens: list[str], *, lease_s: float) -> None:
    """The heartbeat: push the leases of jobs still being worked on into the future."""
    if not tokens:
        return
    async with db.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.locked_by.in_(tokens), Job.status == JobStatus.running)
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_s))
        )


async def finish(db: Database, job: ClaimedJob) -> bool:
    """Mark done; False if the lease was lost (another worker owns the job now)."""
    async with db.transaction() as session:
        result = await session.execute(
            update(Job)
            .where(Job.id == job.id, Job.locked_by == job.token, Job.status == JobStatus.running)
            .values(status=JobStatus.done, finished_at=utcnow(), locked_by=None, error=None)
        )
        return bool(getattr(result, "rowcount", 0))


async def fail(
    db: Database, job: ClaimedJob, error: str, *, retry_base_s: float
) -> JobStatus | None:
    """Record a failure: retry later with exponential backoff, or stay failed at the limit."""
    async with db.transaction() as session:
        row = await session.get(Job, job.id, with_for_update=True)
        if row is None or row.locked_by != job.token or row.status != JobStatus.running:
            return None
        now = utcnow()
        row.error = error
        row.error_history = [
            *row.error_history[-(MAX_ERROR_HISTORY - 1) :],
            {"attempt": row.attempts, "at": now.isoformat(), "error": error},
        ]
        row.locked_by = None
        row.lease_expires_at = None
        if row.attempts >= row.max_attempts:
            row.status = JobStatus.failed
            row.finished_at = now
            if row.photo_id is not None:
                await session.execute(
                    update(Photo).where(Photo.id == row.photo_id).values(status=PhotoStatus.failed)
                )
        else:
            row.status = JobStatus.queued
            row.run_after = now + dt.timedelta(seconds=retry_base_s * 2 ** (row.attempts - 1))
        return row.status


async def release(db: Database, jobs: list[ClaimedJob]) -> None:
    """Give unfinished jobs back to the queue (shutdown); the interrupted try does not count."""
    if not jobs:
        return
    async with db.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.locked_by.in_([job.token for job in jobs]))
            .values(
                status=JobStatus.queued,
                locked_by=None,
                lease_expires_at=None,
                attempts=Job.attempts - 1,
                run_after=utcnow(),
            )
        )


async def retry(session: AsyncSession, job_id: int) -> bool:
    """An admin's retry of a failed job: a fresh set of attempts."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.failed)
        .values(
            status=JobStatus.queued, attempts=0, run_after=utcnow(), finished_at=None, error=None
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def pending_count(db: Database) -> int:
    """Jobs not finished yet: queued (due or waiting to retry) or running."""
    async with db.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(Job.status.in_([JobStatus.queued, JobStatus.running]))
        )
    return count or 0


async def next_due(db: Database) -> dt.datetime | None:
    async with db.sessions() as session:
        due: dt.datetime | None = await session.scalar(
            select(func.min(Job.run_after)).where(Job.status == JobStatus.queued)
        )
        lease: dt.datetime | None = await session.scalar(
            select(func.min(Job.lease_expires_at)).where(Job.status == JobStatus.running)
        )
    return min((moment for moment in (due, lease) if moment is not None), default=None)
