"""The live streams open in this process, woken together: one read per burst of news.

A photo of a crowd can match hundreds of members at once. Were each of their streams to read
its own new matches and check its own session, a burst would cost two queries per stream while
every page waited for the connection pool. Here news only marks the streams it concerns; one
task reads the new matches of all of them (one statement on PostgreSQL) and whether their
sessions and tokens still stand (one more), then hands each stream its rows. One read runs at
a time, so live streams never hold more than one pooled connection; news that arrives during a
read is served by the next one.

A stream's backlog (the matches made since the id it resumes after) is read the same way, with
every other stream that connects meanwhile: after a restart, thousands of pages reconnecting at
once cost a few batched reads, not two queries each. The first delivery to a stream, empty or
not, says it has caught up.

News can be lost (a dropped LISTEN connection), so every RECHECK_S the hub also looks at every
stream: the new matches, and whether each session or token still stands. It does so a slice at
a time (SWEEP_SLICES reads spread over RECHECK_S): one read of 4,000 streams takes about a
second, during which a burst or a single match would wait.

The rows are handed over a slice of streams at a time (DELIVERY_SLICE), so a burst that wakes
thousands of pages does not stall every other request of the process while they write.
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

# How often every stream is looked at, news or not: in case news was lost.
RECHECK_S = 60.0
# The streams are looked at in this many slices, one every RECHECK_S / SWEEP_SLICES.
SWEEP_SLICES = 12
# Streams handed their rows per turn of the event loop. Each woken stream encodes and writes its
# events (~0.3 ms): a burst of 2,000 handed at once would hold every other request for most of
# a second, in slices of this many a page read waits for at most ~15 ms a step.
DELIVERY_SLICE = 50


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
    # Whether it has had its backlog (its first delivery, which may be empty).
    caught_up: bool = False
    # Which slice of the sweep looks at it.
    slot: int = 0


class StreamHub:
    def __init__(self, *, db: Database, auth: Authenticator) -> None:
        self._db = db
        self._auth = auth
        self._followers: dict[int, set[Follower]] = defaultdict(set)
        self._due: set[Follower] = set()
        self._reader: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._followed = 0

    @contextlib.asynccontextmanager
    async def follow(self, follower: Follower) -> AsyncIterator[Follower]:
        """Sent its backlog, then woken by news of its matches or account, while the block runs."""
        followers = self._followers[follower.principal.id]
        follower.slot = self._followed % SWEEP_SLICES
        self._followed += 1
        followers.add(follower)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_while_followed())
        self.wake(follower)
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
        self._due.add(follower)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_while_due())

    async def aclose(self) -> None:
        for task in (self._sweeper, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _sweep_while_followed(self) -> None:
        """Every stream looked at once per RECHECK_S, a slice at a time: one timer for the
        process, not one per stream, so thousands of idle pages cost a few batched reads a
        minute."""
        tick = 0
        while self._followers:
            await asyncio.sleep(RECHECK_S / SWEEP_SLICES)
            slot, tick = tick % SWEEP_SLICES, tick + 1
            for followers in self._followers.values():
                for follower in followers:
                    if follower.slot == slot:
                        self.wake(follower)

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
        for handed, follower in enumerate(due, 1):
            if handed % DELIVERY_SLICE == 0:
                # The streams woken so far write their events before the next slice is woken,
                # and other requests get their turn in between.
                await asyncio.sleep(0)
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
            if rows or not follower.caught_up:
                follower.caught_up = True
                follower.inbox.put_nowait(rows)
