"""How many connections this process can hold: the open-file limit, raised as far as allowed.

Every open live page is a socket, and a socket is a file: with the usual soft limit of 1,024 a
busy event runs out of them ("Too many open files", connection resets). At start the soft limit
is raised to the hard one; what it becomes is reported by `findme doctor` and the admin page,
and live streams are refused cleanly (503) before it is reached.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from findme.errors import NotReady

logger = logging.getLogger(__name__)

# Files the process needs besides live streams: the database pool, engine pipes, uploads in
# flight, log files, ordinary requests.
RESERVED_FILES = 256
# What a refused live stream is told to wait; pages add their own jitter and backoff.
STREAM_RETRY_AFTER_S = 10


@dataclass(frozen=True)
class OpenFiles:
    soft: int
    hard: int
    # the soft limit before it was raised, when it was
    was: int | None = None

    @property
    def stream_capacity(self) -> int:
        """Live streams this process accepts before refusing new ones (503)."""
        return max(0, self.soft - RESERVED_FILES)

    def sentence(self) -> str:
        raised = f" (raised from {self.was})" if self.was is not None else ""
        return (
            f"open files: {self.soft}{raised} of at most {self.hard}; room for "
            f"{self.stream_capacity} live pages."
        )


def open_files() -> OpenFiles:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return OpenFiles(soft=soft, hard=_finite(hard, soft))


def raise_open_files_limit() -> OpenFiles:
    """Raise the soft limit to the hard one (no privilege needed) and say what it is now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _finite(hard, soft)
    if soft >= target:
        return OpenFiles(soft=soft, hard=target)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:
        logger.warning(
            "could not raise the open-file limit from %d to %d: %s",
            soft,
            target,
            error,
            extra={"action": "open_files_limit"},
        )
        return OpenFiles(soft=soft, hard=target)
    return OpenFiles(soft=target, hard=target, was=soft)


def _finite(hard: int, soft: int) -> int:
    # RLIM_INFINITY: settle for a generous finite number (select() and friends dislike more).
    return 1_048_576 if hard == resource.RLIM_INFINITY else max(hard, soft)


class StreamSlots:
    """Live streams open in this process, refused past `capacity` before they cost anything.

    Counted, not queued: a refused browser comes back after its own backoff, so a reconnect
    storm past capacity costs one cheap response per attempt and no database connection.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.open = 0

    def check(self) -> None:
        """Refuse (503 with Retry-After) if every slot is taken."""
        if self.open >= self.capacity:
            raise NotReady(
                "Too many live pages are open on this server right now; "
                f"this page reconnects by itself in about {STREAM_RETRY_AFTER_S} seconds.",
                retry_after_s=STREAM_RETRY_AFTER_S,
            )

    def take(self) -> None:
        self.check()
        self.open += 1

    def give_back(self) -> None:
        self.open -= 1
