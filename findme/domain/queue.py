"""The job queue as people see it: its figures for admins and metrics."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Job, JobStatus


async def queue_figures(session: AsyncSession) -> dict[str, int]:
    counts = dict(
        (await session.execute(select(Job.status, func.count()).group_by(Job.status))).all()
    )
    return {
        "total_enqueued": sum(counts.values()),
        "total_processed": counts.get(JobStatus.done, 0),
        "total_failed": counts.get(JobStatus.failed, 0),
        "current_queue_size": counts.get(JobStatus.queued, 0),
        "running": counts.get(JobStatus.running, 0),
    }
