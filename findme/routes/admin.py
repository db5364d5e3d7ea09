"""Job status for their owners, and the admin's view of the queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme import jobs
from findme.auth import Principal
from findme.db import Event, Job, JobStatus, Role
from findme.errors import BadRequest, Conflict, Forbidden, NotFound
from findme.routes.common import (
    api,
    app_state,
    int_param,
    iso,
    json_response,
    path_id,
    require_user,
)


def job_json(job: Job, *, history: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind.value,
        "status": job.status.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error,
        "photo_id": job.photo_id,
        "event_id": job.event_id,
        "user_id": job.user_id,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "run_after": iso(job.run_after),
    }
    if history:
        body["error_history"] = job.error_history
        body["locked_by"] = job.locked_by
    return body


async def _job_for(session: AsyncSession, principal: Principal, job_id: int) -> Job:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound("There is no job with this id.")
    if principal.is_admin or job.user_id == principal.id:
        return job
    if job.event_id is not None:
        event = await session.get(Event, job.event_id)
        if event is not None and event.organiser_id == principal.id:
            return job
    raise Forbidden("This job is not yours.")


@api("One job's status", auth="its owner or an admin", responses={200: "{job}"})
async def get_job(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        job = await _job_for(session, principal, path_id(request, "job_id"))
        return json_response(job_json(job))


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


@api(
    "Queue and cache figures (v14 shape)",
    auth="admin",
    responses={200: '{"queue":{total_enqueued,...,timings},"cache":{...}}'},
)
async def queue_stats(request: Request) -> Response:
    await require_user(request, Role.admin)
    state = app_state(request)
    async with state.db.sessions() as session:
        queue: dict[str, Any] = await queue_figures(session)
    pipeline = state.pipeline
    queue |= {
        "workers": state.settings.workers if pipeline is not None else 0,
        "workers_active": pipeline.active if pipeline is not None else 0,
        "timings": pipeline.timing_stats() if pipeline is not None else {},
        "outcomes_here": dict(pipeline.outcomes) if pipeline is not None else {},
    }
    return json_response({"queue": queue, "cache": state.caches.stats()})


@api("Empty the response caches", auth="admin", responses={200: "{cleared:[cache names]}"})
async def clear_cache(request: Request) -> Response:
    await require_user(request, Role.admin)
    caches = app_state(request).caches
    caches.clear()
    return json_response({"cleared": [cache.name for cache in caches.all()]})


@api(
    "Jobs by status, newest first (failed ones for the admin page)",
    auth="admin",
    query={"status": "queued|running|done|failed", "limit": "1-200"},
    responses={200: '{"items":[job]}'},
)
async def list_jobs(request: Request) -> Response:
    await require_user(request, Role.admin)
    status = request.query_params.get("status", "failed")
    if status not in {item.value for item in JobStatus}:
        raise BadRequest("'status' must be queued, running, done or failed.")
    limit = int_param(request.query_params.get("limit"), "limit", default=50, maximum=200)
    async with app_state(request).db.sessions() as session:
        rows = await session.scalars(
            select(Job).where(Job.status == JobStatus(status)).order_by(Job.id.desc()).limit(limit)
        )
        return json_response({"items": [job_json(row) for row in rows]})


@api("One job with its error history", auth="admin", responses={200: "{job, error_history}"})
async def admin_job(request: Request) -> Response:
    principal = await require_user(request, Role.admin)
    async with app_state(request).db.sessions() as session:
        job = await _job_for(session, principal, path_id(request, "job_id"))
        return json_response(job_json(job, history=True))


@api(
    "Re-queue a failed job with fresh attempts",
    auth="admin",
    responses={200: "{job}", 404: "unknown job", 409: "the job has not failed"},
)
async def retry_job(request: Request) -> Response:
    await require_user(request, Role.admin)
    state = app_state(request)
    job_id = path_id(request, "job_id")
    async with state.db.transaction() as session:
        if await session.get(Job, job_id) is None:
            raise NotFound("There is no job with this id.")
        if not await jobs.retry(session, job_id):
            raise Conflict("Only a failed job can be retried.")
    if state.pipeline is not None:
        state.pipeline.notify()
    async with state.db.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return json_response(job_json(job))


routes = [
    Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/admin/queue/stats", queue_stats, methods=["GET"]),
    Route("/api/admin/jobs", list_jobs, methods=["GET"]),
    Route("/api/admin/queue/jobs/{job_id}", admin_job, methods=["GET"]),
    Route("/api/admin/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/api/admin/cache/clear", clear_cache, methods=["POST"]),
]
