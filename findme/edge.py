"""Limits applied where requests come in, before the app: header size and slow bodies."""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from findme.errors import FindMeError


class BodyTooSlow(FindMeError):
    """The request body arrived too slowly. Check the connection and send it again."""

    status_code = 408
    code = "request_timeout"


class EdgeLimits:
    """ASGI middleware: bounded request line and headers, and a deadline for the body.

    The HTTP server bounds what it buffers of an incomplete request; a complete one that
    arrived in a single read may still be large, so the size is checked again here (431).

    The body must be complete `body_timeout_s` after the request started, plus one second for
    every `body_min_bytes_s` bytes received so far (Apache's mod_reqtimeout rule): a large
    upload over a slow but steady link goes through, while a client sending a byte a second is
    cut off after about `body_timeout_s`, however long it keeps at it (408). Once the body is
    complete, receiving (waiting for a disconnect, as live streams do) is not bounded.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        body_timeout_s: float,
        body_min_bytes_s: int,
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s
        self.body_min_bytes_s = body_min_bytes_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _header_bytes(scope) > self.max_header_bytes:
            detail = (
                f"The request line and headers are too large: at most {self.max_header_bytes} "
                "bytes. Clear this site's cookies, or shorten the address."
            )
            response = JSONResponse(
                {"error": "headers_too_large", "detail": detail},
                status_code=431,
                headers={"connection": "close"},
            )
            await response(scope, receive, send)
            return
        started = asyncio.get_running_loop().time()
        received = 0
        complete = False
        timed_out = False

        async def bounded_receive() -> Message:
            nonlocal received, complete, timed_out
            if complete:
                return await receive()
            deadline = started + self.body_timeout_s + received / self.body_min_bytes_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise BodyTooSlow() from None
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def send_closing(message: Message) -> None:
            # The rest of the body is never read: the connection cannot carry another request.
            if timed_out and message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, bounded_receive, send_closing)


def _header_bytes(scope: Scope) -> int:
    """About what the request line and headers took on the wire."""
    line = len(scope["method"]) + len(scope.get("raw_path") or scope["path"].encode())
    line += len(scope.get("query_string", b"")) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])
