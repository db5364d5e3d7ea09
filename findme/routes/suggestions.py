""" "Is this you?": my suggestions in an event, the face each shows, and my answer."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import BINARY, Body, Reply, ref
from findme.domain.suggestions import answer_suggestion, my_suggestions, suggested_face
from findme.errors import BadRequest
from findme.images import thumbnail_of
from findme.routes.common import (
    api,
    app_state,
    json_response,
    path_id,
    read_json,
    require_user,
)

# Grid tiles are at most ~180 px wide; twice that for sharp phone screens.
FACE_TILE_PX = 360
# The face fills most of the tile: a little of the hair, little of the people beside it.
FACE_SHARE = 0.7
ANSWERS = {"yes": True, "no": False}


@api(
    '"Is this you?": faces of the event just beyond the match threshold, offered to me to '
    "confirm; their photos are not mine to see until I say yes",
    auth="a member of the event",
    responses={
        200: Reply("my suggestions, oldest first", ref("Suggestions")),
        404: "no such event, or I did not join it",
    },
)
async def list_suggestions(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        items = await my_suggestions(
            session, user_id=principal.id, event_id=path_id(request, "event_id")
        )
    return json_response({"items": items})


@api(
    "The face a suggestion of mine shows, cut from its photo (JPEG)",
    auth="the suggestion's member",
    responses={
        200: Reply(
            "a square JPEG around the face",
            BINARY,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, no-store"},
        ),
        404: "no such suggestion of mine (or it was answered)",
    },
)
async def suggestion_face(request: Request) -> Response:
    principal = await require_user(request)
    original, box = await suggested_face(
        app_state(request), user_id=principal.id, suggestion_id=path_id(request, "suggestion_id")
    )
    tile = await asyncio.to_thread(
        thumbnail_of, original, size_px=FACE_TILE_PX, around=box, face_share=FACE_SHARE
    )
    # A face is biometric data: kept by no cache, sniffed as nothing but an image.
    return Response(
        tile,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


@api(
    'Answer a suggestion: "yes" makes the photo one of mine, "no" keeps it from me for good',
    auth="the suggestion's member",
    body=Body(ref("SuggestionAnswer")),
    responses={
        200: Reply(
            "answered; the suggestion is gone. After yes, the photo as my photos list it",
            ref("SuggestionAnswered"),
        ),
        400: "the answer is neither yes nor no",
        404: "no such suggestion of mine, or it was already answered",
    },
)
async def answer(request: Request) -> Response:
    principal = await require_user(request)
    suggestion_id = path_id(request, "suggestion_id")
    body = await read_json(request)
    its_me = ANSWERS.get(body["answer"]) if isinstance(body.get("answer"), str) else None
    if its_me is None:
        raise BadRequest('\'answer\' must be "yes" (it is me) or "no" (it is not).')
    photo = await answer_suggestion(
        app_state(request), user_id=principal.id, suggestion_id=suggestion_id, its_me=its_me
    )
    return json_response({"photo": photo})


routes = [
    Route("/api/events/{event_id}/suggestions", list_suggestions, methods=["GET"]),
    Route("/api/suggestions/{suggestion_id}/face", suggestion_face, methods=["GET"]),
    Route("/api/suggestions/{suggestion_id}", answer, methods=["POST"]),
]
