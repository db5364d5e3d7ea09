"""The first requests of new connections are handled a few per turn of the event loop, so that
a reconnect storm cannot hold up the requests of connections already open.

After a restart thousands of pages reconnect within a second or two. The event loop serves
what is ready in turns, first come first served: one turn parsed some 1,700 requests and
started their streams, and a request on a connection already open (a health check, a member's
"my photos") waited for all of them, up to 0.8 s (docs/BENCHMARKS.md, "Third session of
2026-12-03"). Here a turn takes on at most FIRST_REQUESTS_PER_TURN new connections; the others
wait, in the order they came, their first bytes kept and their sockets no longer read
meanwhile. The work is the same, cut into short turns.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

from uvicorn.protocols.http.h11_impl import H11Protocol

# About 20 ms of parsing and set-up a turn (a stream's request costs ~0.3 ms up to its first
# database read), and still well over a thousand new connections a second.
FIRST_REQUESTS_PER_TURN = 64


class PacedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; a new connection's first bytes go through the loop's pacer."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._first_bytes = True

    def data_received(self, data: bytes) -> None:
        if self._first_bytes:
            self._first_bytes = False
            if not pacer_of_running_loop().admit(self, data):
                return
        super().data_received(data)

    def handle_held_back(self, data: bytes) -> None:
        """The pacer's turn for this connection: its first bytes, then reading again."""
        self.transport.resume_reading()
        # After resuming: parsing may pause reading again (flow control), and that must hold.
        super().data_received(data)


class ConnectionPacer:
    """Lets `per_turn` new connections start per turn of the event loop; holds back the rest."""

    def __init__(self, per_turn: int = FIRST_REQUESTS_PER_TURN) -> None:
        self._per_turn = per_turn
        self._started_this_turn = 0
        self._held_back: deque[tuple[PacedH11Protocol, bytes]] = deque()
        self._turn_scheduled = False

    def admit(self, protocol: PacedH11Protocol, data: bytes) -> bool:
        """Whether the connection's first bytes may be handled now; if not, it is paused and
        its bytes are handed back to it at its turn (`handle_held_back`)."""
        self._next_turn_soon()
        if self._started_this_turn < self._per_turn and not self._held_back:
            self._started_this_turn += 1
            return True
        protocol.transport.pause_reading()
        self._held_back.append((protocol, data))
        return False

    def _next_turn_soon(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_scheduled = False
        self._started_this_turn = 0
        while self._held_back and self._started_this_turn < self._per_turn:
            protocol, data = self._held_back.popleft()
            if not protocol.transport.is_closing():
                protocol.handle_held_back(data)
                self._started_this_turn += 1
        if self._held_back:
            self._next_turn_soon()


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionPacer] = (
    weakref.WeakKeyDictionary()
)


def pacer_of_running_loop() -> ConnectionPacer:
    """One pacer per event loop: what it holds back are that loop's connections."""
    loop = asyncio.get_running_loop()
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = ConnectionPacer()
    return pacer
