"""The durable job queue: rows in the jobs table, written in the caller's transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Job, JobKind

# Lower runs first: a newcomer's matches go ahead of a mass upload's photos.
PRIORITY = {JobKind.match_member: 0, JobKind.purge_expired: 5, JobKind.process_photo: 10}


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
