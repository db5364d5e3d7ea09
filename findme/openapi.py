"""OpenAPI 3 description generated from the app's own routes, so it cannot drift."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Route

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code"},
        "detail": {"type": "string", "description": "a sentence for people"},
    },
}
_PATH_PARAM = re.compile(r"{([a-z_]+)(?::[a-z]+)?}")
_TYPES = {"string": "string", "binary[]": "array", "YYYY-MM-DD": "string"}


def api_operations(routes: list[BaseRoute]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, metadata) for every described API route."""
    found = []
    for route in routes:
        if not isinstance(route, Route):
            continue
        meta = getattr(route.endpoint, "__openapi__", None)
        if meta is None:
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
        "info": {"title": "FindMe", "version": version},
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "findme_session"},
            },
        },
        "paths": paths,
    }


def _operation(method: str, path: str, meta: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}
        for name in _PATH_PARAM.findall(path)
    ]
    parameters += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in meta["query"].items()
    ]
    operation: dict[str, Any] = {
        "summary": meta["summary"],
        "operationId": method + "_" + re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_"),
        "description": f"Who may call it: {meta['auth']}.",
        "parameters": parameters,
        "responses": {
            str(status): _response(status, text, meta["content_type"])
            for status, text in meta["responses"].items()
        }
        | {
            "401": _response(401, "not signed in", "application/json"),
            "429": _response(429, "rate limited; see Retry-After", "application/json"),
        },
    }
    if meta["auth"] != "anyone":
        operation["security"] = [{"bearer": []}, {"session": []}]
    else:
        operation["responses"].pop("401")
    if meta["body"] is not None:
        operation["requestBody"] = _request_body(meta["body"], meta["content_type"])
    return operation


def _request_body(fields: dict[str, str], content_type: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required = []
    for name, kind in fields.items():
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        if kind == "binary[]":
            properties[name] = {"type": "array", "items": {"type": "string", "format": "binary"}}
        elif kind == "binary":
            properties[name] = {"type": "string", "format": "binary"}
        else:
            properties[name] = {"type": _TYPES.get(kind, "string"), "description": kind}
        if not optional:
            required.append(name)
    media = content_type if content_type.startswith("multipart/") else "application/json"
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {media: {"schema": schema}}}


def _response(status: int, text: str, content_type: str) -> dict[str, Any]:
    if status == 204 or status == 304:
        return {"description": text}
    if status >= 400:
        return {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    media = content_type if not content_type.startswith("multipart/") else "application/json"
    return {"description": text, "content": {media: {"schema": {"description": text}}}}
