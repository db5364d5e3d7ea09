"""The application factory: wiring, lifespan and error handling."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles

from findme.errors import Busy, FindMeError
from findme.metrics import AccessLog, Metrics
from findme.routes import (
    accounts,
    admin,
    downloads,
    events,
    images,
    joining,
    notifications,
    ops,
    pages,
    photos,
    privacy,
    shares,
    stream,
    suggestions,
    uploads,
)
from findme.services import open_services
from findme.settings import Settings

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# When a caller finding no free database connection should try again: 5-10 s.
BUSY_RETRY_S = 10

HTTP_CODES = {
    400: ("bad_request", "The request is not valid."),
    401: ("not_signed_in", "Sign in first."),
    403: ("forbidden", "You are not allowed to do this."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept this method."),
}


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; nothing is opened until its lifespan starts."""
    settings = settings or Settings.from_environ()
    metrics = Metrics(scrape_token=settings.metrics_token or None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_services(settings, run_workers=settings.run_workers) as state:
            metrics.watch_state(state)
            if state.pipeline is not None:
                state.pipeline.job_observers.append(metrics.observe_job)
            logger.info("FindMe ready", extra={"action": "startup"})
            yield {"findme": state, "metrics": metrics}

    # Starlette tries the routes in turn (~0.8 µs each): what pages and scripts poll comes
    # first. No path of these is matched by a route after them, so the order changes nothing
    # else.
    routes: list[BaseRoute] = [
        *photos.routes,
        *images.routes,
        *stream.routes,
        *ops.routes,
        *accounts.routes,
        *privacy.routes,
        *joining.routes,
        *events.routes,
        *uploads.routes,
        *suggestions.routes,
        *admin.routes,
        *downloads.routes,
        *shares.routes,
        *notifications.routes,
        *pages.routes,
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(
        debug=settings.debug,
        routes=routes,
        middleware=[Middleware(AccessLog, metrics=metrics)],
        lifespan=lifespan,
        exception_handlers={
            FindMeError: _findme_error,
            HTTPException: _http_error,
            sqlalchemy.exc.TimeoutError: _no_free_connection,
            Exception: _unexpected_error,
        },
    )


def error_response(code: str, detail: str, status_code: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status_code)


def _wants_page(request: Request, status_code: int = 0) -> bool:
    """A browser asking for a page (not the API) gets HTML errors; a 401 signs it in, even at
    an API address opened in the browser (a photo's link), and brings it back there."""
    html = "text/html" in request.headers.get("accept", "")
    if status_code == 401 and request.method == "GET":
        return html
    return html and not request.url.path.startswith("/api")


async def _findme_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FindMeError)
    if _wants_page(request, exc.status_code):
        response = await pages.error_page(request, status_code=exc.status_code, detail=exc.detail)
    else:
        response = error_response(exc.code, exc.detail, exc.status_code)
    if "retry_after_s" in exc.extra:
        response.headers["Retry-After"] = str(exc.extra["retry_after_s"])
    return response


async def _no_free_connection(request: Request, exc: Exception) -> Response:
    """No database connection came free in FINDME_DB_POOL_TIMEOUT_S (a reconnect storm, a
    crowd at once): a 503 that says when to come back, never a 500. Each caller gets its own
    delay, so a crowd does not return in step."""
    logger.warning(
        "no free database connection", extra={"action": "pool_exhausted", "path": request.url.path}
    )
    busy = Busy(retry_after_s=random.randint(BUSY_RETRY_S // 2, BUSY_RETRY_S))
    return await _findme_error(request, busy)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, detail = HTTP_CODES.get(exc.status_code, ("error", str(exc.detail)))
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request, fallback=headers.get("Allow", ""))
    if _wants_page(request):
        response = await pages.error_page(request, status_code=exc.status_code, detail=detail)
    else:
        response = error_response(code, detail, exc.status_code)
    response.headers.update(headers)
    return response


def _allowed_methods(request: Request, *, fallback: str) -> str:
    """Every method the address accepts: Starlette names only those of the first route that
    matched the path, and one address may have a route per method."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods)) if methods else fallback


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"action": "error", "path": request.url.path})
    detail = "Something went wrong on our side. Try again; if it keeps failing, tell the organiser."
    if _wants_page(request):
        return await pages.error_page(request, status_code=500, detail=detail)
    return error_response("internal_error", detail, 500)
