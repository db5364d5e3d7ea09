"""Biometric data: the selfie (with consent) and erasure of everything an account holds."""

from __future__ import annotations

import asyncio

import aiofiles
import aiofiles.os
from sqlalchemy import delete, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from findme import jobs
from findme.db import Event, EventMember, Photo, User, utcnow
from findme.errors import BadRequest, TooLarge, Unprocessable
from findme.images import prepare_upload
from findme.recognition import UnreadableImage
from findme.routes.common import api, app_state, iso, json_response, require_user
from findme.settings import Settings
from findme.uploads import receive_files

CONSENT_VALUES = frozenset({"true", "1", "yes", "on"})


def consent_text(settings: Settings) -> str:
    """What the selfie page asks the attendee to agree to."""
    return (
        "FindMe turns your selfie into a face descriptor (biometric data) and compares it with "
        "the faces in the photos of the events you join, only to show you the photos you appear "
        "in. Face data found in event photos is deleted "
        f"{settings.retention_days} days after the event. Your selfie and its descriptor stay "
        'until you erase them: "Erase my data" on your account page deletes them at once.'
    )


class ConsentRequired(BadRequest):
    code = "consent_required"


class NoFace(Unprocessable):
    """No face was found in this photo. Take a selfie facing the camera, in good light."""

    code = "no_face"


class SeveralFaces(Unprocessable):
    """This photo shows several faces. Take a selfie with only your face in it."""

    code = "several_faces"


@api(
    "Set or replace my selfie (consent required); re-matches me in every event",
    content_type="multipart/form-data",
    body={"file": "binary", "consent": "string"},
    responses={
        200: "{has_selfie, consent_at}",
        400: "no consent, no file, or unreadable file",
        413: "too large",
        415: "not an image",
        422: "no_face or several_faces",
    },
)
async def put_selfie(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    await state.limits.hit("selfie", str(principal.id))
    settings = state.settings
    fields: dict[str, str] = {}
    received = []
    try:
        async for upload in receive_files(
            request,
            tmp_dir=settings.data_dir / "tmp",
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_upload_bytes + 64 * 1024,
            max_files=1,
            fields=fields,
        ):
            received.append(upload)
        if fields.get("consent", "").strip().lower() not in CONSENT_VALUES:
            raise ConsentRequired(
                "Agree to the processing of your selfie first (form field consent=true). "
                + consent_text(settings)
            )
        if not received:
            raise BadRequest("Send your selfie as a form field named file.")
        selfie = received[0]
        if selfie.too_large:
            raise TooLarge("The selfie is too large. Take a smaller photo and send it again.")
        await asyncio.to_thread(
            prepare_upload,
            selfie.path,
            max_pixels=settings.max_image_pixels,
            thumbnail_px=settings.thumbnail_px,
        )
        async with aiofiles.open(selfie.path, "rb") as source:
            data = await source.read()
    finally:
        for upload in received:
            await aiofiles.os.remove(upload.path)
    try:
        analysis = await state.recognizer.analyse_selfie(data)
    except UnreadableImage as error:
        raise BadRequest(str(error)) from None
    if not analysis.faces:
        raise NoFace()
    if len(analysis.faces) > 1:
        raise SeveralFaces()
    now = utcnow()
    async with state.db.transaction() as session:
        if state.rekognition is not None:
            # The old selfie's faces go; the match jobs below index the new one.
            await state.rekognition.forget_selfie(session, principal.id)
        await session.execute(
            update(User)
            .where(User.id == principal.id)
            .values(
                selfie=data,
                selfie_descriptor=analysis.faces[0].descriptor,
                selfie_updated_at=now,
                consent_at=now,
            )
        )
        event_ids = await session.scalars(
            select(EventMember.event_id).where(EventMember.user_id == principal.id)
        )
        for event_id in event_ids:
            await jobs.enqueue_member_match(session, event_id=event_id, user_id=principal.id)
    await state.on_accounts_changed({principal.id})
    if state.pipeline is not None:
        state.pipeline.notify()
    return json_response({"has_selfie": True, "consent_at": iso(now)})


@api(
    "Erase my account: selfie, face data, matches, rejections, sessions and tokens",
    responses={204: "erased"},
)
async def erase_me(request: Request) -> Response:
    principal = await require_user(request)
    state = app_state(request)
    async with state.db.transaction() as session:
        if state.rekognition is not None:
            # Faces in the cloud go first: if AWS fails, nothing is deleted and erasure can be
            # asked again.
            await state.rekognition.forget_user(session, principal.id)
        organised_photos = list(
            await session.scalars(
                select(Photo.id)
                .join(Event, Event.id == Photo.event_id)
                .where(Event.organiser_id == principal.id)
            )
        )
        # Rows that reference the user go with it (ON DELETE CASCADE): sessions, tokens,
        # memberships, matches, "not me" rejections, and events the user organised.
        await session.execute(delete(User).where(User.id == principal.id))
    await state.on_accounts_changed({principal.id})
    await state.on_matches_changed({principal.id})
    await state.storage.delete(organised_photos)
    response = Response(status_code=204)
    state.auth.clear_cookie(response)
    return response


routes = [
    Route("/api/me/selfie", put_selfie, methods=["PUT"]),
    Route("/api/me", erase_me, methods=["DELETE"]),
]
