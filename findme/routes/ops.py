"""Health, readiness and the OpenAPI description."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme import __version__
from findme.errors import NotReady
from findme.openapi import openapi_document
from findme.routes.common import api, app_state, json_response


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


@api("This description", auth="anyone")
async def openapi(request: Request) -> Response:
    return json_response(openapi_document(request.app.routes, version=__version__))


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
