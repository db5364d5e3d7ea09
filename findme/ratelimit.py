"""Rate limits with the `limits` library: in memory, or in Redis when instances share them.

Both count with the sliding-window counter: two counters per key (this window and the last),
so a hit costs the same however many members are counted. In memory the counters are our own
(`LocalWindows`): limits' MemoryStorage sweeps every key after each hit, which with thousands
of members reading made the limiter the largest cost of a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import coredis
from limits import RateLimitItem, parse_many
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from limits.util import WindowStats

from findme.errors import ConfigurationError, RateLimited


@dataclass(frozen=True)
class Rule:
    name: str
    items: tuple[RateLimitItem, ...]
    sentence: str


class Strategy(Protocol):
    """What RateLimiter needs of a limits strategy."""

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool: ...
    async def test(self, item: RateLimitItem, *identifiers: str) -> bool: ...
    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats: ...
    async def clear(self, item: RateLimitItem, *identifiers: str) -> None: ...


class RateLimiter:
    """Named rules ("login_ip", "upload", …) each checked per identifier (IP, user, email)."""

    def __init__(self, *, storage_url: str, rules: Mapping[str, tuple[str, str]]) -> None:
        url = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
        self._redis_pool: Any = None
        self._limiter: Strategy
        if url.removeprefix("async+").rstrip("/") == "memory:":
            self._limiter = LocalWindows()
        else:
            self._limiter = SlidingWindowCounterRateLimiter(self._storage(url, storage_url))
        self._rules: dict[str, Rule] = {}
        for name, (spec, sentence) in rules.items():
            try:
                items = tuple(parse_many(spec))
            except ValueError:
                raise ConfigurationError(
                    f"The rate limit {name} ({spec!r}) is not valid; write it like 10/minute."
                ) from None
            self._rules[name] = Rule(name, items, sentence)
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: Counter[str] = Counter()

    def _storage(self, url: str, storage_url: str) -> Any:
        options: dict[str, Any] = {}
        if url.startswith("async+redis"):
            # Our own pool, so the connections close with the app instead of leaking.
            self._redis_pool = coredis.ConnectionPool.from_url(url.removeprefix("async+"))
            options["connection_pool"] = self._redis_pool
        try:
            return storage_from_string(url, **options)
        except Exception as error:
            raise ConfigurationError(
                f"FINDME_RATE_LIMIT_STORAGE {storage_url!r} is not usable: {error}"
            ) from None

    async def aclose(self) -> None:
        if self._redis_pool is not None:
            self._redis_pool.disconnect()

    async def hit(self, name: str, *identifiers: str) -> None:
        """Count one request; raise RateLimited (with Retry-After) once a limit is reached."""
        rule = self._rules[name]
        for item in rule.items:
            if not await self._limiter.hit(item, name, *identifiers):
                await self._refuse(rule, item, identifiers)

    async def check(self, name: str, *identifiers: str) -> None:
        """Refuse if a limit is already reached, without counting this request."""
        rule = self._rules[name]
        for item in rule.items:
            if not await self._limiter.test(item, name, *identifiers):
                await self._refuse(rule, item, identifiers)

    async def record(self, name: str, *identifiers: str) -> None:
        """Count one event (a failed sign-in, say) without refusing anything."""
        for item in self._rules[name].items:
            await self._limiter.hit(item, name, *identifiers)

    async def clear(self, name: str, *identifiers: str) -> None:
        """Forget what was counted for these identifiers (a sign-in succeeded)."""
        for item in self._rules[name].items:
            await self._limiter.clear(item, name, *identifiers)

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, key: str) -> AsyncIterator[None]:
        """Run the block for one `key` at a time in this process.

        A check followed by a count is then atomic per key: a burst of parallel requests cannot
        all pass the check before the first is counted. Across instances sharing Redis, each
        instance may still let one request through concurrently.
        """
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._lock_users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[key] -= 1
            if not self._lock_users[key]:
                del self._lock_users[key], self._locks[key]

    async def _refuse(self, rule: Rule, item: RateLimitItem, identifiers: tuple[str, ...]) -> None:
        stats = await self._limiter.get_window_stats(item, rule.name, *identifiers)
        retry_after_s = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"{rule.sentence} Try again in {_duration(retry_after_s)}.", retry_after_s=retry_after_s
        )


class LocalWindows:
    """Sliding-window counters in this process, the limits strategy's arithmetic without its
    storage: a hit reads two counters, writes one, and drops at most two expired ones.

    Counters of one period are made in time order and all live two periods, so they expire in
    the order they were made: a queue per period finds the expired ones without looking at
    any other key.
    """

    # Expired counters dropped per call: more than the one a call can make, so the queues drain.
    DROP_PER_CALL = 2

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._made: dict[int, deque[tuple[str, int]]] = {}

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        key, period, window, now = self._where(item, identifiers)
        if self._weighted(key, period=period, window=window, now=now) + 1 > item.amount:
            return False
        counter = (key, window)
        if counter not in self._counts:
            self._counts[counter] = 0
            self._made.setdefault(period, deque()).append(counter)
        self._counts[counter] += 1
        return True

    async def test(self, item: RateLimitItem, *identifiers: str) -> bool:
        key, period, window, now = self._where(item, identifiers)
        return self._weighted(key, period=period, window=window, now=now) < item.amount

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        key, period, window, now = self._where(item, identifiers)
        previous = self._counts.get((key, window - 1), 0)
        current = self._counts.get((key, window), 0)
        remaining = max(0, item.amount - self._weighted(key, period=period, window=window, now=now))
        window_end = (window + 1) * period
        if current >= item.amount or not previous:
            # This window alone is full: room comes once it becomes the previous one.
            return WindowStats(window_end, remaining)
        # The previous window's weight falls linearly; room comes when it falls below the
        # share this window leaves.
        fraction_left = (item.amount - current) / previous
        return WindowStats(min(window_end, window_end - fraction_left * period), remaining)

    async def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        key, _period, window, _now = self._where(item, identifiers)
        self._counts.pop((key, window), None)
        self._counts.pop((key, window - 1), None)

    def _where(
        self, item: RateLimitItem, identifiers: tuple[str, ...]
    ) -> tuple[str, int, int, float]:
        now = time.time()
        period = item.get_expiry()
        window = int(now // period)
        self._drop_expired(period, window)
        return item.key_for(*identifiers), period, window, now

    def _weighted(self, key: str, *, period: int, window: int, now: float) -> int:
        previous = self._counts.get((key, window - 1), 0)
        current = self._counts.get((key, window), 0)
        previous_weight = 1 - (now - window * period) / period
        # Rounded up: rounded down, the last window's hits would lose one the instant a new
        # window starts, and a sprayer who times the boundary would get an extra attempt.
        return math.ceil(previous * previous_weight + current)

    def _drop_expired(self, period: int, window: int) -> None:
        made = self._made.get(period)
        for _ in range(self.DROP_PER_CALL):
            if not made or made[0][1] >= window - 1:
                return
            self._counts.pop(made.popleft(), None)


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"
