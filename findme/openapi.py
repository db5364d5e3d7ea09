"""OpenAPI 3.1 description generated from the app's own routes, so it cannot drift.

Each endpoint's `@api(...)` gives its summary, body, query parameters, answers and the errors
it raises itself; the errors that follow from its kind (signed in, ids in the path, a JSON or
multipart body, a change) are added here, once, from the same rules the shared route helpers
apply.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Route

from findme.api_schemas import COMPONENTS, ID, Operation, Param, Reply, Schema, ref
from findme.auth import SAFE_METHODS, SESSION_COOKIE

_ABOUT = (
    "Every error is an Error object, {error, detail}; each operation lists the ones it gives. "
    "Besides those, any request may be answered 405 (with Allow) for another method, 408 when "
    "its body arrives too slowly, 431 when its headers are too large, and 503 when the "
    "photo storage or face recognition does not answer."
)
_PATH_PARAM = re.compile(r"{([a-z_]+)(?::[a-z]+)?}")
_ERROR = ref("Error")
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def api_operations(routes: list[BaseRoute]) -> list[tuple[str, str, Operation]]:
    """(method, path, metadata) for every described API route."""
    found = []
    for route in routes:
        if not isinstance(route, Route):
            continue
        meta = getattr(route.endpoint, "__openapi__", None)
        if not isinstance(meta, Operation):
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found.append((method.lower(), _PATH_PARAM.sub(r"{\1}", route.path), meta))
    return found


def openapi_document(routes: list[BaseRoute], *, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, meta in api_operations(routes):
        paths.setdefault(path, {})[method] = _operation(method, path, meta)
    return {
        "openapi": "3.1.0",
        "info": {"title": "FindMe", "version": version, "description": _ABOUT},
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
        "paths": paths,
    }


def _operation(method: str, path: str, meta: Operation) -> dict[str, Any]:
    ids = _PATH_PARAM.findall(path)
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": "an id (ids are 32-bit; a larger one names nothing: 404)",
            "schema": ID,
        }
        for name in ids
    ]
    parameters += [_parameter(name, param) for name, param in meta.query.items()]
    operation: dict[str, Any] = {
        "summary": meta.summary,
        "operationId": method + "_" + re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_"),
        "description": f"Who may call it: {meta.auth}.",
        "parameters": parameters,
        "responses": _responses(method, path, meta, ids=ids),
    }
    if meta.auth != "anyone":
        operation["security"] = [{"bearer": []}, {"session": []}]
    if meta.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {meta.body.media_type: {"schema": meta.body.schema}},
        }
    return operation


def _parameter(name: str, param: Param) -> dict[str, Any]:
    return {
        "name": name,
        "in": param.where,
        "required": False,
        "description": param.description,
        "schema": param.schema,
    }


def _implied_errors(method: str, meta: Operation, *, ids: list[str]) -> dict[int, list[str]]:
    """The errors every endpoint of this kind can give, whatever it does itself."""
    implied: dict[int, list[str]] = {}

    def add(status: int, text: str) -> None:
        implied.setdefault(status, []).append(text)

    if ids:
        add(400, "an id in the address is not a whole number")
        add(404, "no such id (or one beyond 32 bits)")
    if meta.query:
        add(400, "a query parameter is not valid (the sentence gives its range)")
    if meta.body is not None:
        if meta.body.media_type == "application/json":
            add(400, "the body is not a JSON object (of at most 64 KiB), or a field is invalid")
            add(415, "the body is not sent as application/json")
        else:
            add(400, "the body is not valid multipart/form-data")
            add(415, f"the body is not sent as {meta.body.media_type}")
    if meta.auth != "anyone":
        add(401, "not signed in, or the token is unknown or revoked")
        if method.upper() in SAFE_METHODS:
            add(429, "too many reads; see Retry-After")
    if method.upper() not in SAFE_METHODS:
        add(403, "sent from another site, or by a session without its x-csrf-token")
    return implied


def _responses(method: str, path: str, meta: Operation, *, ids: list[str]) -> dict[str, Any]:
    texts: dict[int, list[str]] = {}
    answers: dict[int, Reply] = {}
    for status, answer in meta.responses.items():
        if isinstance(answer, Reply):
            answers[status] = answer
        else:
            texts.setdefault(status, []).append(answer)
    for status, implied in _implied_errors(method, meta, ids=ids).items():
        texts.setdefault(status, []).extend(implied)
    described: dict[int, dict[str, Any]] = {
        status: _reply(answer) for status, answer in answers.items()
    }
    for status, parts in texts.items():
        text = "; ".join(dict.fromkeys(parts))
        described[status] = (
            _error(text, page_too=not path.startswith("/api"), status=status)
            if status >= 400
            else {"description": text}
        )
    return {str(status): described[status] for status in sorted(described)}


def _reply(answer: Reply) -> dict[str, Any]:
    described: dict[str, Any] = {"description": answer.description}
    if answer.schema is not None:
        media_types = (
            answer.media_type if isinstance(answer.media_type, tuple) else (answer.media_type,)
        )
        described["content"] = {media: {"schema": answer.schema} for media in media_types}
    if answer.headers:
        described["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in answer.headers.items()
        }
    return described


def _error(text: str, *, page_too: bool, status: int) -> dict[str, Any]:
    content: dict[str, Schema] = {"application/json": {"schema": _ERROR}}
    if page_too:
        # Outside /api a browser (Accept: text/html) gets the error as a page.
        content["text/html"] = {"schema": {"type": "string"}}
    described: dict[str, Any] = {"description": text, "content": content}
    if status == 429:
        described["headers"] = _RETRY_AFTER
    return described
