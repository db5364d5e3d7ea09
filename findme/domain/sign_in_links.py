"""Sign-in by a one-time link sent by email, for the guests of an event whose organiser allows it.

Only attendee accounts sign in this way: an organiser's choice for their event must not open a
photographer's or an admin's account. The answer to a request never says whether the email has
an account; the email itself does.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.auth import hash_token
from findme.db import Event, EventMember, Role, SignInLink, User, utcnow
from findme.domain.accounts import normalise_email
from findme.domain.signups import lifetime
from findme.errors import BadRequest, Forbidden
from findme.mail import Mail

SIGN_IN_LINK_TTL_S = 15 * 60


class EmailSignInOff(Forbidden):
    """The organiser of this event has not turned on sign-in by email link. Sign in with your
    password (or reset it from the sign-in page)."""

    code = "email_sign_in_off"


class SignInLinkInvalid(BadRequest):
    """This sign-in link is not valid, or was already used. Ask for a new one on the event's
    page."""

    code = "sign_in_link_invalid"


class SignInLinkExpired(BadRequest):
    """This sign-in link has expired: links work for 15 minutes. Ask for a new one on the
    event's page."""

    code = "sign_in_link_expired"


def link_sent(email: str) -> str:
    """The answer to every request, whether or not the email has an account."""
    return (
        f"Check your inbox: if {email} has a FindMe account, we sent it a link to sign in; if "
        f"not, a link to join. Links work once, for {lifetime(SIGN_IN_LINK_TTL_S)}."
    )


async def start_sign_in(
    session: AsyncSession, *, site: str, email: str, event: Event
) -> Mail | None:
    """The email this request sends: a sign-in link for an attendee account, the event's join
    link for an email without an account, nothing for staff accounts (they use passwords)."""
    if not event.email_sign_in:
        raise EmailSignInOff()
    email = normalise_email(email)
    user = await session.scalar(select(User).where(User.email == email))
    if user is None:
        return _join_instead_mail(email, event=event, link=f"{site}/join/{event.code}")
    if user.role != Role.attendee:
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()
    # Spent and expired links are of no further use to anyone.
    await session.execute(
        delete(SignInLink).where(
            SignInLink.user_id == user.id,
            (SignInLink.expires_at < now) | SignInLink.used_at.is_not(None),
        )
    )
    session.add(
        SignInLink(
            user_id=user.id,
            event_id=event.id,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=now + dt.timedelta(seconds=SIGN_IN_LINK_TTL_S),
        )
    )
    await session.flush()
    link = f"{site}/sign-in/{token}"
    return Mail(
        to=user.email,
        subject=f"Your link to sign in to FindMe for {event.name}",
        text=(
            f"Hello {user.name},\n\n"
            f"Here is your link to sign in to FindMe and see your photos of {event.name}.\n"
            f"It works once, for {lifetime(SIGN_IN_LINK_TTL_S)}:\n\n{link}\n\n"
            "If you did not ask for it, ignore this email: nobody can sign in without it.\n"
        ),
        secret=link,
    )


def _join_instead_mail(email: str, *, event: Event, link: str) -> Mail:
    return Mail(
        to=email,
        subject=f"Join {event.name} on FindMe",
        text=(
            "Hello,\n\n"
            f"Someone, hopefully you, asked for a link to sign in to FindMe for {event.name}, "
            "but this email address has no FindMe account yet.\n"
            f"Join the event here, with your name and a selfie:\n\n{link}\n\n"
            "If it was not you, ignore this email: nothing was created.\n"
        ),
    )


async def finish_sign_in(session: AsyncSession, *, token: str) -> tuple[User, str]:
    """Spend the link; returns its account and where to go: the event's photos for a member,
    its join page otherwise."""
    now = utcnow()
    # Locked, so two uses of one link at once cannot both pass.
    row = await session.scalar(
        select(SignInLink).where(SignInLink.token_hash == hash_token(token)).with_for_update()
    )
    if row is None or row.used_at is not None:
        raise SignInLinkInvalid()
    if row.expires_at <= now:
        raise SignInLinkExpired()
    event = await session.get(Event, row.event_id)
    user = await session.get(User, row.user_id)
    # The organiser may have turned it off, or the account been made staff, since it was sent.
    if event is None or not event.email_sign_in:
        raise EmailSignInOff()
    if user is None or user.role != Role.attendee:
        raise SignInLinkInvalid()
    await session.execute(update(SignInLink).where(SignInLink.id == row.id).values(used_at=now))
    member = await session.get(EventMember, (event.id, user.id))
    target = f"/my-photos?event_id={event.id}" if member is not None else f"/join/{event.code}"
    return user, target
