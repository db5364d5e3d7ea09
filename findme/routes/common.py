"""What every route needs: the app's state, the caller, JSON bodies, and API metadata."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from findme.auth import Principal, check_csrf
from findme.db import Role
from findme.errors import BadRequest, NotSignedIn
from findme.services import AppState

MAX_JSON_BYTES = 64 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


def app_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.state.findme
    return state


async def current_principal(request: Request) -> Principal | None:
    """The signed-in caller, if any; cookie-authenticated changes must pass the CSRF check."""
    if "principal" not in request.scope.setdefault("state", {}):
        state = app_state(request)
        principal = await state.auth.identify(request)
        check_csrf(request, principal)
        if principal is not None and request.method == "GET":
            await state.limits.hit("api_read", str(principal.id))
        request.state.principal = principal
    found: Principal | None = request.state.principal
    return found


async def require_user(request: Request, *roles: Role) -> Principal:
    principal = await current_principal(request)
    if principal is None:
        raise NotSignedIn()
    if roles:
        principal.require_role(*roles)
    return principal


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise BadRequest("The JSON body is too large.")
    if not body:
        raise BadRequest("Send a JSON object in the request body.")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest("Send a JSON object in the request body.")
    return value


def text_field(
    body: dict[str, Any], name: str, *, max_chars: int, min_chars: int = 1, required: bool = True
) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value.strip()) < min_chars:
        if min_chars > 1:
            raise BadRequest(f"'{name}' must be at least {min_chars} characters.")
        raise BadRequest(f"'{name}' is required and must be text.")
    if len(value) > max_chars:
        raise BadRequest(f"'{name}' must be at most {max_chars} characters.")
    if any(ord(ch) < 32 and ch not in "\t" for ch in value):
        raise BadRequest(f"'{name}' must not contain control characters.")
    return value.strip()


def int_param(
    raw: str | None, name: str, *, default: int | None = None, maximum: int = 2**62
) -> int:
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"'{name}' is required.")
        return default
    if not raw.isdigit() or int(raw) > maximum:
        raise BadRequest(f"'{name}' must be a whole number from 0 to {maximum}.")
    return int(raw)


def path_id(request: Request, name: str) -> int:
    return int_param(str(request.path_params[name]), name)


def iso(value: dt.datetime | dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def json_bytes(content: Any) -> bytes:
    return bytes(JSONResponse(content).body)


def json_response(content: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status_code)


def api(
    summary: str,
    *,
    auth: str = "signed in",
    body: dict[str, Any] | None = None,
    query: dict[str, str] | None = None,
    responses: dict[int, str] | None = None,
    content_type: str = "application/json",
) -> Callable[[Endpoint], Endpoint]:
    """Describe an API endpoint for /openapi.json, next to the code it describes."""

    def attach(endpoint: Endpoint) -> Endpoint:
        endpoint.__openapi__ = {  # type: ignore[attr-defined]
            "summary": summary,
            "auth": auth,
            "body": body,
            "query": query or {},
            "responses": responses or {200: "OK"},
            "content_type": content_type,
        }
        return endpoint

    return attach
