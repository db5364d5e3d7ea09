"""Biometric data: the selfie (with consent) and erasure of everything an account holds."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import BINARY, Body, Reply, ref
from findme.domain.accounts import (
    MAX_SELFIES,
    add_selfie,
    erase_user,
    list_selfies,
    remove_selfie,
    selfie_image,
    set_selfie,
)
from findme.domain.views import iso
from findme.images import thumbnail_of
from findme.routes.common import (
    api,
    app_state,
    json_response,
    path_id,
    received_selfie,
    require_user,
)

# The selfie page shows them as 96 px circles; twice that for sharp phone screens.
SELFIE_THUMBNAIL_PX = 192


_SELFIE = Body(ref("SelfieUpload"), media_type="multipart/form-data")
_SELFIE_ERRORS: dict[int, Reply | str] = {
    400: "no consent (consent_required), no file, or a damaged file",
    413: "too large",
    415: "not a supported image type",
    422: "no_face or several_faces",
    429: "too many selfies; see Retry-After",
}


@api(
    "Set my selfie, replacing any others (consent required); re-matches me in every event",
    body=_SELFIE,
    responses={200: Reply("my selfie is set", ref("SelfieSet")), **_SELFIE_ERRORS},
)
async def put_selfie(request: Request) -> Response:
    principal = await require_user(request)
    data = await received_selfie(request, limit=("selfie", str(principal.id)))
    consent_at = await set_selfie(app_state(request), user_id=principal.id, data=data)
    return json_response({"has_selfie": True, "consent_at": iso(consent_at)})


@api(
    f"Add one more selfie, up to {MAX_SELFIES} (consent required); matching takes the nearest",
    body=_SELFIE,
    responses={
        201: Reply("my selfies now", ref("SelfieAdded")),
        409: f"{MAX_SELFIES} selfies already",
        **_SELFIE_ERRORS,
    },
)
async def add_my_selfie(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    data = await received_selfie(request, limit=("selfie", str(principal.id)))
    consent_at = await add_selfie(state, user_id=principal.id, data=data)
    async with state.db.sessions() as session:
        items = await list_selfies(session, principal.id)
    return json_response({"items": items, "consent_at": iso(consent_at)}, 201)


@api("My selfies (never anyone else's)", responses={200: Reply("oldest first", ref("Selfies"))})
async def my_selfies(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        items = await list_selfies(session, principal.id)
    return json_response({"items": items})


@api(
    "One of my selfies, as a small JPEG for my selfie page",
    responses={
        200: Reply(
            "a JPEG around the face",
            BINARY,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, no-store"},
        ),
        404: "I have no selfie with this id",
    },
)
async def my_selfie_image(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        data, face = await selfie_image(
            session, user_id=principal.id, selfie_id=path_id(request, "selfie_id")
        )
    thumbnail = await asyncio.to_thread(
        thumbnail_of, data, size_px=SELFIE_THUMBNAIL_PX, around=face
    )
    # Biometric data: kept by no cache, sniffed as nothing but an image.
    return Response(
        thumbnail,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


@api(
    "Remove one of my selfies; re-matches me with those left (none left: my matches go, "
    "but those I confirmed)",
    responses={204: "removed", 404: "I have no selfie with this id"},
)
async def delete_my_selfie(request: Request) -> Response:
    principal = await require_user(request)
    await remove_selfie(
        app_state(request), user_id=principal.id, selfie_id=path_id(request, "selfie_id")
    )
    return Response(status_code=204)


@api(
    "Erase my account: selfie, face data, matches, rejections, sessions and tokens",
    responses={204: "erased"},
)
async def erase_me(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    await erase_user(state, principal.id)
    response = Response(status_code=204)
    state.auth.clear_cookie(response)
    return response


routes = [
    Route("/api/me/selfie", put_selfie, methods=["PUT"]),
    Route("/api/me/selfies", my_selfies, methods=["GET"]),
    Route("/api/me/selfies", add_my_selfie, methods=["POST"]),
    Route("/api/me/selfies/{selfie_id}/image", my_selfie_image, methods=["GET"]),
    Route("/api/me/selfies/{selfie_id}", delete_my_selfie, methods=["DELETE"]),
    Route("/api/me", erase_me, methods=["DELETE"]),
]
