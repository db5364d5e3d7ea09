"""Health, readiness and the OpenAPI description."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select, text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme import __version__
from findme.api_schemas import TEXT, Reply, ref
from findme.db import Face, FaceMatch, Role
from findme.domain.queue import queue_figures
from findme.errors import NotReady
from findme.metrics import Metrics
from findme.openapi import openapi_document
from findme.routes.common import api, app_state, json_response, require_user


@api(
    "Liveness: the process answers",
    auth="anyone",
    responses={200: Reply("alive", ref("Health"))},
)
async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


@api(
    "Readiness: the database answers and the workers run",
    auth="anyone",
    responses={200: Reply("ready", ref("Health")), 503: "not ready"},
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
    # Which engine and face detector run: a fallback to a weaker detector is never silent.
    return json_response({"status": "ready", **state.engine.describe()})


@api(
    "Prometheus metrics",
    auth="admin (session or API token), or the scrape token as a bearer token",
    responses={
        200: Reply("the Prometheus text format", TEXT, media_type="text/plain"),
        403: "not an admin",
    },
)
async def metrics(request: Request) -> Response:
    # No exemption by address: behind a reverse proxy every request comes from the proxy's
    # address, and X-Forwarded-For, X-Real-IP and Forwarded are whatever the client wrote.
    state = app_state(request)
    collected: Metrics = request.state.metrics
    authorization = request.headers.get("authorization", "")
    if not scrape_token_matches(authorization, collected.scrape_token):
        await require_user(request, Role.admin)
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


def scrape_token_matches(authorization: str, scrape_token: str | None) -> bool:
    """Whether an Authorization header carries the scrape token (compared in constant time)."""
    if not scrape_token:
        return False
    scheme, _, sent = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        sent.strip().encode(), scrape_token.encode()
    )


@api(
    "This description",
    auth="anyone",
    responses={200: Reply("OpenAPI 3.1", {"type": "object"})},
)
async def openapi(request: Request) -> Response:
    return json_response(openapi_document(request.app.routes, version=__version__))


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
