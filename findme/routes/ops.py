"""Health, readiness and the OpenAPI description."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select, text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme import __version__
from findme.db import Face, FaceMatch, Role
from findme.errors import NotReady
from findme.metrics import Metrics
from findme.openapi import openapi_document
from findme.routes.admin import queue_figures
from findme.routes.common import api, app_state, json_response, require_user

LOOPBACK = frozenset({"127.0.0.1", "::1"})


@api("Liveness: the process answers", auth="anyone")
async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


@api(
    "Readiness: the database answers and the workers run",
    auth="anyone",
    responses={200: "ready", 503: "not ready"},
)
async def readyz(request: Request) -> Response:
    state = app_state(request)
    try:
        async with state.db.sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        raise NotReady("The database does not answer.") from None
    if state.pipeline is not None and not state.pipeline.running:
        raise NotReady("The photo workers are not running.")
    return json_response({"status": "ready"})


@api(
    "Prometheus metrics",
    auth="admin, or any caller on this machine",
    responses={200: "Prometheus text format", 403: "not allowed"},
    content_type="text/plain",
)
async def metrics(request: Request) -> Response:
    state = app_state(request)
    local = request.client is not None and request.client.host in LOOPBACK
    if not local:
        await require_user(request, Role.admin)
    collected: Metrics = request.state.metrics
    async with state.db.sessions() as session:
        figures = await queue_figures(session)
        faces = await session.scalar(select(func.count()).select_from(Face))
        matches = await session.scalar(select(func.count()).select_from(FaceMatch))
    collected.scraped = {
        "queue_depth": figures["current_queue_size"],
        "jobs_running": figures["running"],
        "jobs_failed": figures["total_failed"],
        "jobs_processed": figures["total_processed"],
        "faces_stored": faces or 0,
        "matches_stored": matches or 0,
    }
    return Response(collected.render(), media_type=CONTENT_TYPE_LATEST)


@api("This description", auth="anyone")
async def openapi(request: Request) -> Response:
    return json_response(openapi_document(request.app.routes, version=__version__))


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
