"""Rate limits with the `limits` library: in memory, or in Redis when instances share them."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import coredis
from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from findme.errors import ConfigurationError, RateLimited


@dataclass(frozen=True)
class Rule:
    name: str
    items: tuple[RateLimitItem, ...]
    sentence: str


class RateLimiter:
    """Named rules ("login_ip", "upload", …) each checked per identifier (IP, user, email)."""

    def __init__(self, *, storage_url: str, rules: Mapping[str, tuple[str, str]]) -> None:
        url = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
        options: dict[str, Any] = {}
        self._redis_pool: Any = None
        if url.startswith("async+redis"):
            # Our own pool, so the connections close with the app instead of leaking.
            self._redis_pool = coredis.ConnectionPool.from_url(url.removeprefix("async+"))
            options["connection_pool"] = self._redis_pool
        try:
            storage = storage_from_string(url, **options)
        except Exception as error:
            raise ConfigurationError(
                f"FINDME_RATE_LIMIT_STORAGE {storage_url!r} is not usable: {error}"
            ) from None
        self._limiter = MovingWindowRateLimiter(storage)
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


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"
