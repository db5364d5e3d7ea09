"""Share links: made, listed and turned off by their owner; opened by anyone who has one."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from findme.api_schemas import Reply, ref
from findme.domain import shares
from findme.domain.access import NO_PHOTO
from findme.domain.views import iso
from findme.routes.common import api, app_state, json_response, path_id, require_user, site_url
from findme.routes.files import content_disposition, not_modified

templates = Jinja2Templates(directory=Path(__file__).resolve().parents[2] / "templates")

# The shared page is public and needs no script: its policy allows its stylesheet and the
# photo only. No referrer leaves it (the token is in its address), and no search engine keeps it.
SHARED_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}
# Kept by browsers but checked again on every use (a 304 while the link is on), so a link
# turned off stops showing the photo even where it was opened before.
SHARED_IMAGE_CACHE = "private, no-cache"


@api(
    "Make a private link to a photo: anyone who has it sees the photo, until I turn it off",
    auth="its event's organiser, an admin, or a member its gallery setting lets see it",
    responses={
        201: Reply("the link (its token is shown this once)", ref("NewShareLink")),
        404: NO_PHOTO,
        429: "too many share links made from this account; see Retry-After",
    },
)
async def create_share_link(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    photo_id = path_id(request, "photo_id")
    await state.limits.hit("share_links", str(principal.id))
    link, token = await shares.create_link(state, principal, photo_id)
    url = f"{site_url(request)}/s/{token}"
    return json_response({"id": link.id, "url": url, "created_at": iso(link.created_at)}, 201)


@api(
    "List my share links (never their tokens), newest first",
    responses={200: Reply("my share links, with how often each was opened", ref("ShareLinks"))},
)
async def list_share_links(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        items = await shares.links_of(session, principal.id)
    return json_response({"items": items})


@api(
    "Turn off one of my share links: it opens nothing from now on",
    responses={204: "turned off", 404: "I have no share link with this id"},
)
async def revoke_share_link(request: Request) -> Response:
    principal = await require_user(request)
    link_id = path_id(request, "share_link_id")
    async with app_state(request).db.transaction() as session:
        await shares.revoke_link(session, link_id=link_id, user_id=principal.id)
    return Response(status_code=204)


async def shared_page(request: Request) -> Response:
    """The photo and its event's name, for anyone with the link, signed in or not."""
    token = request.path_params["token"]
    try:
        shared = await shares.open_link(app_state(request), token, count=request.method == "GET")
    except shares.ShareLinkGone as gone:
        return _page(request, title="This link does not work", gone=gone.detail, status_code=404)
    return _page(
        request,
        title=f"A photo from {shared.event_name}",
        photo=shared,
        image_url=f"/s/{token}/image",
        download_name=_download_name(shared),
    )


async def shared_image(request: Request) -> Response:
    """The shared photo's original bytes, as its event's members get them (GPS blanked at
    upload)."""
    state = app_state(request)
    shared = await shares.open_link(state, request.path_params["token"], count=False)
    etag = f'"{shared.sha256}"'
    response = not_modified(request, etag)
    if response is None:
        response = StreamingResponse(
            state.storage.stream_original(shared.photo_id, size_bytes=shared.size_bytes),
            media_type=shared.content_type,
            headers={
                "ETag": etag,
                "Content-Length": str(shared.size_bytes),
                "Content-Disposition": content_disposition(
                    _download_name(shared), download=request.query_params.get("download") == "1"
                ),
                "X-Content-Type-Options": "nosniff",
            },
        )
    response.headers["Cache-Control"] = SHARED_IMAGE_CACHE
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _page(request: Request, *, title: str, status_code: int = 200, **context: object) -> Response:
    return templates.TemplateResponse(
        request,
        "share.html",
        {"title": title, **context},
        status_code=status_code,
        headers=SHARED_PAGE_HEADERS,
    )


def _download_name(shared: shares.SharedPhoto) -> str:
    # Not the uploaded file's name: a photographer's names may say who is in the photo.
    extension = shared.content_type.partition("/")[2].replace("jpeg", "jpg")
    return f"photo.{extension}"


routes = [
    Route("/api/photos/{photo_id}/share-links", create_share_link, methods=["POST"]),
    Route("/api/share-links", list_share_links, methods=["GET"]),
    Route("/api/share-links/{share_link_id}", revoke_share_link, methods=["DELETE"]),
    Route("/s/{token}", shared_page, methods=["GET"]),
    Route("/s/{token}/image", shared_image, methods=["GET"]),
]
