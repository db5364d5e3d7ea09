"""Small TTL + LRU caches of metadata (never image bytes), with hit rates and single-flight.

`cachetools.cached` on an `async def` would cache the coroutine object, not its result, so the
caches here await the loader themselves; concurrent misses for one key share one load.

Photo lists are kept as encoded JSON pages: a hit costs no query and no serialisation. "My
photos" pages belong to their user and go with the user's match news. An event's gallery pages
(`/api/all-photos`) are shared by everyone who sees every photo of the event and go with the
event's photo news (added, processed, deleted); a member who sees only their own photos there
has pages of their own, which go with their match news like "my photos". Who may see an
event's gallery (a member, and whether its organiser opened it to all) is kept per member and
goes with the event's news (settings changed, event deleted): a cached page is never handed to
someone the database would refuse it to, on any instance, once that news has arrived.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")


class AsyncCache(Generic[V]):
    """Keys are tuples whose first item is the owner (a user or event id) for invalidation."""

    def __init__(self, name: str, *, maxsize: int, ttl_s: float) -> None:
        self.name = name
        self.enabled = ttl_s > 0
        self._entries: TTLCache[tuple[Hashable, ...], V] = TTLCache(
            maxsize=maxsize, ttl=max(ttl_s, 0.001)
        )
        self._loading: dict[tuple[Hashable, ...], asyncio.Future[V]] = {}
        # Bumped by invalidation: a load that started before it must not store its result.
        self._generation: defaultdict[Hashable, int] = defaultdict(int)
        self.hits = 0
        self.misses = 0

    async def get(self, key: tuple[Hashable, ...], load: Callable[[], Awaitable[V]]) -> V:
        if not self.enabled:
            self.misses += 1
            return await load()
        try:
            value = self._entries[key]
        except KeyError:
            pass
        else:
            self.hits += 1
            return value
        self.misses += 1
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        generation = self._generation[key[0]]
        try:
            value = await load()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._loading[key]
        if generation == self._generation[key[0]]:
            self._entries[key] = value
        future.set_result(value)
        return value

    def invalidate(self, owners: set[Hashable]) -> None:
        for owner in owners:
            self._generation[owner] += 1
        for key in [key for key in list(self._entries.keys()) if key[0] in owners]:
            self._entries.pop(key, None)

    def invalidate_where(self, stale: Callable[[V], bool]) -> None:
        """Drop entries whose value is stale (for caches keyed by something else than owner)."""
        for owner in list(self._generation):
            self._generation[owner] += 1
        for key, value in list(self._entries.items()):
            if stale(value):
                self._entries.pop(key, None)

    def clear(self) -> None:
        for owner in {key[0] for key in self._entries.keys()}:
            self._generation[owner] += 1
        self._entries.clear()

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "size": len(self._entries),
            "maxsize": int(self._entries.maxsize),
            "ttl_s": self._entries.ttl,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / total, 4) if total else 0.0,
        }


def gallery_key(
    *, event_id: int, member_id: int | None, cursor: int, limit: int
) -> tuple[Hashable, ...]:
    """The `all_photos` key of a gallery page: the event's own (every photo), or, for a member
    who sees only their photos (`member_id`), that member's."""
    if member_id is None:
        return (("event", event_id), cursor, limit)
    return (("member", member_id), event_id, cursor, limit)


@dataclass
class Caches:
    my_photos: AsyncCache[bytes]
    all_photos: AsyncCache[bytes]
    events: AsyncCache[Any]
    users: AsyncCache[Any]
    sessions: AsyncCache[Any]
    # (event id, user id) -> the event's gallery setting, for members only (see `gallery_member`)
    gallery_access: AsyncCache[Any]

    @classmethod
    def create(
        cls, *, my_photos_s: float, events_s: float, users_s: float, all_photos_s: float = 0
    ) -> Caches:
        """Time to live of each cache; 0 turns a cache off (the gallery's unless given)."""
        return cls(
            my_photos=AsyncCache("my_photos", maxsize=10_000, ttl_s=my_photos_s),
            all_photos=AsyncCache("all_photos", maxsize=10_000, ttl_s=all_photos_s),
            events=AsyncCache("events", maxsize=2_000, ttl_s=events_s),
            users=AsyncCache("users", maxsize=10_000, ttl_s=users_s),
            # Signed-in browsers: without it every request pays a database round trip.
            sessions=AsyncCache("sessions", maxsize=20_000, ttl_s=users_s),
            # Every gallery page a member opens asks: without it, a database round trip each.
            gallery_access=AsyncCache("gallery_access", maxsize=50_000, ttl_s=users_s),
        )

    def all(self) -> list[AsyncCache[Any]]:
        return [
            self.my_photos,
            self.all_photos,
            self.events,
            self.users,
            self.sessions,
            self.gallery_access,
        ]

    async def matches_changed(self, user_ids: set[int]) -> None:
        self.my_photos.invalidate(set(user_ids))
        self.all_photos.invalidate({("member", user_id) for user_id in user_ids})

    async def photos_changed(self, event_ids: set[int]) -> None:
        """A photo of these events was added, processed or deleted, or the event was deleted."""
        self.all_photos.invalidate({("event", event_id) for event_id in event_ids})

    async def events_changed(self, event_ids: set[int]) -> None:
        """These events' settings changed (who sees the gallery among them), or they were
        deleted."""
        self.events.invalidate(set(event_ids))
        self.gallery_access.invalidate(set(event_ids))

    def clear(self) -> None:
        for cache in self.all():
            cache.clear()

    def stats(self) -> dict[str, dict[str, Any]]:
        return {cache.name: cache.stats() for cache in self.all()}
