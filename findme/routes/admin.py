"""Job status for their owners, and the admin's view of the queue."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import (
    COUNT,
    TEXT,
    WHEN,
    Param,
    Reply,
    enum,
    integer,
    nullable,
    obj,
    ref,
)
from findme.db import Job, JobStatus, Role
from findme.domain import oversight
from findme.domain.access import job_for
from findme.domain.queue import queue_figures
from findme.domain.views import job_json
from findme.errors import BadRequest, Conflict, NotFound
from findme.routes.common import (
    api,
    app_state,
    int_param,
    json_response,
    path_id,
    require_user,
)


@api(
    "One job's status",
    auth="its owner, its event's organiser, or an admin",
    responses={200: Reply("the job", ref("Job")), 404: "no such job, or not mine"},
)
async def get_job(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        job = await job_for(session, principal, path_id(request, "job_id"))
        return json_response(job_json(job))


@api(
    "Queue and cache figures (v14 shape)",
    auth="admin",
    responses={200: Reply("the figures", ref("QueueStats")), 403: "not an admin"},
)
async def queue_stats(request: Request) -> Response:
    await require_user(request, Role.admin)
    state = app_state(request)
    async with state.db.sessions() as session:
        queue: dict[str, Any] = await queue_figures(session)
        # From the jobs table, not this process's memory: a restart does not empty them.
        timings = await oversight.job_timings(session)
    pipeline = state.pipeline
    queue |= {
        "workers": state.settings.workers if pipeline is not None else 0,
        "workers_active": pipeline.active if pipeline is not None else 0,
        "timings": timings,
        "outcomes_here": dict(pipeline.outcomes) if pipeline is not None else {},
    }
    live = {"open": state.stream_slots.open, "capacity": state.stream_slots.capacity}
    return json_response({"queue": queue, "cache": state.caches.stats(), "live_pages": live})


@api(
    "Empty the response caches",
    auth="admin",
    responses={200: Reply("the caches emptied", ref("CachesCleared")), 403: "not an admin"},
)
async def clear_cache(request: Request) -> Response:
    await require_user(request, Role.admin)
    caches = app_state(request).caches
    caches.clear()
    return json_response({"cleared": [cache.name for cache in caches.all()]})


@api(
    "Jobs by status, newest first (failed ones for the admin page)",
    auth="admin",
    query={
        "status": Param("which jobs", {**enum(JobStatus), "default": "failed"}),
        "limit": Param("at most this many", integer(minimum=1, maximum=200, default=50)),
    },
    responses={200: Reply("the jobs", ref("Jobs")), 403: "not an admin"},
)
async def list_jobs(request: Request) -> Response:
    await require_user(request, Role.admin)
    status = request.query_params.get("status", "failed")
    if status not in {item.value for item in JobStatus}:
        raise BadRequest("'status' must be queued, running, done or failed.")
    limit = int_param(
        request.query_params.get("limit"), "limit", default=50, minimum=1, maximum=200
    )
    async with app_state(request).db.sessions() as session:
        rows = await oversight.jobs_with_names(session, status=JobStatus(status), limit=limit)
        return json_response({"items": [job_json(job) | names for job, names in rows]})


@api(
    "One job with its error history",
    auth="admin",
    responses={
        200: Reply("the job", ref("JobDetail")),
        403: "not an admin",
        404: "no such job",
    },
)
async def admin_job(request: Request) -> Response:
    principal = await require_user(request, Role.admin)
    async with app_state(request).db.sessions() as session:
        job = await job_for(session, principal, path_id(request, "job_id"))
        return json_response(job_json(job, history=True))


@api(
    "Re-queue a failed job with fresh attempts",
    auth="admin",
    responses={
        200: Reply("the job, queued again", ref("Job")),
        403: "not an admin",
        404: "no such job",
        409: "the job has not failed",
    },
)
async def retry_job(request: Request) -> Response:
    await require_user(request, Role.admin)
    state = app_state(request)
    job_id = path_id(request, "job_id")
    async with state.db.transaction() as session:
        if await session.get(Job, job_id) is None:
            raise NotFound("There is no job with this id.")
        if not await oversight.retry_job(session, job_id):
            raise Conflict("Only a failed job can be retried.")
    if state.pipeline is not None:
        state.pipeline.notify()
    async with state.db.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return json_response(job_json(job))


@api(
    "Re-queue every failed job with fresh attempts",
    auth="admin",
    responses={
        200: Reply("how many were queued again", obj({"retried": COUNT})),
        403: "not an admin",
    },
)
async def retry_all_jobs(request: Request) -> Response:
    await require_user(request, Role.admin)
    state = app_state(request)
    async with state.db.transaction() as session:
        retried = await oversight.retry_all_failures(session)
    if retried and state.pipeline is not None:
        state.pipeline.notify()
    return json_response({"retried": retried})


_NEWEST_FIRST = {
    "cursor": Param("the next_cursor of the previous page", integer(minimum=0, default=0)),
    "limit": Param("at most this many", integer(minimum=1, maximum=200, default=50)),
}
_NEXT = {"type": ["string", "null"], "pattern": "^[0-9]+$"}


def _newest_first(request: Request) -> tuple[int | None, int]:
    """(before this id, limit) of a page of a newest-first list."""
    params = request.query_params
    cursor = int_param(params.get("cursor"), "cursor", default=0)
    limit = int_param(params.get("limit"), "limit", default=50, minimum=1, maximum=200)
    return cursor or None, limit


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if more else None}


@api(
    "Every event, newest first, with its organiser and counts",
    auth="admin",
    query=_NEWEST_FIRST,
    responses={
        200: Reply(
            "a page of events",
            obj(
                {
                    "items": {
                        "type": "array",
                        "items": {
                            "allOf": [
                                ref("Event"),
                                obj(
                                    {
                                        "organiser": obj({"name": TEXT, "email": TEXT}),
                                        "counts": obj({"photos": COUNT, "members": COUNT}),
                                    }
                                ),
                            ]
                        },
                    },
                    "next_cursor": _NEXT,
                }
            ),
        ),
        403: "not an admin",
    },
)
async def list_events(request: Request) -> Response:
    await require_user(request, Role.admin)
    before, limit = _newest_first(request)
    async with app_state(request).db.sessions() as session:
        items = await oversight.all_events(session, before=before, limit=limit + 1)
    return json_response(_page(items, limit))


@api(
    "Every account, newest first, with what it organises and joined",
    auth="admin",
    query=_NEWEST_FIRST,
    responses={
        200: Reply(
            "a page of accounts",
            obj(
                {
                    "items": {
                        "type": "array",
                        "items": {
                            "allOf": [
                                ref("User"),
                                obj(
                                    {
                                        "has_selfie": {"type": "boolean"},
                                        "selfie_updated_at": nullable(WHEN),
                                        "events_organised": COUNT,
                                        "events_joined": COUNT,
                                    }
                                ),
                            ]
                        },
                    },
                    "next_cursor": _NEXT,
                }
            ),
        ),
        403: "not an admin",
    },
)
async def list_users(request: Request) -> Response:
    await require_user(request, Role.admin)
    before, limit = _newest_first(request)
    async with app_state(request).db.sessions() as session:
        items = await oversight.all_users(session, before=before, limit=limit + 1)
    return json_response(_page(items, limit))


routes = [
    Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/admin/queue/stats", queue_stats, methods=["GET"]),
    Route("/api/admin/jobs", list_jobs, methods=["GET"]),
    Route("/api/admin/queue/jobs/{job_id}", admin_job, methods=["GET"]),
    Route("/api/admin/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/api/admin/jobs/retry-failed", retry_all_jobs, methods=["POST"]),
    Route("/api/admin/events", list_events, methods=["GET"]),
    Route("/api/admin/users", list_users, methods=["GET"]),
    Route("/api/admin/cache/clear", clear_cache, methods=["POST"]),
]
