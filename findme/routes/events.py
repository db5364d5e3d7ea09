"""Events: create, join by code, list, show, change, new code, progress, delete."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme.api_schemas import (
    COUNT,
    ID,
    Body,
    Param,
    Reply,
    enum,
    integer,
    nullable,
    obj,
    ref,
)
from findme.db import Gallery, JobStatus, Joining, PhotoStatus, Role
from findme.domain import events, oversight
from findme.domain.access import event_for
from findme.domain.views import event_json, job_link
from findme.errors import BadRequest, Conflict
from findme.routes.common import (
    api,
    app_state,
    int_param,
    json_response,
    path_id,
    read_json,
    require_user,
    text_field,
)

# The organiser's view of a photo: its processing, faces, and latest job.
_PHOTO_STATUS_PAGE = obj(
    {
        "items": {
            "type": "array",
            "items": {
                "allOf": [
                    ref("Photo"),
                    obj(
                        {
                            "faces": COUNT,
                            "job": nullable(
                                obj(
                                    {
                                        "id": ID,
                                        "status": enum(JobStatus),
                                        "attempts": COUNT,
                                        "max_attempts": COUNT,
                                        "error": nullable({"type": "string"}),
                                    }
                                )
                            ),
                        }
                    ),
                ]
            },
        },
        "next_cursor": {"type": ["string", "null"], "pattern": "^[0-9]+$"},
        "counts": obj({"photos": COUNT, **{status.value: COUNT for status in PhotoStatus}}),
    }
)


@api(
    "Create an event",
    body=Body(ref("EventRequest")),
    responses={
        201: Reply("the event, with its join code", ref("Event")),
        403: "not a photographer",
    },
)
async def create_event(request: Request) -> Response:
    principal = await require_user(request, Role.photographer)
    body = await read_json(request)
    name = text_field(body, "name", max_chars=200)
    date = _parse_date(body.get("date"))
    raw_gallery = body.get("gallery")
    gallery = Gallery.own if raw_gallery is None else _parse_gallery(raw_gallery)
    event = await events.create_event(
        app_state(request), principal, name=name, date=date, gallery=gallery
    )
    return json_response(event_json(event, role="organiser"), 201)


def _parse_gallery(raw: Any) -> Gallery:
    if not isinstance(raw, str) or raw not in {item.value for item in Gallery}:
        raise BadRequest(
            '\'gallery\' must be "own" (attendees see only their own photos) or "all" '
            "(everyone who joined sees all photos)."
        )
    return Gallery(raw)


def _parse_joining(raw: Any) -> Joining:
    if not isinstance(raw, str) or raw not in {item.value for item in Joining}:
        raise BadRequest(
            '\'joining\' must be "open" (anyone with the code may join) or "closed" (nobody '
            "new may join; members stay)."
        )
    return Joining(raw)


def _parse_expiry(raw: Any) -> dt.datetime | None:
    """An ISO 8601 date and time with its timezone (the server's clock zone is no guess for
    the organiser's), or null for a code that never expires."""
    if raw is None:
        return None
    wrong = BadRequest(
        "'code_expires_at' must be a date and time with its timezone, like "
        "2026-06-30T23:00:00+02:00, or null for a code that never expires."
    )
    if not isinstance(raw, str) or len(raw) > 64:
        raise wrong
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise wrong from None
    if when.tzinfo is None:
        raise wrong
    try:
        return when.astimezone(dt.UTC)
    except OverflowError:  # year 1 or 9999 pushed past the calendar by its offset
        raise wrong from None


def _parse_email_sign_in(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise BadRequest(
            "'email_sign_in' must be true (guests may sign in with a link sent by email) or "
            "false (they sign in with their password)."
        )
    return raw


# What PATCH /api/events/{id} may change, each with its check.
_SETTINGS = {
    "gallery": _parse_gallery,
    "joining": _parse_joining,
    "code_expires_at": _parse_expiry,
    "email_sign_in": _parse_email_sign_in,
}


def _parse_date(raw: Any) -> dt.date | None:
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise BadRequest("'date' must be a date like 2026-06-30.")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest("'date' must be a date like 2026-06-30.") from None


@api("Events I organise or joined", responses={200: Reply("newest first", ref("Events"))})
async def list_events(request: Request) -> Response:
    principal = await require_user(request)
    async with app_state(request).db.sessions() as session:
        rows = await events.events_of(session, principal.id)
    items = [event_json(row, role=events.role_of(row, principal.id)) for row in rows]
    return json_response({"items": items})


@api(
    "One event with its counts",
    auth="its organiser, a member, or an admin",
    responses={
        200: Reply("the event", ref("EventDetail")),
        404: "no such event",
    },
)
async def get_event(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, role = await event_for(state, session, principal, path_id(request, "event_id"))
        counts = await events.counts(session, event.id)
    return json_response({**event_json(event, role=role), "counts": counts})


@api(
    "Change an event's settings: who may browse its photos, whether newcomers may join, and "
    "when its code expires (a time already past stops the code at once)",
    auth="its organiser or an admin",
    body=Body(ref("EventChange")),
    responses={
        200: Reply("the event, changed", ref("Event")),
        403: "a member, not its organiser",
        404: "no such event",
        409: "email_sign_in asked for while email is not configured on the server",
    },
)
async def change_event(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    event_id = path_id(request, "event_id")
    body = await read_json(request)
    changes = {name: parse(body[name]) for name, parse in _SETTINGS.items() if name in body}
    if not changes:
        raise BadRequest(
            'Send a setting to change: \'gallery\' ("own" or "all"), \'joining\' ("open" or '
            "\"closed\"), 'code_expires_at' (a date and time with its timezone, or null) or "
            "'email_sign_in' (true or false)."
        )
    async with state.db.sessions() as session:
        event, role = await event_for(state, session, principal, event_id, organiser=True)
    if changes.get("email_sign_in") and not state.mailer.configured:
        raise Conflict(
            "Email is not configured on this FindMe server, so no sign-in link could be sent. "
            "Ask the people who run it to set FINDME_SMTP_HOST, then turn this on."
        )
    changed = await events.change_settings(state, event.id, changes)
    return json_response(event_json(changed, role=role))


@api(
    "Give the event a new join code: the old code, its link and QR code stop working at once "
    "(they answer as an unknown code does), members stay members, and the new code has no "
    "expiry",
    auth="its organiser or an admin",
    responses={
        201: Reply("the event, with its new code", ref("Event")),
        403: "a member, not its organiser",
        404: "no such event",
    },
)
async def replace_code(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, role = await event_for(
            state, session, principal, path_id(request, "event_id"), organiser=True
        )
    changed = await events.replace_code(state, event.id)
    return json_response(event_json(changed, role=role), 201)


@api(
    "Join an event with its code; answers with the job matching my selfie, to follow",
    body=Body(ref("JoinRequest")),
    responses={
        200: Reply("the event, and the job matching my selfie (null without one)", ref("Joined")),
        403: "not a member, and the event is closed to newcomers (joining_closed) or its code "
        "has expired (code_expired); a member joining again is let through",
        404: "no event has this code (a replaced code included)",
    },
)
async def join_event(request: Request) -> Response:
    principal = await require_user(request)
    raw_code = text_field(await read_json(request), "code", max_chars=32)
    event, job = await events.join_event(app_state(request), principal, raw_code)
    return json_response(
        {
            "event": event_json(event, role=events.role_of(event, principal.id)),
            "job": None if job is None else job_link(job),
        }
    )


@api(
    "Processing progress of an event (queued/running: every unfinished job, members' included)",
    auth="its organiser, a member, or an admin",
    responses={
        200: Reply("the counts", ref("Progress")),
        404: "no such event",
    },
)
async def event_progress(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, _ = await event_for(state, session, principal, path_id(request, "event_id"))
        return json_response(await events.progress(session, event.id))


@api(
    "Delete an event with its photos, faces and matches",
    auth="its organiser or an admin",
    responses={204: "deleted", 403: "a member, not its organiser", 404: "no such event"},
)
async def delete_event(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, _ = await event_for(
            state, session, principal, path_id(request, "event_id"), organiser=True
        )
    await events.delete_event(state, event.id)
    return Response(status_code=204)


@api(
    "The event's photos, newest first, each with its status, faces and latest job (whose "
    "error says why a failed photo failed), and the event's photos counted by status",
    auth="its organiser or an admin",
    query={
        "status": Param("only photos with this status", enum(PhotoStatus)),
        "cursor": Param("the next_cursor of the previous page", integer(minimum=0, default=0)),
        "limit": Param("at most this many photos", integer(minimum=1, maximum=200, default=50)),
    },
    responses={
        200: Reply("a page of photos, and the counts", _PHOTO_STATUS_PAGE),
        403: "a member, not its organiser",
        404: "no such event",
    },
)
async def event_photos(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    params = request.query_params
    raw_status = params.get("status") or None
    if raw_status is not None and raw_status not in {item.value for item in PhotoStatus}:
        raise BadRequest("'status' must be queued, processing, done, no_faces or failed.")
    cursor = int_param(params.get("cursor"), "cursor", default=0)
    limit = int_param(params.get("limit"), "limit", default=50, minimum=1, maximum=200)
    async with state.db.sessions() as session:
        event, _ = await event_for(
            state, session, principal, path_id(request, "event_id"), organiser=True
        )
        items = await oversight.event_photos(
            session,
            event_id=event.id,
            before=cursor or None,
            limit=limit + 1,
            status=None if raw_status is None else PhotoStatus(raw_status),
        )
        counts = await oversight.photo_counts(session, event.id)
    more = len(items) > limit
    items = items[:limit]
    return json_response(
        {
            "items": items,
            "next_cursor": str(items[-1]["id"]) if more else None,
            "counts": counts,
        }
    )


@api(
    "Queue the event's failed photos again, with fresh attempts",
    auth="its organiser or an admin",
    responses={
        200: Reply("how many were queued again", obj({"retried": COUNT})),
        403: "a member, not its organiser",
        404: "no such event",
    },
)
async def retry_failed(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, _ = await event_for(
            state, session, principal, path_id(request, "event_id"), organiser=True
        )
    async with state.db.transaction() as session:
        retried = await oversight.retry_event_failures(session, event.id)
    if retried and state.pipeline is not None:
        state.pipeline.notify()
    return json_response({"retried": retried})


routes = [
    Route("/api/events", create_event, methods=["POST"]),
    Route("/api/events", list_events, methods=["GET"]),
    Route("/api/events/join", join_event, methods=["POST"]),
    Route("/api/events/{event_id}", get_event, methods=["GET"]),
    Route("/api/events/{event_id}", change_event, methods=["PATCH"]),
    Route("/api/events/{event_id}", delete_event, methods=["DELETE"]),
    Route("/api/events/{event_id}/code", replace_code, methods=["POST"]),
    Route("/api/events/{event_id}/progress", event_progress, methods=["GET"]),
    Route("/api/events/{event_id}/photos", event_photos, methods=["GET"]),
    Route("/api/events/{event_id}/retry-failed", retry_failed, methods=["POST"]),
]
