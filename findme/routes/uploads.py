"""Uploads: many photos per request, streamed to disk, stored once the request is complete."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import Body, Reply, ref
from findme.db import Role
from findme.domain.access import event_for
from findme.domain.photos import store_photos
from findme.errors import BadRequest, FindMeError, TooLarge
from findme.images import CheckedImage, CorruptImage, check_upload
from findme.routes.common import api, app_state, json_response, path_id, require_user
from findme.services import AppState
from findme.uploads import ReceivedFile, receive_files, remove_file

logger = logging.getLogger(__name__)


class FileTooLarge(TooLarge):
    code = "file_too_large"


class NoFiles(BadRequest):
    """The request holds no files. Send the photos as form fields named files."""

    code = "no_files"


@api(
    "Upload one or many photos (multipart form fields named files)",
    auth="event organiser",
    body=Body(ref("PhotoUpload"), media_type="multipart/form-data"),
    responses={
        202: Reply(
            "stored and queued (or a duplicate, or rejected), file by file",
            ref("UploadResults"),
        ),
        400: "no files, or every file is damaged (with each file's result)",
        403: "not a photographer, or not the event's organiser",
        404: "no such event",
        413: "the request, or every file, is too large",
        415: "no file is a supported image type (JPEG, PNG, WebP, HEIC)",
        429: "too many upload requests; see Retry-After",
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
    received: list[tuple[ReceivedFile, CheckedImage | FindMeError]] = []
    try:
        async for upload in receive_files(
            request,
            tmp_dir=settings.data_dir / "tmp",
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_request_bytes,
            max_files=settings.max_files_per_request,
        ):
            received.append((upload, await _check(upload, state)))
        if not received:
            raise NoFiles()
        # Stored only once the whole request has arrived: an interrupted or oversize request
        # leaves nothing behind.
        accepted = [
            (upload, checked)
            for upload, checked in received
            if not isinstance(checked, FindMeError)
        ]
        stored = iter(
            await store_photos(state, uploader_id=principal.id, event_id=event.id, uploads=accepted)
        )
        results = [
            _rejected(upload, checked) if isinstance(checked, FindMeError) else next(stored)
            for upload, checked in received
        ]
    finally:
        for upload, _ in received:
            await remove_file(upload.path)
    outcome = {"results": results}
    if all(result["status"] == "rejected" for result in results):
        first = next(error for _, error in received if isinstance(error, FindMeError))
        return json_response(
            {"error": first.code, "detail": first.detail, **outcome}, first.status_code
        )
    return json_response(outcome, 202)


async def _check(upload: ReceivedFile, state: AppState) -> CheckedImage | FindMeError:
    settings = state.settings
    if upload.too_large:
        return FileTooLarge(
            f"{upload.filename} is larger than {settings.max_upload_bytes // (1024 * 1024)} MB. "
            "Export it at a smaller size and send it again."
        )
    try:
        return await asyncio.to_thread(
            check_upload, upload.path, max_pixels=settings.max_image_pixels
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


routes = [
    Route("/api/photographer/events/{event_id}/upload-photos", upload_photos, methods=["POST"]),
]
