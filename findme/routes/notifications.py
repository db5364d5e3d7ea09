"""New-photo emails: a member's setting per event, and the unsubscribe link's two ways in."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import Body, Reply, ref
from findme.auth import check_origin
from findme.domain import notifications
from findme.domain.access import NO_EVENT
from findme.errors import BadRequest
from findme.routes.common import (
    api,
    app_state,
    json_response,
    path_id,
    read_json,
    require_user,
    text_field,
)

# A one-click body is one short field; anything much longer is not one.
MAX_ONE_CLICK_BYTES = 1024
_INVALID_LINK = "the link is forged, damaged or not one of ours"


@api(
    "Whether I get an email when new photos of me arrive in this event",
    auth="a member of the event",
    responses={
        200: Reply(
            "my setting, and whether this server can send email", ref("NotificationSetting")
        ),
        403: "the caller sees the event but is not a member (its organiser)",
        404: NO_EVENT,
    },
)
async def get_setting(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    on = await notifications.member_setting(state, principal, path_id(request, "event_id"))
    return _setting(request, on)


@api(
    "Turn on or off the email when new photos of me arrive in this event (at most one an hour; "
    "turned on, it counts from the photos I have now)",
    auth="a member of the event",
    body=Body(ref("NotificationChange")),
    responses={
        200: Reply("my setting, changed", ref("NotificationSetting")),
        400: "'new_photos' is not true or false",
        403: "the caller sees the event but is not a member (its organiser)",
        404: NO_EVENT,
        409: "turning on, and this server cannot send email",
    },
)
async def change_setting(request: Request) -> Response:
    principal = await require_user(request)
    event_id = path_id(request, "event_id")
    wanted = (await read_json(request)).get("new_photos")
    if not isinstance(wanted, bool):
        raise BadRequest("'new_photos' must be true or false.")
    on = await notifications.set_new_photos(app_state(request), principal, event_id, on=wanted)
    return _setting(request, on)


def _setting(request: Request, on: bool) -> Response:
    state = app_state(request)
    available = notifications.available(state.mailer, state.settings)
    return json_response({"new_photos": on, "available": available})


@api(
    "Stop the new-photo emails an unsubscribe link names (the button of its page)",
    auth="anyone with the link: its token is the authority",
    body=Body(ref("UnsubscribeRequest")),
    responses={
        200: Reply("turned off: a sentence that names the event", ref("Detail")),
        400: _INVALID_LINK,
    },
)
async def unsubscribe(request: Request) -> Response:
    check_origin(request)
    token = text_field(await read_json(request), "token", max_chars=notifications.MAX_TOKEN_CHARS)
    return await _unsubscribed(request, token)


@api(
    "One-click unsubscribe (RFC 8058): what mail programs POST to the List-Unsubscribe address",
    auth="anyone with the link: its token is the authority",
    body=Body(ref("OneClickUnsubscribe"), media_type="application/x-www-form-urlencoded"),
    responses={
        200: Reply("turned off: a sentence that names the event", ref("Detail")),
        400: f"{_INVALID_LINK}, or the body is not List-Unsubscribe=One-Click",
    },
)
async def one_click_unsubscribe(request: Request) -> Response:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_ONE_CLICK_BYTES:
        raise BadRequest("Send only List-Unsubscribe=One-Click.")
    async with request.form(max_files=0, max_fields=4) as form:
        if form.get("List-Unsubscribe") != "One-Click":
            raise BadRequest("Send List-Unsubscribe=One-Click as a form.")
    return await _unsubscribed(request, request.path_params["token"])


async def _unsubscribed(request: Request, token: str) -> Response:
    event_name = await notifications.unsubscribe(app_state(request), token)
    return json_response({"detail": notifications.unsubscribed_sentence(event_name)})


routes = [
    Route("/api/events/{event_id}/notifications", get_setting, methods=["GET"]),
    Route("/api/events/{event_id}/notifications", change_setting, methods=["PUT"]),
    Route("/api/unsubscribe", unsubscribe, methods=["POST"]),
    Route("/api/unsubscribe/{token}", one_click_unsubscribe, methods=["POST"]),
]
