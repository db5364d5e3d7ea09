"""News that users or events changed, for caches and live pages, across instances.

Four kinds of news: a user's matches changed (caches of "my photos", live pages), or their
account did (sign-out, token revoked, erasure, new selfie: cached sessions and users, and
live streams, which end when their session does), or an event's photos did (added,
processed, deleted, or the event deleted: cached galleries), or an event itself did (its
settings changed, or it was deleted: cached events and who may see their galleries). Within a
process, the listeners of the kind are called with the changed user ids, or event ids for
photo and event news (the caches, the stream hub). On PostgreSQL every change is also sent
with NOTIFY, and each instance LISTENs, so a match made by a worker of another instance, or a
sign-out there, reaches this instance's caches and open pages too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

CHANNEL = "findme_matches"
MAX_PAYLOAD_IDS = 500  # NOTIFY payloads stop at 8000 bytes

Listener = Callable[[set[int]], Awaitable[None]]
MATCHES = "matches"
ACCOUNTS = "accounts"
PHOTOS = "photos"  # its ids are event ids
EVENTS = "events"  # its ids are event ids


class MatchFeed:
    def __init__(self, *, postgres_dsn: str | None) -> None:
        self._dsn = postgres_dsn
        self._instance = uuid.uuid4().hex[:12]
        self._listeners: dict[str, list[Listener]] = {
            kind: [] for kind in (MATCHES, ACCOUNTS, PHOTOS, EVENTS)
        }
        self._connection: asyncpg.Connection | None = None
        # A connection runs one statement at a time and refuses a second one meanwhile: news
        # published side by side (workers finishing their jobs together) take turns.
        self._sending = asyncio.Lock()

    def add_listener(self, listener: Listener, *, kind: str = MATCHES) -> None:
        """Called with the changed ids, for changes made here or by another instance."""
        self._listeners[kind].append(listener)

    async def __aenter__(self) -> MatchFeed:
        if self._dsn is not None:
            self._connection = await asyncpg.connect(self._dsn)
            await self._connection.add_listener(CHANNEL, self._on_notify)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close(timeout=5)

    async def publish(self, user_ids: set[int], *, kind: str = MATCHES) -> None:
        await self._deliver(kind, user_ids)
        if self._connection is None:
            return
        ordered = sorted(user_ids)
        for start in range(0, len(ordered), MAX_PAYLOAD_IDS):
            chunk = ",".join(str(user_id) for user_id in ordered[start : start + MAX_PAYLOAD_IDS])
            try:
                async with self._sending:
                    await self._connection.execute(
                        "SELECT pg_notify($1, $2)", CHANNEL, f"{self._instance}:{kind}:{chunk}"
                    )
            except Exception:
                # Other instances then catch up by their cache TTL; this one is up to date.
                logger.warning("NOTIFY failed", exc_info=True, extra={"action": "notify_error"})

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        sender, kind, ids = [*payload.split(":", 2), "", ""][:3]
        if sender == self._instance or kind not in self._listeners:
            return
        user_ids = {int(part) for part in ids.split(",") if part.isdigit()}
        if user_ids:
            asyncio.get_running_loop().create_task(self._deliver(kind, user_ids))

    async def _deliver(self, kind: str, user_ids: set[int]) -> None:
        for listener in self._listeners[kind]:
            await listener(user_ids)
