"""Photos: streaming uploads, paged lists, image serving, deletion and "not me"."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiofiles
import aiofiles.os
from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from findme import jobs
from findme.auth import Principal
from findme.db import Event, EventMember, Face, FaceMatch, Photo, RejectedMatch, Role
from findme.errors import AlreadyExists, BadRequest, FindMeError, NotFound, TooLarge
from findme.images import CorruptImage, PreparedImage, prepare_upload
from findme.routes.common import (
    api,
    app_state,
    int_param,
    iso,
    json_bytes,
    json_response,
    path_id,
    require_user,
)
from findme.routes.events import event_for
from findme.services import AppState
from findme.uploads import ReceivedFile, receive_files

logger = logging.getLogger(__name__)

IMMUTABLE = "private, max-age=31536000, immutable"
DEFAULT_PAGE = 50
MAX_PAGE = 200


class FileTooLarge(TooLarge):
    code = "file_too_large"


class NoFiles(BadRequest):
    """The request holds no files. Send the photos as form fields named files."""

    code = "no_files"


# Lists select these columns only: no ORM objects to build, never the byte columns.
PHOTO_COLUMNS = (
    Photo.id,
    Photo.event_id,
    Photo.filename,
    Photo.width,
    Photo.height,
    Photo.status,
    Photo.uploaded_at,
)


def photo_json(photo: Any) -> dict[str, Any]:
    """A list item from a Photo or a row of PHOTO_COLUMNS."""
    return {
        "id": photo.id,
        "event_id": photo.event_id,
        "filename": photo.filename,
        "width": photo.width,
        "height": photo.height,
        "status": photo.status.value,
        "uploaded_at": iso(photo.uploaded_at),
        "image_url": f"/api/photo/{photo.id}",
        "thumb_url": f"/api/photo/{photo.id}/thumb",
    }


@api(
    "Upload one or many photos (multipart form fields named files)",
    auth="event organiser",
    content_type="multipart/form-data",
    body={"files": "binary[]"},
    responses={
        202: '{"results":[{filename,status,photo_id,job_id,error,detail}]}',
        400: "no files, malformed or damaged file",
        403: "not the organiser",
        404: "unknown event",
        413: "file or request too large",
        415: "not a supported image type",
    },
)
async def upload_photos(request: Request) -> Response:
    principal = await require_user(request, Role.photographer)
    state = app_state(request)
    await state.limits.hit("upload", str(principal.id))
    settings = state.settings
    async with state.db.sessions() as session:
        event, _ = await event_for(
            state, session, principal, path_id(request, "event_id"), organiser=True
        )
    received: list[tuple[ReceivedFile, PreparedImage | FindMeError]] = []
    try:
        async for upload in receive_files(
            request,
            tmp_dir=settings.data_dir / "tmp",
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_request_bytes,
            max_files=settings.max_files_per_request,
        ):
            received.append((upload, await _prepare(upload, state)))
        if not received:
            raise NoFiles()
        # Stored only once the whole request has arrived: an interrupted or oversize request
        # leaves nothing behind.
        results = [
            await _store(state, principal, event.id, upload, prepared)
            if isinstance(prepared, PreparedImage)
            else _rejected(upload, prepared)
            for upload, prepared in received
        ]
    finally:
        for upload, _ in received:
            await _remove(upload.path)
    if state.pipeline is not None:
        state.pipeline.notify()
    outcome = {"results": results}
    if all(result["status"] == "rejected" for result in results):
        first = next(error for _, error in received if isinstance(error, FindMeError))
        return json_response(
            {"error": first.code, "detail": first.detail, **outcome}, first.status_code
        )
    return json_response(outcome, 202)


async def _prepare(upload: ReceivedFile, state: AppState) -> PreparedImage | FindMeError:
    settings = state.settings
    if upload.too_large:
        return FileTooLarge(
            f"{upload.filename} is larger than {settings.max_upload_bytes // (1024 * 1024)} MB. "
            "Export it at a smaller size and send it again."
        )
    try:
        return await asyncio.to_thread(
            prepare_upload,
            upload.path,
            max_pixels=settings.max_image_pixels,
            thumbnail_px=settings.thumbnail_px,
        )
    except FindMeError as error:
        return error
    except Exception:
        logger.info("unreadable upload", extra={"action": "upload_rejected"}, exc_info=True)
        return CorruptImage()


def _rejected(upload: ReceivedFile, error: FindMeError) -> dict[str, Any]:
    return {
        "filename": upload.filename,
        "status": "rejected",
        "photo_id": None,
        "job_id": None,
        "error": error.code,
        "detail": error.detail,
    }


async def _store(
    state: AppState,
    principal: Principal,
    event_id: int,
    upload: ReceivedFile,
    prepared: PreparedImage,
) -> dict[str, Any]:
    outcome: dict[str, Any] = {"filename": upload.filename, "error": None, "detail": None}
    existing = await _existing_photo(state, event_id, upload.sha256)
    if existing is None:
        try:
            async with state.store_slots, state.db.transaction() as session:
                async with aiofiles.open(upload.path, "rb") as source:
                    original = await source.read()
                photo = Photo(
                    event_id=event_id,
                    uploader_id=principal.id,
                    filename=upload.filename,
                    sha256=upload.sha256,
                    content_type=prepared.content_type,
                    size_bytes=len(original),
                    width=prepared.width,
                    height=prepared.height,
                )
                session.add(photo)
                await session.flush()
                await state.storage.save(
                    session, photo_id=photo.id, original=original, thumbnail=prepared.thumbnail
                )
                job = await jobs.enqueue_photo(session, photo_id=photo.id, event_id=event_id)
            return outcome | {"status": "created", "photo_id": photo.id, "job_id": job.id}
        except AlreadyExists:
            # Another request stored the same bytes first: the unique constraint decided.
            existing = await _existing_photo(state, event_id, upload.sha256)
    if existing is None:
        raise AlreadyExists("This photo could not be stored. Send it again.")
    return outcome | {"status": "duplicate", "photo_id": existing, "job_id": None}


async def _existing_photo(state: AppState, event_id: int, sha256: str) -> int | None:
    async with state.db.sessions() as session:
        found: int | None = await session.scalar(
            select(Photo.id).where(Photo.event_id == event_id, Photo.sha256 == sha256)
        )
        return found


async def _remove(path: Path) -> None:
    try:
        await aiofiles.os.remove(path)
    except FileNotFoundError:
        pass


async def viewable_photo(
    state: AppState, session: AsyncSession, principal: Principal, photo_id: int
) -> Photo:
    """The photo if the caller may see it: its event's organiser, a member, or an admin."""
    photo = await session.get(Photo, photo_id)
    if photo is None:
        raise NotFound("There is no photo with this id.")
    await event_for(state, session, principal, photo.event_id)
    return photo


def _not_modified(request: Request, etag: str) -> Response | None:
    sent = request.headers.get("if-none-match", "")
    if etag in {tag.strip() for tag in sent.split(",")} or sent.strip() == "*":
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})
    return None


def _disposition(filename: str, *, download: bool) -> str:
    fallback = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    kind = "attachment" if download else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


@api(
    "A photo's original bytes (also at /api/image/{photo_id})",
    query={"download": "1 to download instead of display"},
    responses={200: "image bytes", 304: "not modified", 403: "not allowed", 404: "unknown"},
    content_type="image/*",
)
async def photo_original(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        photo = await viewable_photo(state, session, principal, path_id(request, "photo_id"))
    etag = f'"{photo.sha256}"'
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "Content-Length": str(photo.size_bytes),
        "Content-Disposition": _disposition(
            photo.filename, download=request.query_params.get("download") == "1"
        ),
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(
        state.storage.stream_original(photo.id, size_bytes=photo.size_bytes),
        media_type=photo.content_type,
        headers=headers,
    )


@api(
    "A photo's thumbnail for grids (JPEG)",
    responses={200: "image/jpeg", 304: "not modified", 403: "not allowed", 404: "unknown"},
    content_type="image/jpeg",
)
async def photo_thumbnail(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        photo = await viewable_photo(state, session, principal, path_id(request, "photo_id"))
    etag = f'"{photo.sha256}-thumb"'
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    data = await state.storage.read_thumbnail(photo.id)
    if data is None:
        raise NotFound("This photo has no thumbnail yet.")
    return Response(
        data,
        media_type="image/jpeg",
        headers={"ETag": etag, "Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"},
    )


@api("Delete a photo", auth="event organiser", responses={204: "deleted"})
async def delete_photo(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    photo_id = path_id(request, "photo_id")
    async with state.db.transaction() as session:
        photo = await session.get(Photo, photo_id)
        if photo is None:
            raise NotFound("There is no photo with this id.")
        await event_for(state, session, principal, photo.event_id, organiser=True)
        if state.rekognition is not None:
            await state.rekognition.forget_photo(session, photo_id)
        matched = set(
            await session.scalars(select(FaceMatch.user_id).where(FaceMatch.photo_id == photo_id))
        )
        await session.execute(delete(Photo).where(Photo.id == photo_id))
    await state.storage.delete([photo_id])
    await state.on_matches_changed(matched)
    return Response(status_code=204)


@api(
    "Not me: remove my match to this photo, for good",
    auth="attendee",
    responses={204: "removed"},
)
async def not_me(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.transaction() as session:
        photo = await viewable_photo(state, session, principal, path_id(request, "photo_id"))
        await session.execute(
            delete(FaceMatch).where(
                FaceMatch.photo_id == photo.id, FaceMatch.user_id == principal.id
            )
        )
        if await session.get(RejectedMatch, (photo.id, principal.id)) is None:
            session.add(RejectedMatch(photo_id=photo.id, user_id=principal.id))
    await state.on_matches_changed({principal.id})
    return Response(status_code=204)


def _page(request: Request) -> tuple[int | None, int, int]:
    params = request.query_params
    event_id = params.get("event_id")
    return (
        None if not event_id else int_param(event_id, "event_id"),
        int_param(params.get("cursor"), "cursor", default=0),
        int_param(params.get("limit"), "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE) or 1,
    )


def _visible_events(principal: Principal) -> Select[Any]:
    member_of = select(EventMember.event_id).where(EventMember.user_id == principal.id)
    if principal.is_admin:
        return select(Event.id)
    return select(Event.id).where((Event.organiser_id == principal.id) | Event.id.in_(member_of))


@api(
    "The event gallery, paged by cursor; metadata only",
    query={"event_id": "event (optional)", "cursor": "next_cursor", "limit": "1-200"},
    responses={200: '{"items":[photo],"next_cursor"}'},
)
async def all_photos(request: Request) -> Response:
    principal = await require_user(request)
    event_id, cursor, limit = _page(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        query = select(*PHOTO_COLUMNS).where(Photo.id > cursor)
        if event_id is not None:
            await event_for(state, session, principal, event_id)
            query = query.where(Photo.event_id == event_id)
        else:
            query = query.where(Photo.event_id.in_(_visible_events(principal)))
        rows = (await session.execute(query.order_by(Photo.id).limit(limit + 1))).all()
    return json_response(_paged([photo_json(row) for row in rows], limit))


def _paged(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if more else None}


@api(
    "Photos I appear in, paged by cursor; metadata only",
    auth="attendee",
    query={"event_id": "event (optional)", "cursor": "next_cursor", "limit": "1-200"},
    responses={200: '{"items":[photo + faces, matched_at],"next_cursor"}'},
)
async def my_photos(request: Request) -> Response:
    principal = await require_user(request)
    event_id, cursor, limit = _page(request)
    state = app_state(request)

    async def load() -> bytes:
        async with state.db.sessions() as session:
            if event_id is not None:
                await event_for(state, session, principal, event_id)
            items = await my_photo_items(
                session, user_id=principal.id, event_id=event_id, cursor=cursor, limit=limit + 1
            )
        return json_bytes(_paged(items, limit))

    # Cached as encoded JSON: a hit costs no query and no serialisation.
    page = await state.caches.my_photos.get((principal.id, event_id, cursor, limit), load)
    return Response(page, media_type="application/json")


async def my_photo_items(
    session: AsyncSession, *, user_id: int, event_id: int | None, cursor: int, limit: int
) -> list[dict[str, Any]]:
    faces = select(func.count()).where(Face.photo_id == Photo.id).scalar_subquery()
    query = (
        select(*PHOTO_COLUMNS, FaceMatch.matched_at, faces.label("faces"))
        .join(FaceMatch, FaceMatch.photo_id == Photo.id)
        .where(FaceMatch.user_id == user_id, Photo.id > cursor)
    )
    if event_id is not None:
        query = query.where(FaceMatch.event_id == event_id)
    rows = (await session.execute(query.order_by(Photo.id).limit(limit))).all()
    return [
        photo_json(row) | {"matched_at": iso(row.matched_at), "faces": row.faces} for row in rows
    ]


routes = [
    Route("/api/photographer/events/{event_id}/upload-photos", upload_photos, methods=["POST"]),
    Route("/api/all-photos", all_photos, methods=["GET"]),
    Route("/api/my-photos", my_photos, methods=["GET"]),
    Route("/api/photo/{photo_id}", photo_original, methods=["GET"]),
    Route("/api/image/{photo_id}", photo_original, methods=["GET"]),
    Route("/api/photo/{photo_id}/thumb", photo_thumbnail, methods=["GET"]),
    Route("/api/photo/{photo_id}/not-me", not_me, methods=["POST"]),
    Route("/api/photo/{photo_id}", delete_photo, methods=["DELETE"]),
]
