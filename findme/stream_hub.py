"""The live streams open in this process, woken together: one read per burst of news.

A photo of a crowd can match hundreds of members at once. Were each of their streams to read
its own new matches and check its own session, a burst would cost two queries per stream while
every page waited for the connection pool. Here news only marks the streams it concerns; one
task reads the new matches of all of them (one statement on PostgreSQL) and whether their
sessions and tokens still stand (one more), then hands each stream its rows. One read runs at
a time, so live streams never hold more than one pooled connection; news that arrives during a
read is served by the next one.

A stream reads its backlog itself (`catching up`), then goes live: news that came meanwhile is
remembered and served as soon as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from findme.auth import Authenticator, Principal
from findme.db import Database
from findme.domain.photos import matches_after_of_many

logger = logging.getLogger(__name__)

Rows = list[tuple[int, dict[str, Any]]]


class SessionEnded(Exception):
    """The stream's session or token no longer stands."""


class ReadFailed(Exception):
    """The batched read failed (the database went away): the stream ends, and the browser
    reconnects where it left off."""


@dataclass(eq=False)
class Follower:
    """One open stream: whose matches it sends, from where, and what the hub has for it."""

    principal: Principal
    event_id: int | None
    after: int
    inbox: asyncio.Queue[Rows | Exception] = field(default_factory=asyncio.Queue)
    live: bool = False
    missed: bool = False

    def go_live(self, after: int) -> bool:
        """Caught up to `after`: from here the hub reads for this stream. Whether news came
        while it caught up (then it must be woken)."""
        self.after, self.live = after, True
        return self.missed


class StreamHub:
    def __init__(self, *, db: Database, auth: Authenticator) -> None:
        self._db = db
        self._auth = auth
        self._followers: dict[int, set[Follower]] = defaultdict(set)
        self._due: set[Follower] = set()
        self._reader: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def follow(self, follower: Follower) -> AsyncIterator[Follower]:
        """Woken by news of the follower's matches or account while the block runs."""
        followers = self._followers[follower.principal.id]
        followers.add(follower)
        try:
            yield follower
        finally:
            followers.discard(follower)
            self._due.discard(follower)
            if not followers:
                del self._followers[follower.principal.id]

    async def news(self, user_ids: set[int]) -> None:
        """A feed listener: these members' matches or accounts changed."""
        for user_id in user_ids:
            for follower in self._followers.get(user_id, ()):
                self.wake(follower)

    def wake(self, follower: Follower) -> None:
        """Have the next read look at this stream (now, if none is running)."""
        if not follower.live:
            follower.missed = True
            return
        self._due.add(follower)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_while_due())

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read_while_due(self) -> None:
        while self._due:
            due, self._due = self._due, set()
            try:
                await self._read(due)
            except Exception as error:
                logger.warning(
                    "live streams could not be read: %s",
                    type(error).__name__,
                    exc_info=True,
                    extra={"action": "stream_read_failed"},
                )
                for follower in due:
                    follower.inbox.put_nowait(ReadFailed())

    async def _read(self, due: set[Follower]) -> None:
        after_by_user: dict[int, int] = {}
        for follower in due:
            user_id = follower.principal.id
            after_by_user[user_id] = min(after_by_user.get(user_id, follower.after), follower.after)
        async with self._db.sessions() as session:
            found = await matches_after_of_many(session, after_by_user)
        # After the read, not before: a match committed after a sign-out is then never sent,
        # since this check sees the sign-out.
        standing = {id(p) for p in await self._auth.still_standing(f.principal for f in due)}
        for follower in due:
            if id(follower.principal) not in standing:
                follower.inbox.put_nowait(SessionEnded())
                continue
            rows = [
                (match_id, item)
                for match_id, event_id, item in found.get(follower.principal.id, ())
                if match_id > follower.after
                and (follower.event_id is None or event_id == follower.event_id)
            ]
            if rows:
                follower.after = rows[-1][0]
                follower.inbox.put_nowait(rows)
