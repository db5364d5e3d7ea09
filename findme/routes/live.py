"""My photos as they come: the live match stream (SSE), the streamed zip, and the join QR code.

The stream resumes without a gap: every event's SSE `id` is its face_matches row id, and a
reconnecting EventSource sends the last one back as `Last-Event-ID`, so the stream starts again
with the matches made after it. Within an event, match rows commit in id order (the matcher
writes under the event's advisory lock), so "id greater than" loses nothing.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import anyio
import anyio.from_thread
import segno
from sqlalchemy import func, select
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from zipstream import ZipStream  # type: ignore[import-untyped]

from findme.db import Face, FaceMatch, Photo
from findme.errors import NotFound
from findme.routes.common import api, app_state, int_param, iso, path_id, require_user
from findme.routes.events import event_for
from findme.routes.photos import photo_json
from findme.services import AppState

PING_S = 15
RECONNECT_MS = 3000
SHUTDOWN_GRACE_S = 2.0
BATCH = 100
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f<>:"|?*]+')


def join_url(request: Request, code: str) -> str:
    """The absolute link a QR code or a poster points to."""
    return f"{str(request.base_url).rstrip('/')}/join/{code}"


def _resume_after(request: Request) -> int:
    """Where a (re)connecting stream starts: Last-Event-ID beats ?after=."""
    header = request.headers.get("last-event-id", "").strip()
    if header:
        return int_param(header, "Last-Event-ID")
    return int_param(request.query_params.get("after"), "after", default=0)


@api(
    "Live: my new matches as Server-Sent Events (id = match id; resumes after Last-Event-ID)",
    query={
        "event_id": "event (optional)",
        "after": "send matches with a greater id (the Last-Event-ID header wins)",
    },
    responses={
        200: "text/event-stream; each message is a photo (+ match_id, matched_at); "
        "a 'ready' event once caught up; keep-alive comments",
        403: "not a member",
        404: "unknown event",
    },
    content_type="text/event-stream",
)
async def my_photos_stream(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    raw_event = request.query_params.get("event_id")
    event_id = int_param(raw_event, "event_id") if raw_event else None
    if event_id is not None:
        async with state.db.sessions() as session:
            await event_for(state, session, principal, event_id)
    after = _resume_after(request)
    shutdown = anyio.Event()
    return EventSourceResponse(
        _match_events(state, user_id=principal.id, event_id=event_id, after=after, stop=shutdown),
        ping=PING_S,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )


async def _match_events(
    state: AppState, *, user_id: int, event_id: int | None, after: int, stop: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    # Subscribed before the first read: a match made while we read still wakes us after it.
    async with state.feed.subscribe(user_id) as changed:
        yield ServerSentEvent(comment="FindMe live matches", retry=RECONNECT_MS)
        ready = False
        while not stop.is_set():
            changed.clear()
            rows = await _matches_after(state, user_id=user_id, event_id=event_id, after=after)
            for match_id, item in rows:
                yield ServerSentEvent(json.dumps(item), id=str(match_id))
                after = match_id
            if len(rows) == BATCH:
                continue
            if not ready:
                ready = True
                yield ServerSentEvent(json.dumps({"after": after}), event="ready")
            await _first_of(changed.wait, stop.wait)


async def _first_of(*waiters: Callable[[], Awaitable[Any]]) -> None:
    async with anyio.create_task_group() as group:

        async def wait(waiter: Callable[[], Awaitable[Any]]) -> None:
            await waiter()
            group.cancel_scope.cancel()

        for waiter in waiters:
            group.start_soon(wait, waiter)


async def _matches_after(
    state: AppState, *, user_id: int, event_id: int | None, after: int
) -> list[tuple[int, dict[str, Any]]]:
    faces = select(func.count()).where(Face.photo_id == Photo.id).scalar_subquery()
    query = (
        select(FaceMatch.id, FaceMatch.matched_at, Photo, faces)
        .join(Photo, Photo.id == FaceMatch.photo_id)
        .where(FaceMatch.user_id == user_id, FaceMatch.id > after)
    )
    if event_id is not None:
        query = query.where(FaceMatch.event_id == event_id)
    async with state.db.sessions() as session:
        rows = (await session.execute(query.order_by(FaceMatch.id).limit(BATCH))).all()
    return [
        (
            match_id,
            photo_json(photo)
            | {"match_id": match_id, "matched_at": iso(matched_at), "faces": face_count},
        )
        for match_id, matched_at, photo, face_count in rows
    ]


@api(
    "Download all my photos of an event as one zip, streamed (stored, not deflated)",
    auth="event member",
    responses={
        200: "application/zip, chunked",
        403: "not a member",
        404: "unknown event, or no photo of me in it",
    },
    content_type="application/zip",
)
async def my_photos_zip(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, _ = await event_for(state, session, principal, path_id(request, "event_id"))
        rows = (
            await session.execute(
                select(Photo.id, Photo.filename, Photo.size_bytes)
                .join(FaceMatch, FaceMatch.photo_id == Photo.id)
                .where(FaceMatch.user_id == principal.id, FaceMatch.event_id == event.id)
                .order_by(Photo.id)
            )
        ).all()
    if not rows:
        raise NotFound("You appear in no photo of this event yet. Try again once it is processed.")
    archive = ZipStream(compress_type=zipfile.ZIP_STORED)
    names = unique_names((row.filename, row.id) for row in rows)
    for row, name in zip(rows, names, strict=True):
        chunks = state.storage.stream_original(row.id, size_bytes=row.size_bytes)
        archive.add(_from_loop(chunks), name, size=row.size_bytes)
    filename = f"{_safe_name(event.name, fallback='event')} - my photos.zip"
    return StreamingResponse(
        # A sync iterator: Starlette runs it in a worker thread, and each file's chunks are
        # fetched back on the event loop, so only one chunk at a time is held in memory.
        iter(archive),
        media_type="application/zip",
        headers={
            "Content-Disposition": _attachment(filename),
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _from_loop(chunks: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Pull an async iterator from a worker thread that anyio started."""
    while (chunk := anyio.from_thread.run(_next_chunk, chunks)) is not None:
        yield chunk


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


def _safe_name(raw: str, *, fallback: str) -> str:
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    return name[:150] or fallback


def unique_names(files: Iterable[tuple[str, int]]) -> list[str]:
    """Zip entry names: safe, and unique ignoring case ("a.jpg", "a (2).jpg", ...)."""
    taken: set[str] = set()
    names = []
    for raw, photo_id in files:
        name = _safe_name(raw, fallback=f"photo-{photo_id}.jpg")
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem:
            stem, dot, extension = name, "", ""
        candidate, number = name, 2
        while candidate.casefold() in taken:
            candidate = f"{stem} ({number}){dot}{extension}"
            number += 1
        taken.add(candidate.casefold())
        names.append(candidate)
    return names


def _attachment(filename: str) -> str:
    fallback = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


@api(
    "The event's join link as a QR code (SVG)",
    auth="event organiser or member",
    query={"download": "1 to download the SVG"},
    responses={200: "image/svg+xml", 403: "not a member", 404: "unknown event"},
    content_type="image/svg+xml",
)
async def event_qr(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, _ = await event_for(state, session, principal, path_id(request, "event_id"))
    buffer = io.BytesIO()
    segno.make(join_url(request, event.code), error="m", micro=False).save(
        buffer, kind="svg", scale=8, border=2, dark="#111827", light="#ffffff"
    )
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if request.query_params.get("download") == "1":
        headers["Content-Disposition"] = _attachment(
            f"{_safe_name(event.name, fallback='event')} - join QR.svg"
        )
    return Response(buffer.getvalue(), media_type="image/svg+xml", headers=headers)


routes = [
    Route("/api/my-photos/stream", my_photos_stream, methods=["GET"]),
    Route("/api/events/{event_id}/my-photos.zip", my_photos_zip, methods=["GET"]),
    Route("/api/events/{event_id}/qr.svg", event_qr, methods=["GET"]),
]
