"""Waiting: retries with backoff while the server has trouble, and work the watcher abandons."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from findme.watcher.display import Display
from findme.watcher.errors import GaveUp, ServerTrouble, Stopped

T = TypeVar("T")

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    display: Display,
    stopping: asyncio.Event,
    give_up_after_s: float | None,
) -> T:
    """attempt(), again while the server has trouble, pausing longer each time (or as told).

    Raises Stopped when the watcher stops during a pause, and GaveUp after give_up_after_s.
    """
    failures = 0
    first_failure_at = 0.0
    while True:
        try:
            result = await attempt()
        except ServerTrouble as trouble:
            now = time.monotonic()
            first_failure_at = first_failure_at or now
            if give_up_after_s is not None and now - first_failure_at >= give_up_after_s:
                raise GaveUp(f"Gave up after {give_up_after_s:.0f} s: {trouble.reason}.") from None
            delay_s = trouble.retry_after_s
            if delay_s is None:
                delay_s = _backoff_s(failures)
            failures += 1
            display.trouble(trouble.reason, delay_s)
            try:
                await asyncio.wait_for(stopping.wait(), delay_s)
            except TimeoutError:
                continue
            raise Stopped() from None
        if failures:
            display.recovered()
        return result


async def unless_stopped(work: Awaitable[T], *, stopping: asyncio.Event) -> T:
    """The result of work, unless stopping is set first (then Stopped, and work is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stopping.wait())
    waiters: set[asyncio.Future[Any]] = {task, stopped}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            task.add_done_callback(_quietly)
    if task.done() and not task.cancelled():
        return task.result()
    raise Stopped()


def _backoff_s(failures: int) -> float:
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**failures) * random.uniform(0.8, 1.2)


def _quietly(task: asyncio.Future[Any]) -> None:
    """Mark the outcome of an abandoned task as seen (its exception no longer matters)."""
    if not task.cancelled():
        task.exception()
