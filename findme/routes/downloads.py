"""Downloads: all my photos of an event as one streamed zip, and the event's join QR code."""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Iterable, Iterator

import anyio
import anyio.from_thread
import segno
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from zipstream import ZipStream  # type: ignore[import-untyped]

from findme.api_schemas import BINARY, DOWNLOAD, TEXT, Reply
from findme.domain.access import event_for
from findme.domain.events import join_url
from findme.domain.photos import my_matched_files
from findme.errors import NotFound
from findme.routes.common import api, app_state, path_id, require_user
from findme.routes.files import content_disposition

_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f<>:"|?*]+')


@api(
    "Download all my photos of an event as one zip, streamed (stored, not deflated)",
    auth="a member of the event",
    responses={
        200: Reply(
            "a zip of the originals, chunked",
            BINARY,
            media_type="application/zip",
            headers={"Content-Disposition": "attachment, with the event's name"},
        ),
        404: "no such event, or no photo of me in it",
    },
)
async def my_photos_zip(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, _ = await event_for(state, session, principal, path_id(request, "event_id"))
        rows = await my_matched_files(session, user_id=principal.id, event_id=event.id)
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
            "Content-Disposition": content_disposition(filename, download=True),
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


@api(
    "The event's join link as a QR code (SVG)",
    auth="its organiser, a member, or an admin",
    query={"download": DOWNLOAD},
    responses={
        200: Reply("the QR code of the join link", TEXT, media_type="image/svg+xml"),
        404: "no such event, or not one of mine",
    },
)
async def event_qr(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, _ = await event_for(state, session, principal, path_id(request, "event_id"))
    buffer = io.BytesIO()
    segno.make(join_url(str(request.base_url), event.code), error="m", micro=False).save(
        buffer, kind="svg", scale=8, border=2, dark="#111827", light="#ffffff"
    )
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if request.query_params.get("download") == "1":
        headers["Content-Disposition"] = content_disposition(
            f"{_safe_name(event.name, fallback='event')} - join QR.svg", download=True
        )
    return Response(buffer.getvalue(), media_type="image/svg+xml", headers=headers)


routes = [
    Route("/api/events/{event_id}/my-photos.zip", my_photos_zip, methods=["GET"]),
    Route("/api/events/{event_id}/qr.svg", event_qr, methods=["GET"]),
]
