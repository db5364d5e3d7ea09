"""The framework's limit: a bare Starlette route returning fixed JSON bytes under uvicorn.

BARE_BODY_FILE=/tmp/body.json uvicorn bench.bare:create_app --factory
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app() -> Starlette:
    body = Path(os.environ["BARE_BODY_FILE"]).read_bytes()

    async def same_bytes(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", same_bytes)])
