"""Accounts: creating one, the selfie (biometric data, with consent) and erasure."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme import jobs
from findme.auth import hash_password
from findme.db import (
    Event,
    EventMember,
    FaceMatch,
    MatchSuggestion,
    Photo,
    Role,
    Selfie,
    User,
    utcnow,
)
from findme.domain.erasure import erase
from findme.domain.views import iso
from findme.engines.base import EnrolledSelfie
from findme.errors import AlreadyExists, BadRequest, Conflict, NotFound
from findme.services import AppState
from findme.settings import Settings

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
MAX_SELFIES = 3


class TooManySelfies(Conflict):
    """You have three selfies already. Remove one before adding another."""

    code = "too_many_selfies"


def normalise_email(raw: str) -> str:
    email = raw.strip().lower()
    if len(email) > 254 or not EMAIL_PATTERN.match(email):
        raise BadRequest("Enter a valid email address, like name@example.com.")
    return email


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise BadRequest(f"The password must be at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise BadRequest(f"The password must be at most {MAX_PASSWORD_CHARS} characters.")
    return password


async def create_user(
    session: AsyncSession, *, email: str, password: str, name: str, role: Role
) -> User:
    """Insert an account; shared by sign-up and `findme create-user`."""
    return await add_user(
        session, email=email, password_hash=await hash_password(password), name=name, role=role
    )


async def add_user(
    session: AsyncSession, *, email: str, password_hash: str, name: str, role: Role
) -> User:
    """Insert an account whose password is hashed already (a sign-up confirmed by email kept
    only the hash while it waited)."""
    email = normalise_email(email)
    exists = await session.scalar(select(func.count()).where(User.email == email))
    if exists:
        raise AlreadyExists("An account with this email already exists. Sign in instead.")
    user = User(email=email, name=name, password_hash=password_hash, role=role)
    session.add(user)
    await session.flush()
    return user


def consent_text(settings: Settings) -> str:
    """What the selfie page asks the attendee to agree to."""
    return (
        "FindMe turns your selfie into a face descriptor (biometric data) and compares it with "
        "the faces in the photos of the events you join, only to show you the photos you appear "
        "in. Face data found in event photos is deleted "
        f"{settings.retention_days} days after the event. Your selfie and its descriptor stay "
        'until you erase them: "Erase my data" on your account page deletes them at once.'
    )


async def set_selfie(state: AppState, *, user_id: int, data: bytes) -> dt.datetime:
    """Enrol a selfie in place of all the person's others (consent given); returns its time."""
    enrolled = await state.engine.enrol_selfie(data)
    return await _change_selfies(state, user_id, added=(data, enrolled), replace=True)


async def add_selfie(state: AppState, *, user_id: int, data: bytes) -> dt.datetime:
    """Enrol one more selfie (e.g. three-quarter beside a front one); matching takes the
    nearest of them."""
    enrolled = await state.engine.enrol_selfie(data)
    return await _change_selfies(state, user_id, added=(data, enrolled))


async def remove_selfie(state: AppState, *, user_id: int, selfie_id: int) -> None:
    await _change_selfies(state, user_id, removed=selfie_id)


async def list_selfies(session: AsyncSession, user_id: int) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(Selfie.id, Selfie.created_at).where(Selfie.user_id == user_id).order_by(Selfie.id)
    )
    return [
        {
            "id": row.id,
            "created_at": iso(row.created_at),
            "image_url": f"/api/me/selfies/{row.id}/image",
        }
        for row in rows
    ]


async def selfie_image(
    session: AsyncSession, *, user_id: int, selfie_id: int
) -> tuple[bytes, tuple[int, int, int, int] | None]:
    """One of the person's own selfies and its face box; nobody else's is ever served."""
    row = (
        await session.execute(
            select(Selfie.image, Selfie.box).where(
                Selfie.id == selfie_id, Selfie.user_id == user_id
            )
        )
    ).one_or_none()
    if row is None or row.image is None:
        raise NotFound("You have no selfie with this id.")
    box = tuple(row.box) if row.box and len(row.box) == 4 else None
    return bytes(row.image), box


async def _change_selfies(
    state: AppState,
    user_id: int,
    *,
    added: tuple[bytes, EnrolledSelfie] | None = None,
    replace: bool = False,
    removed: int | None = None,
) -> dt.datetime:
    """Change the person's selfies, then re-match them in every event they joined."""
    async with state.db.transaction() as session:
        now = await write_selfies(
            state, session, user_id, added=added, replace=replace, removed=removed
        )
    await state.on_accounts_changed({user_id})
    if state.pipeline is not None:
        state.pipeline.notify()
    return now


async def write_selfies(
    state: AppState,
    session: AsyncSession,
    user_id: int,
    *,
    added: tuple[bytes, EnrolledSelfie] | None = None,
    replace: bool = False,
    removed: int | None = None,
) -> dt.datetime:
    """The selfie change in the caller's transaction (a newcomer's account, selfie and
    membership go in one), with a matching job for every event the person joined."""
    now = utcnow()
    # Serialises a person's selfie changes, so two at once cannot pass the limit.
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    ids = set(await session.scalars(select(Selfie.id).where(Selfie.user_id == user_id)))
    if removed is not None and removed not in ids:
        raise NotFound("You have no selfie with this id.")
    if added is not None and not replace and len(ids) >= MAX_SELFIES:
        raise TooManySelfies()
    # Checked before: once the engine forgets, the change goes through.
    await state.engine.forget_selfie(session, user_id)
    # Suggestions come from the old selfies (biometric data): the re-matching below offers
    # those of the selfies left.
    await session.execute(delete(MatchSuggestion).where(MatchSuggestion.user_id == user_id))
    if replace:
        await session.execute(delete(Selfie).where(Selfie.user_id == user_id))
    if removed is not None:
        await session.execute(delete(Selfie).where(Selfie.id == removed))
    if added is not None:
        image, enrolled = added
        session.add(
            Selfie(
                user_id=user_id,
                image=image,
                descriptor=enrolled.descriptor,
                box=list(enrolled.box),
            )
        )
    left = await session.scalar(select(func.count()).where(Selfie.user_id == user_id))
    changes: dict[str, Any] = {"selfie_updated_at": now if left else None}
    if added is not None:
        changes["consent_at"] = now
    await session.execute(update(User).where(User.id == user_id).values(**changes))
    event_ids = await session.scalars(
        select(EventMember.event_id).where(EventMember.user_id == user_id)
    )
    for event_id in event_ids:
        await jobs.enqueue_member_match(session, event_id=event_id, user_id=user_id)
    return now


async def erase_user(state: AppState, user_id: int) -> None:
    """Everything an account holds: selfie, descriptor, matches, suggestions, "not me",
    sessions, tokens, and the events it organises with their photos. The engine's copies go
    first."""
    organised = select(Event.id).where(Event.organiser_id == user_id)

    async def forget(session: AsyncSession) -> None:
        await state.engine.forget_user(session, user_id)

    async with state.db.sessions() as session:
        organised_ids = set(await session.scalars(organised))
    # Rows that reference the user go with it (ON DELETE CASCADE): sessions, tokens,
    # memberships, matches, suggestions, "not me" rejections, share links, and events the user
    # organised.
    await erase(
        state,
        forget=forget,
        rows=delete(User).where(User.id == user_id),
        photos=select(Photo.id).where(Photo.event_id.in_(organised)),
        matched_users=select(FaceMatch.user_id).where(FaceMatch.event_id.in_(organised)),
        events=organised_ids,
        accounts={user_id},
    )
