"""A guest's first visit: from the event's link to their photos in one form.

Name, email, consent and selfie arrive together. The account, its selfie and its membership are
made in one transaction, so a selfie without a face, a taken email or an event closed meanwhile
leaves nothing behind.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from findme.auth import hash_password
from findme.db import BrowserSession, Event, EventMember, Job, Role, User
from findme.domain.accounts import add_user, check_password, write_selfies
from findme.domain.events import event_by_code, joining_refusal, latest_member_job
from findme.errors import BadRequest
from findme.services import AppState


@dataclass(frozen=True)
class Newcomer:
    user: User
    event: Event
    job: Job | None
    browser: BrowserSession


async def join_as_newcomer(
    state: AppState,
    *,
    code: str,
    name: str,
    email: str,
    password: str,
    selfie: bytes,
) -> Newcomer:
    """A new attendee account with its selfie, a member of the event, signed in."""
    async with state.db.sessions() as session:
        _admits(await event_by_code(session, code))
    password_hash = await _password_hash(state, password)
    # The engine reads the face before anything is written: no face, nothing stored.
    enrolled = await state.engine.enrol_selfie(selfie)
    async with state.db.transaction() as session:
        # Read again: the organiser may have closed joining while the face was read.
        event = _admits(await event_by_code(session, code))
        user = await add_user(
            session, email=email, password_hash=password_hash, name=name, role=Role.attendee
        )
        session.add(EventMember(event_id=event.id, user_id=user.id))
        await session.flush()
        await write_selfies(state, session, user.id, added=(selfie, enrolled))
        job = await latest_member_job(session, event_id=event.id, user_id=user.id)
        browser = await state.auth.start_session(session, user)
        await session.refresh(user)
    if state.pipeline is not None:
        state.pipeline.notify()
    return Newcomer(user=user, event=event, job=job, browser=browser)


def _admits(event: Event) -> Event:
    refusal = joining_refusal(event)
    if refusal is not None:
        raise refusal
    return event


async def _password_hash(state: AppState, password: str) -> str:
    """The chosen password's hash; without one (allowed when email is configured) a random
    password nobody knows, so the person comes back by an emailed reset or sign-in link."""
    if password:
        return await hash_password(check_password(password))
    if not state.mailer.configured:
        raise BadRequest(
            "Choose a password (8 characters or more): you need it to sign in again later."
        )
    return await hash_password(secrets.token_urlsafe(32))
