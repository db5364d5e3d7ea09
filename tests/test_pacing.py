"""A storm of new connections is taken on a few per turn of the event loop, and loses none."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from findme.pacing import FIRST_REQUESTS_PER_TURN
from findme.settings import Settings
from tests.conftest import serve

STORM = 4 * FIRST_REQUESTS_PER_TURN + 7
BODY = b"x" * 200_000


async def echo_length(receive: Any, send: Any) -> None:
    """A test route: answers with the number of body bytes it received."""
    received, more = 0, True
    while more:
        message = await receive()
        received += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(received).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LoopTurns:
    """Counts the turns of the running event loop (a callback that schedules itself again)."""

    def __init__(self) -> None:
        self.turn = 0
        self._handle: asyncio.Handle | None = None

    def _tick(self) -> None:
        self.turn += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def __enter__(self) -> LoopTurns:
        self._tick()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._handle is not None
        self._handle.cancel()


@pytest.fixture
async def turns() -> AsyncIterator[LoopTurns]:
    with LoopTurns() as counting:
        yield counting


async def test_a_storm_of_new_connections_is_served_a_few_per_turn_and_none_is_lost(
    settings: Settings, turns: LoopTurns
) -> None:
    started_in_turn: Counter[int] = Counter()

    def record_turns(app: Any) -> Any:
        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                started_in_turn[turns.turn] += 1
                if scope["path"] == "/echo":
                    await echo_length(receive, send)
                    return
            await app(scope, receive, send)

        return recorded

    async with serve(settings, wrap=record_turns) as url:
        address = urlsplit(url)
        connections = [
            await asyncio.open_connection(address.hostname, address.port) for _ in range(STORM)
        ]
        # Let the server take every connection on, then have all their requests arrive at once.
        await asyncio.sleep(0.2)
        # Half of them upload a body, sent after the headers and more than the server
        # buffers at once (so it stops reading it for a while, held back or not).
        for number, (_, writer) in enumerate(connections):
            if number % 2:
                writer.write(
                    f"POST /echo HTTP/1.1\r\nHost: findme\r\nConnection: close\r\n"
                    f"Content-Length: {len(BODY)}\r\n\r\n".encode()
                )
            else:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: findme\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(0.05)
        for _, writer in connections[1::2]:
            writer.write(BODY)
        answers = await asyncio.gather(*(reader.read() for reader, _ in connections))
        for _, writer in connections:
            writer.close()

    statuses = Counter(answer.split(b" ", 2)[1] for answer in answers)
    assert statuses == {b"200": STORM}, "every connection of the storm is answered"
    echoed = [answer.rsplit(b"\r\n\r\n", 1)[1] for answer in answers[1::2]]
    assert echoed == [str(len(BODY)).encode()] * len(echoed), "every upload arrives whole"
    assert sum(started_in_turn.values()) == STORM
    assert max(started_in_turn.values()) <= FIRST_REQUESTS_PER_TURN, started_in_turn
    assert len(started_in_turn) >= STORM // FIRST_REQUESTS_PER_TURN, started_in_turn
