"""The durable job queue: rows in the jobs table are the source of truth.

Every change is a short transaction. A claim marks a job `running` under a lease that belongs
to one claim token; finishing, failing and renewing all name that token, so a worker whose
lease expired (and whose job someone else reclaimed) can no longer touch the job.

A claim token is `<holder>:<job id>:<claim time>`; the pipeline's holder names its host and
process (`pipeline.py`), so a process found dead can have its leases ended at once
(`end_leases`) rather than waited out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import (
    SESSION_JOB_MAX_ATTEMPTS,
    Database,
    Job,
    JobKind,
    JobStatus,
    Photo,
    PhotoStatus,
    utcnow,
)

# Lower runs first: a newcomer's matches go ahead of a mass upload's photos.
PRIORITY = {JobKind.match_member: 0, JobKind.process_photo: 10}
MAX_ERROR_HISTORY = 20
# The width of jobs.locked_by.
MAX_TOKEN_CHARS = 64


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
    job.max_attempts = _max_attempts(session)
    session.add(job)
    await session.flush()
    return job


def _max_attempts(session: AsyncSession) -> int:
    """The attempts a job gets, from the settings of the Database that opened `session`."""
    try:
        attempts: int = session.info[SESSION_JOB_MAX_ATTEMPTS]
    except KeyError:
        raise RuntimeError("Jobs are enqueued with a session of Database.sessions.") from None
    return attempts


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
        await _fail_exhausted(session, now)
        candidates = (
            select(Job.id)
            .where(_claimable(now))
            .order_by(Job.priority, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        for job_id in list(await session.scalars(candidates)):
            token = f"{token_prefix}:{job_id}:{base36(int(now.timestamp() * 1_000_000))}"
            if len(token) > MAX_TOKEN_CHARS:
                raise ValueError(f"The claim token {token!r} is too long for jobs.locked_by.")
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


async def _fail_exhausted(session: AsyncSession, now: dt.datetime) -> None:
    """An abandoned job that used its last attempt stays failed instead of being claimed again.

    Its worker died while holding it as often as it may be tried: if the job itself kills the
    process (memory, say), claiming it again would only crash the next one too.
    """
    abandoned = and_(
        Job.status == JobStatus.running,
        Job.lease_expires_at < now,
        Job.attempts >= Job.max_attempts,
    )
    photo_ids = await session.scalars(
        update(Job)
        .where(abandoned)
        .values(
            status=JobStatus.failed,
            finished_at=now,
            locked_by=None,
            lease_expires_at=None,
            error="Its worker stopped while running it, on every attempt.",
        )
        .returning(Job.photo_id)
    )
    failed_photos = [photo_id for photo_id in photo_ids if photo_id is not None]
    if failed_photos:
        await session.execute(
            update(Photo).where(Photo.id.in_(failed_photos)).values(status=PhotoStatus.failed)
        )


def base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


async def holders(db: Database, *, prefix: str) -> list[str]:
    """The claim tokens of running jobs whose holder's name starts with `prefix`."""
    async with db.sessions() as session:
        tokens = await session.scalars(
            select(Job.locked_by)
            .where(
                Job.status == JobStatus.running, Job.locked_by.startswith(prefix, autoescape=True)
            )
            .distinct()
        )
        return [token for token in tokens if token is not None]


async def end_leases(db: Database, tokens: list[str]) -> int:
    """End these claims' leases now (their process is gone): the jobs are claimable at once,
    through the same path as a lease that ran out, and the lost try counts."""
    if not tokens:
        return 0
    async with db.transaction() as session:
        result = await session.execute(
            update(Job)
            .where(Job.locked_by.in_(tokens), Job.status == JobStatus.running)
            .values(lease_expires_at=utcnow())
        )
    return int(getattr(result, "rowcount", 0) or 0)


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
    """An admin's retry of a failed job: a fresh set of attempts, as many as configured now."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.failed)
        .values(
            status=JobStatus.queued,
            attempts=0,
            max_attempts=_max_attempts(session),
            run_after=utcnow(),
            finished_at=None,
            error=None,
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
