"""Images: a photo's original and its thumbnail, for those who may see the photo."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from findme.api_schemas import BINARY, DOWNLOAD, Reply
from findme.db import Photo
from findme.domain.access import viewable_photo
from findme.images import CONTENT_TYPES, placeholder_thumbnail
from findme.routes.common import api, app_state, path_id, require_user
from findme.routes.files import IMMUTABLE, content_disposition, not_modified
from findme.services import AppState

_CACHED = {"ETag": "the bytes' hash", "Cache-Control": IMMUTABLE}


@api(
    "A photo's original bytes (also at /api/image/{photo_id})",
    auth="its event's organiser, an admin, or a member its gallery setting lets see it",
    query={"download": DOWNLOAD},
    responses={
        200: Reply(
            "the photo as uploaded (GPS blanked)",
            BINARY,
            media_type=tuple(sorted(set(CONTENT_TYPES.values()))),
            headers=_CACHED,
        ),
        304: "not modified (If-None-Match)",
        404: "no such photo, or not one I may see",
    },
)
async def photo_original(request: Request) -> Response:
    state, photo = await _viewable_photo(request)
    etag = f'"{photo.sha256}"'
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "Content-Length": str(photo.size_bytes),
        "Content-Disposition": content_disposition(
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
    auth="its event's organiser, an admin, or a member its gallery setting lets see it",
    responses={
        200: Reply(
            "the thumbnail, with its ETag; until the photo's job has made it (or if the photo "
            "could not be decoded), a plain placeholder tile",
            BINARY,
            media_type="image/jpeg",
            headers={"Cache-Control": f"{IMMUTABLE} (the placeholder: no-store)"},
        ),
        304: "not modified (If-None-Match)",
        404: "no such photo, or not one I may see",
    },
)
async def photo_thumbnail(request: Request) -> Response:
    state, photo = await _viewable_photo(request)
    etag = f'"{photo.sha256}-thumb"'
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    data = await state.storage.read_thumbnail(photo.id)
    if data is None:
        # The job makes the thumbnail from the decode it needs for the faces. Until then a grid
        # shows an empty tile, fetched again next time (no ETag, no-store) rather than kept.
        return Response(
            placeholder_thumbnail(),
            media_type="image/jpeg",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )
    return Response(
        data,
        media_type="image/jpeg",
        headers={"ETag": etag, "Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"},
    )


async def _viewable_photo(request: Request) -> tuple[AppState, Photo]:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        photo = await viewable_photo(state, session, principal, path_id(request, "photo_id"))
    return state, photo


routes = [
    Route("/api/photo/{photo_id}", photo_original, methods=["GET"]),
    Route("/api/image/{photo_id}", photo_original, methods=["GET"]),
    Route("/api/photo/{photo_id}/thumb", photo_thumbnail, methods=["GET"]),
]
