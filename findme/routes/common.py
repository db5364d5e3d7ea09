"""What every route needs: the app's state, the caller, JSON bodies, and API metadata."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiofiles
import aiofiles.os
import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from findme.api_schemas import Body, Operation, Param, Reply
from findme.auth import Principal, check_csrf
from findme.db import Role
from findme.domain.accounts import consent_text
from findme.errors import BadRequest, NotFound, NotSignedIn, TooLarge, UnsupportedMedia
from findme.images import check_upload
from findme.services import AppState
from findme.uploads import receive_files

MAX_JSON_BYTES = 64 * 1024
# Our bodies are flat objects. The parser recurses once per level (a RecursionError near 1,000),
# so the depth is counted before it runs.
MAX_JSON_DEPTH = 20
# A string (possibly unterminated, so the scan never backtracks) or a bracket.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
# Every id column is a 32-bit integer: a larger id names no row, and the driver refuses it.
MAX_ID = 2**31 - 1
_ID_NAMES = {"token_id": "API token"}

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


def site_url(request: Request) -> str:
    """The site's address in links given out (emails, share links), without a trailing /."""
    base = app_state(request).settings.public_url or str(request.base_url)
    return base.rstrip("/")


def safe_next(raw: str | None, default: str = "/") -> str:
    """A same-site relative path to go back to after signing in; anything else is refused."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return default
    if any(ord(char) < 32 or ord(char) == 127 for char in raw):
        return default
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return default
    return raw


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 (415 for another media type) that says what is wrong.

    Only application/json is accepted: a cross-site form or a text/plain fetch needs no CORS
    preflight, so it must not be able to reach a JSON route. Text PostgreSQL cannot store (lone
    surrogates, NUL) is refused here, before any field reaches the database driver.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMedia("Send the body as JSON, with Content-Type: application/json.")
    body = await _read_body(request, max_bytes=MAX_JSON_BYTES)
    if not body:
        raise BadRequest("Send a JSON object in the request body.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8 JSON.") from None
    _check_depth(text)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest("Send a JSON object in the request body.")
    for key, item in value.items():
        for string in (key, *_strings(item)):
            _check_storable(string, key)
    return value


async def _read_body(request: Request, *, max_bytes: int) -> bytes:
    """The body, read no further than `max_bytes`: an oversize one is never held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest("The JSON body is too large.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadRequest("The JSON body is too large.")
    return bytes(body)


def _check_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for token in _JSON_TOKENS.findall(text):
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(
                    f"The JSON body is nested too deeply: at most {MAX_JSON_DEPTH} levels."
                )
        elif token in ("]", "}"):
            depth -= 1


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, keys included (the depth is already bounded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _check_storable(value: str, name: str) -> None:
    """Refuse text PostgreSQL cannot store: NUL, and lone surrogates (not encodable as UTF-8)."""
    if "\x00" not in value and _encodable(value):
        return
    # The field's name is echoed only if it is itself sound text (keys are checked too).
    label = (
        f"'{name}'" if len(name) <= 64 and "\x00" not in name and _encodable(name) else "A field"
    )
    if "\x00" in value:
        raise BadRequest(f"{label} must not contain control characters such as NUL.")
    raise BadRequest(f"{label} is not valid Unicode text (it holds a lone surrogate).")


def _encodable(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    _check_storable(value, name)
    if any(ord(ch) < 32 and ch not in "\t" for ch in value):
        raise BadRequest(f"'{name}' must not contain control characters.")
    return value.strip()


def int_param(
    raw: str | None,
    name: str,
    *,
    default: int | None = None,
    minimum: int = 0,
    maximum: int = MAX_ID,
) -> int:
    """A whole-number query parameter; anything else, or out of range, is a 400.

    Ids given as query parameters (event_id) follow the same rule as cursors and limits: a
    value no row can have is a malformed request, and the sentence gives the valid range.
    """
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"'{name}' is required.")
        return default
    value = _whole_number(raw)
    if value is None or not minimum <= value <= maximum:
        raise BadRequest(f"'{name}' must be a whole number from {minimum} to {maximum}.")
    return value


def path_id(request: Request, name: str) -> int:
    """The id in the address; one beyond 32 bits is a 404 like any unknown id."""
    raw = str(request.path_params[name])
    found = parse_id(raw)
    if found is not None:
        return found
    if _whole_number(raw) is None:
        raise BadRequest(f"'{name}' must be a whole number from 0 to {MAX_ID}.")
    thing = _ID_NAMES.get(name, name.removesuffix("_id").replace("_", " "))
    raise NotFound(f"There is no {thing} with this id.")


def parse_id(raw: str) -> int | None:
    """The id a text names, or None if no row can have it (not digits, or beyond 32 bits)."""
    value = _whole_number(raw)
    return value if value is not None and value <= MAX_ID else None


def _whole_number(raw: str) -> int | None:
    # str.isdigit() also admits '١٢' (which int() reads as 12) and '²' (which it refuses).
    if not raw.isascii() or not raw.isdigit():
        return None
    digits = raw.lstrip("0") or "0"
    # Past 19 digits it is out of any range here; int() of thousands of digits is slow, or fails.
    return int(digits) if len(digits) <= 19 else 10**19


def json_bytes(content: Any) -> bytes:
    """Compact JSON, as Starlette's JSONResponse writes it, at a tenth of its cost (orjson;
    measured in docs/BENCHMARKS.md, "Lists"). Non-string keys become strings, as json does."""
    return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def json_response(content: Any, status_code: int = 200) -> JSONResponse:
    return OrjsonResponse(content, status_code=status_code)


def api(
    summary: str,
    *,
    auth: str = "signed in",
    body: Body | None = None,
    query: Mapping[str, Param] | None = None,
    responses: Mapping[int, Reply | str],
) -> Callable[[Endpoint], Endpoint]:
    """Describe an API endpoint for /openapi.json, next to the code it describes.

    `responses` maps each status to a `Reply` (success: meaning, schema, media type) or, for
    errors and bodiless answers, a sentence; errors always carry the Error schema.
    """
    operation = Operation(
        summary=summary, auth=auth, body=body, query=query or {}, responses=responses
    )

    def attach(endpoint: Endpoint) -> Endpoint:
        endpoint.__openapi__ = operation  # type: ignore[attr-defined]
        return endpoint

    return attach


CONSENT_VALUES = frozenset({"true", "1", "yes", "on"})


class ConsentRequired(BadRequest):
    code = "consent_required"


async def received_selfie(
    request: Request, *, limit: tuple[str, str], fields: dict[str, str] | None = None
) -> bytes:
    """The selfie of a multipart request (field `file`), with consent (field `consent`).

    `limit` is the rate-limit rule and identifier the request counts against; the request's
    other short fields are collected into `fields`.
    """
    state = app_state(request)
    await state.limits.hit(*limit)
    settings = state.settings
    fields = {} if fields is None else fields
    received = []
    try:
        async for upload in receive_files(
            request,
            tmp_dir=settings.data_dir / "tmp",
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_upload_bytes + 64 * 1024,
            max_files=1,
            fields=fields,
        ):
            received.append(upload)
        if fields.get("consent", "").strip().lower() not in CONSENT_VALUES:
            raise ConsentRequired(
                "Agree to the processing of your selfie first (form field consent=true). "
                + consent_text(settings)
            )
        if not received:
            raise BadRequest("Send your selfie as a form field named file.")
        selfie = received[0]
        if selfie.too_large:
            raise TooLarge("The selfie is too large. Take a smaller photo and send it again.")
        await asyncio.to_thread(check_upload, selfie.path, max_pixels=settings.max_image_pixels)
        async with aiofiles.open(selfie.path, "rb") as source:
            return await source.read()
    finally:
        for upload in received:
            await aiofiles.os.remove(upload.path)
