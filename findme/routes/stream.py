"""My photos as they come: the live match stream (Server-Sent Events).

The stream resumes without a gap: every event's SSE `id` is its face_matches row id, and a
reconnecting EventSource sends the last one back as `Last-Event-ID`, so the stream starts again
with the matches made after it. Within an event, match rows commit in id order (the matcher
writes under the event's advisory lock), so "id greater than" loses nothing.

A stream lives no longer than what signed it in. Sign-out, revocation of its API token and
erasure send ACCOUNTS news (to every instance, through NOTIFY); a session's expiry is a deadline
of its own; and the process's stream hub (findme/stream_hub.py) looks at every stream every
RECHECK_S, in case news was lost. The hub also reads each stream's backlog and every later
burst of news, for all the streams concerned at once: the new matches first and whether each
session or token still stands second, so a match committed after a sign-out is never sent: the
check then sees the sign-out. The last message is an `end` event, and the browser's
reconnection gets a 401.

Set-up is cheap and bounded: each database read holds a pooled connection for that read only,
and past FINDME_MAX_STREAMS (by default what the open-file limit leaves room for) a new stream
is refused with 503 and Retry-After before it reads anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from findme.api_schemas import ID, TEXT, Param, Reply, integer
from findme.auth import Principal
from findme.capacity import StreamSlots
from findme.db import utcnow
from findme.domain.access import stream_event_for
from findme.routes.common import api, app_state, int_param, require_user
from findme.services import AppState
from findme.stream_hub import Follower, Rows, SessionEnded

# Keep-alive comments: proxies close connections idle for 60 s by default (nginx's
# proxy_read_timeout, AWS load balancers), so 30 s keeps a page open through them at half the
# writes of a 15 s ping (thousands of idle pages: docs/BENCHMARKS.md, "Live pages").
PING_S = 30
RECONNECT_MS = 3000
SHUTDOWN_GRACE_S = 2.0


class _SlotResponse(EventSourceResponse):
    """A stream that gives its slot back however it ends (finished, cut off, or never read)."""

    def __init__(self, *args: Any, slots: StreamSlots, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back()


def _resume_after(request: Request) -> int:
    """Where a (re)connecting stream starts: Last-Event-ID beats ?after=."""
    header = request.headers.get("last-event-id", "").strip()
    if header:
        return int_param(header, "Last-Event-ID")
    return int_param(request.query_params.get("after"), "after", default=0)


@api(
    "Live: my new matches as Server-Sent Events (id = match id; resumes after Last-Event-ID)",
    query={
        "event_id": Param("only this event's matches", ID),
        "after": Param(
            "send matches with a greater id (the Last-Event-ID header wins)",
            integer(minimum=0, default=0),
        ),
        "Last-Event-ID": Param(
            "the id of the last message received (sent by a reconnecting EventSource)",
            integer(minimum=0),
            where="header",
        ),
    },
    responses={
        200: Reply(
            "each message is a MyPhoto with its match_id; a 'ready' event once caught up; "
            "keep-alive comments",
            TEXT,
            media_type="text/event-stream",
        ),
        404: "no such event, or not one of mine",
        503: "too many live pages open on this server; Retry-After says when to try again",
    },
)
async def my_photos_stream(request: Request) -> Response:
    state = app_state(request)
    slots = state.stream_slots
    # Refused before the sign-in is read, so a storm past capacity reaches no database.
    slots.check()
    principal = await require_user(request)
    raw_event = request.query_params.get("event_id")
    event_id = int_param(raw_event, "event_id") if raw_event else None
    if event_id is not None:
        await stream_event_for(state, principal, event_id)
    after = _resume_after(request)
    shutdown = anyio.Event()
    # Taken last, with no await between it and the response that gives it back.
    slots.take()
    return _SlotResponse(
        _match_events(state, principal=principal, event_id=event_id, after=after, stop=shutdown),
        slots=slots,
        ping=PING_S,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )


async def _match_events(
    state: AppState, *, principal: Principal, event_id: int | None, after: int, stop: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    expires_at = principal.session.expires_at if principal.session is not None else None
    ended = ServerSentEvent(json.dumps({"reason": "session_ended"}), event="end")
    follower = Follower(principal=principal, event_id=event_id, after=after)
    # The server's shutdown comes through the inbox too: one waiter for the stream's life, not
    # two tasks for every delivery (a burst wakes thousands of streams at once).
    stopping = asyncio.ensure_future(stop.wait())
    stopping.add_done_callback(lambda _: follower.inbox.put_nowait(ServerStopping()))
    # The hub's first delivery is the backlog, then come the matches of each later burst.
    backlog_sent = False
    try:
        async with state.streams.follow(follower):
            yield ServerSentEvent(comment="FindMe live matches", retry=RECONNECT_MS)
            while not stop.is_set():
                delivery = await _next_delivery(follower, timeout_s=_until_expiry(expires_at))
                if delivery is None:
                    # The session's expiry: look again, to find it expired.
                    state.streams.wake(follower)
                elif isinstance(delivery, SessionEnded):
                    yield ended
                    return
                elif isinstance(delivery, Exception):
                    return  # the browser reconnects after the last id it received
                else:
                    for match_id, item in delivery:
                        yield ServerSentEvent(json.dumps(item), id=str(match_id))
                        after = match_id
                    if not backlog_sent:
                        backlog_sent = True
                        yield ServerSentEvent(json.dumps({"after": after}), event="ready")
    finally:
        stopping.cancel()


class ServerStopping(Exception):
    """The server is shutting down: the stream ends, and the browser reconnects to another."""


async def _next_delivery(follower: Follower, *, timeout_s: float | None) -> Rows | Exception | None:
    """What the hub (or the shutdown) has for this stream; None after `timeout_s`."""
    try:
        # A timeout while waiting takes nothing from the queue: no delivery is ever dropped.
        async with asyncio.timeout(timeout_s):
            return await follower.inbox.get()
    except TimeoutError:
        return None


def _until_expiry(expires_at: dt.datetime | None) -> float | None:
    """Seconds until the session expires (None: an API token, which does not)."""
    if expires_at is None:
        return None
    # A hair past the expiry, so the look after it finds the session expired.
    return max(0.0, (expires_at - utcnow()).total_seconds()) + 0.05


routes = [
    Route("/api/my-photos/stream", my_photos_stream, methods=["GET"]),
]
