"""Events: create, join by code, list, show, progress, delete."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme import jobs
from findme.auth import Principal
from findme.db import (
    Event,
    EventMember,
    Face,
    FaceMatch,
    Job,
    JobKind,
    JobStatus,
    Photo,
    Role,
)
from findme.errors import BadRequest, Forbidden, NotFound
from findme.routes.common import (
    api,
    app_state,
    iso,
    json_response,
    path_id,
    read_json,
    require_user,
    text_field,
)
from findme.services import AppState

# No 0/O, 1/I/L: codes are read off posters and typed on phones.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_CHARS = 8


def new_event_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_CHARS))


def event_json(event: Event, *, role: str) -> dict[str, Any]:
    return {
        "id": event.id,
        "name": event.name,
        "code": event.code,
        "date": iso(event.date),
        "organiser_id": event.organiser_id,
        "created_at": iso(event.created_at),
        "join_path": f"/join/{event.code}",
        "my_role": role,
    }


async def event_for(
    state: AppState,
    session: AsyncSession,
    principal: Principal,
    event_id: int,
    *,
    organiser: bool = False,
) -> tuple[Event, str]:
    """The event and the caller's relation to it; 404 unknown, 403 not theirs."""
    found = await state.caches.events.get((event_id,), lambda: session.get(Event, event_id))
    if found is None:
        raise NotFound("There is no event with this id.")
    if found.organiser_id == principal.id:
        return found, "organiser"
    if principal.is_admin:
        return found, "admin"
    if not organiser:
        member = await session.get(EventMember, (event_id, principal.id))
        if member is not None:
            return found, "member"
        raise Forbidden("You are not a member of this event. Join it with its code first.")
    raise Forbidden("Only the event's organiser can do this.")


@api(
    "Create an event",
    body={"name": "string", "date": "YYYY-MM-DD?"},
    responses={201: "{event}", 403: "not a photographer"},
)
async def create_event(request: Request) -> Response:
    principal = await require_user(request, Role.photographer)
    body = await read_json(request)
    name = text_field(body, "name", max_chars=200)
    date = _parse_date(body.get("date"))
    state = app_state(request)
    async with state.db.transaction() as session:
        # Codes are random: a collision is rare, and the unique constraint catches it.
        code = new_event_code()
        while await session.scalar(select(func.count()).where(Event.code == code)):
            code = new_event_code()
        event = Event(name=name, date=date, code=code, organiser_id=principal.id)
        session.add(event)
        await session.flush()
    return json_response(event_json(event, role="organiser"), 201)


def _parse_date(raw: Any) -> dt.date | None:
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise BadRequest("'date' must be a date like 2026-06-30.")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest("'date' must be a date like 2026-06-30.") from None


@api("Events I organise or joined", responses={200: "{items:[event]}"})
async def list_events(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        member_of = select(EventMember.event_id).where(EventMember.user_id == principal.id)
        rows = await session.scalars(
            select(Event)
            .where(or_(Event.organiser_id == principal.id, Event.id.in_(member_of)))
            .order_by(Event.id.desc())
        )
        items = [
            event_json(row, role="organiser" if row.organiser_id == principal.id else "member")
            for row in rows
        ]
    return json_response({"items": items})


@api(
    "One event with its counts",
    responses={200: "{id, name, code, ..., counts}", 403: "not a member"},
)
async def get_event(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, role = await event_for(state, session, principal, path_id(request, "event_id"))
        counts = await _counts(session, event.id)
    return json_response({**event_json(event, role=role), "counts": counts})


async def _counts(session: AsyncSession, event_id: int) -> dict[str, int]:
    photos = await session.scalar(select(func.count()).where(Photo.event_id == event_id))
    members = await session.scalar(select(func.count()).where(EventMember.event_id == event_id))
    return {"photos": photos or 0, "members": members or 0}


@api(
    "Join an event with its code",
    body={"code": "string"},
    responses={200: "{event}", 404: "unknown code"},
)
async def join_event(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    raw_code = text_field(await read_json(request), "code", max_chars=32)
    code = raw_code.upper().replace(" ", "").replace("-", "")
    async with state.db.transaction() as session:
        event = await session.scalar(select(Event).where(Event.code == code))
        if event is None:
            raise NotFound("No event has this code. Check the code on the poster or QR link.")
        member = await session.get(EventMember, (event.id, principal.id))
        if member is None and event.organiser_id != principal.id:
            session.add(EventMember(event_id=event.id, user_id=principal.id))
            await session.flush()
            if principal.user.selfie_descriptor is not None:
                await jobs.enqueue_member_match(session, event_id=event.id, user_id=principal.id)
    if state.pipeline is not None:
        state.pipeline.notify()
    role = "organiser" if event.organiser_id == principal.id else "member"
    return json_response({"event": event_json(event, role=role)})


@api(
    "Processing progress of an event",
    responses={200: "{photos, queued, running, done, failed, faces, matches}"},
)
async def event_progress(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.sessions() as session:
        event, _ = await event_for(state, session, principal, path_id(request, "event_id"))
        return json_response(await progress(session, event.id))


async def progress(session: AsyncSession, event_id: int) -> dict[str, int]:
    by_status = dict(
        (
            await session.execute(
                select(Job.status, func.count())
                .where(Job.event_id == event_id, Job.kind == JobKind.process_photo)
                .group_by(Job.status)
            )
        ).all()
    )
    photos = await session.scalar(select(func.count()).where(Photo.event_id == event_id))
    faces = await session.scalar(select(func.count()).where(Face.event_id == event_id))
    matches = await session.scalar(select(func.count()).where(FaceMatch.event_id == event_id))
    return {
        "photos": photos or 0,
        "queued": by_status.get(JobStatus.queued, 0),
        "running": by_status.get(JobStatus.running, 0),
        "done": by_status.get(JobStatus.done, 0),
        "failed": by_status.get(JobStatus.failed, 0),
        "faces": faces or 0,
        "matches": matches or 0,
    }


@api("Delete an event with its photos, faces and matches", responses={204: "deleted"})
async def delete_event(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.transaction() as session:
        event, _ = await event_for(
            state, session, principal, path_id(request, "event_id"), organiser=True
        )
        photo_ids = list(await session.scalars(select(Photo.id).where(Photo.event_id == event.id)))
        matched = set(
            await session.scalars(select(FaceMatch.user_id).where(FaceMatch.event_id == event.id))
        )
        if state.rekognition is not None:
            # Its cloud faces go first: if AWS fails, the event stays and can be deleted again.
            await state.rekognition.delete_collections(session, [event.id])
        await session.execute(delete(Event).where(Event.id == event.id))
    state.caches.events.invalidate({event.id})
    await state.on_matches_changed(matched)
    await state.storage.delete(photo_ids)
    return Response(status_code=204)


routes = [
    Route("/api/events", create_event, methods=["POST"]),
    Route("/api/events", list_events, methods=["GET"]),
    Route("/api/events/join", join_event, methods=["POST"]),
    Route("/api/events/{event_id}", get_event, methods=["GET"]),
    Route("/api/events/{event_id}", delete_event, methods=["DELETE"]),
    Route("/api/events/{event_id}/progress", event_progress, methods=["GET"]),
]
