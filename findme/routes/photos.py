"""Photo lists (the gallery, my photos), deletion and "not me"."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import ID, Param, Reply, integer, ref
from findme.cache import gallery_key
from findme.domain import photos
from findme.domain.access import event_for, gallery_member, viewable_photo
from findme.routes.common import (
    api,
    app_state,
    int_param,
    json_bytes,
    json_response,
    path_id,
    require_user,
)

DEFAULT_PAGE = 50
MAX_PAGE = 200
_PAGE_QUERY = {
    "event_id": Param("only this event's photos", ID),
    "cursor": Param("the next_cursor of the previous page", integer(minimum=0, default=0)),
    "limit": Param(
        "at most this many photos",
        integer(minimum=1, maximum=MAX_PAGE, default=DEFAULT_PAGE),
    ),
}


def _page(request: Request) -> tuple[int | None, int, int]:
    params = request.query_params
    event_id = params.get("event_id")
    return (
        None if not event_id else int_param(event_id, "event_id"),
        int_param(params.get("cursor"), "cursor", default=0),
        int_param(params.get("limit"), "limit", default=DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE),
    )


def _paged(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if more else None}


@api(
    "The photos I may see of an event (or of every event), paged by cursor; metadata only. "
    "A member of an event whose gallery is 'own' sees the photos they are matched to",
    query=_PAGE_QUERY,
    responses={
        200: Reply("a page of photos", ref("PhotoPage")),
        404: "no such event, or not one of mine",
    },
)
async def all_photos(request: Request) -> Response:
    principal = await require_user(request)
    event_id, cursor, limit = _page(request)
    state = app_state(request)
    if event_id is None:
        # Every event at once is not cached: no one event's news says when it changes.
        async with state.db.reads() as session:
            items = await photos.gallery_items(
                session, principal, event_id=None, cursor=cursor, limit=limit + 1
            )
        return json_response(_paged(items, limit))
    # Who may see what is checked on every request, cached or not (see `gallery_member`).
    member_id = await gallery_member(state, principal, event_id)

    async def load() -> bytes:
        async with state.db.reads() as session:
            items = await photos.event_gallery_items(
                session, event_id=event_id, member_id=member_id, cursor=cursor, limit=limit + 1
            )
        return json_bytes(_paged(items, limit))

    key = gallery_key(event_id=event_id, member_id=member_id, cursor=cursor, limit=limit)
    page = await state.caches.all_photos.get(key, load)
    return Response(page, media_type="application/json")


@api(
    "Photos I appear in, paged by cursor; metadata only",
    query=_PAGE_QUERY,
    responses={
        200: Reply("a page of my photos", ref("MyPhotoPage")),
        404: "no such event, or not one of mine",
    },
)
async def my_photos(request: Request) -> Response:
    principal = await require_user(request)
    event_id, cursor, limit = _page(request)
    state = app_state(request)

    async def load() -> bytes:
        async with state.db.reads() as session:
            items = await photos.my_photo_items(
                session, user_id=principal.id, event_id=event_id, cursor=cursor, limit=limit + 1
            )
            # Matches are made for members only and go with the membership: a page that has
            # some is the caller's to see. An empty one may be an event they cannot see (404).
            if not items and event_id is not None:
                await event_for(state, session, principal, event_id)
        return json_bytes(_paged(items, limit))

    # Cached as encoded JSON: a hit costs no query and no serialisation.
    page = await state.caches.my_photos.get((principal.id, event_id, cursor, limit), load)
    return Response(page, media_type="application/json")


@api(
    "Delete a photo",
    auth="its event's organiser, or an admin",
    responses={
        204: "deleted",
        403: "a member of its event, not its organiser",
        404: "no such photo",
    },
)
async def delete_photo(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        photo = await viewable_photo(
            state, session, principal, path_id(request, "photo_id"), organiser=True
        )
    await photos.delete_photo(state, photo_id=photo.id, event_id=photo.event_id)
    return Response(status_code=204)


@api(
    "Not me: remove my match to this photo, for good",
    auth="a member of its event",
    responses={204: "removed", 404: "no such photo"},
)
async def not_me(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        photo = await viewable_photo(state, session, principal, path_id(request, "photo_id"))
    await photos.reject_match(state, photo_id=photo.id, user_id=principal.id)
    return Response(status_code=204)


routes = [
    Route("/api/all-photos", all_photos, methods=["GET"]),
    Route("/api/my-photos", my_photos, methods=["GET"]),
    Route("/api/photo/{photo_id}/not-me", not_me, methods=["POST"]),
    Route("/api/photo/{photo_id}", delete_photo, methods=["DELETE"]),
]
