"""Why the watcher stops, and why it waits."""

from __future__ import annotations

from findme.errors import FindMeError


class WatchError(FindMeError):
    """The watcher cannot go on."""

    code = "watch_error"


class GaveUp(WatchError):
    """The server stayed unreachable for longer than the watcher was told to wait."""


class ServerTrouble(Exception):
    """The server cannot take the request now (down, overloaded, rate limiting): retry later."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class RequestRefused(Exception):
    """The server refused the request as a whole, without a word on each file (e.g. a 413)."""

    def __init__(self, *, status_code: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail


class Stopped(Exception):
    """The watcher is stopping; the work in hand is left for the next run."""
