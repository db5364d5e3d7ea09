"""The application factory: wiring, lifespan and error handling."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from findme.errors import FindMeError
from findme.routes import accounts, admin, events, ops, photos, privacy
from findme.services import open_services
from findme.settings import Settings

logger = logging.getLogger(__name__)

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

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_services(settings, run_workers=settings.run_workers) as state:
            logger.info("FindMe ready", extra={"action": "startup"})
            yield {"findme": state}

    routes: list[BaseRoute] = [
        *accounts.routes,
        *privacy.routes,
        *events.routes,
        *photos.routes,
        *admin.routes,
        *ops.routes,
    ]
    return Starlette(
        debug=settings.debug,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            FindMeError: _findme_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )


def error_response(code: str, detail: str, status_code: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status_code)


async def _findme_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FindMeError)
    headers = (
        {"Retry-After": str(exc.extra["retry_after_s"])} if "retry_after_s" in exc.extra else None
    )
    response = error_response(exc.code, exc.detail, exc.status_code)
    if headers:
        response.headers.update(headers)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, detail = HTTP_CODES.get(exc.status_code, ("error", str(exc.detail)))
    return error_response(code, detail, exc.status_code)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"action": "error", "path": request.url.path})
    return error_response(
        "internal_error",
        "Something went wrong on our side. Try again; if it keeps failing, tell the organiser.",
        500,
    )
