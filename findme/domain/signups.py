"""Sign-up confirmed by email: the answer never tells whether an email has an account.

The same reply goes to every sign-up; the email says the rest. A free email gets a one-time
link that creates the account; an email with an account gets a reminder of it, and nothing is
stored. Only the link token's hash is kept, and the password only as its hash.
"""

from __future__ import annotations

import datetime as dt
import secrets
from urllib.parse import quote

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from findme.auth import hash_token
from findme.db import Role, Signup, User, utcnow
from findme.domain.accounts import add_user, normalise_email
from findme.errors import AlreadyExists, BadRequest
from findme.mail import Mail

# The longest path kept to go back to after confirming (the column's size).
MAX_NEXT_CHARS = 2000


class SignupLinkInvalid(BadRequest):
    """This sign-up link is not valid, or was already used. Sign up again, or sign in if you
    already have an account."""

    code = "signup_link_invalid"


class SignupLinkExpired(BadRequest):
    """This sign-up link has expired. Sign up again: links work for a limited time."""

    code = "signup_link_expired"


def lifetime(ttl_s: int) -> str:
    """A link's lifetime in words: "24 hours", "1 hour", "30 minutes"."""
    hours, rest = divmod(ttl_s, 3600)
    if hours and not rest:
        return f"{hours} hour{'s' if hours > 1 else ''}"
    minutes = max(1, ttl_s // 60)
    return f"{minutes} minute{'s' if minutes > 1 else ''}"


def signup_sent(email: str, *, ttl_s: int) -> str:
    """The answer to every sign-up by email, whether or not the email has an account."""
    return (
        f"Check your inbox: we sent an email to {email} to finish signing up. Its link works "
        f"for {lifetime(ttl_s)}; if nothing arrives, look in your spam folder."
    )


async def start_signup(
    session: AsyncSession,
    *,
    site: str,
    email: str,
    name: str,
    password_hash: str,
    next_path: str,
    ttl_s: int,
) -> Mail:
    """The email a sign-up sends: a link that creates the account, or, for an email that has
    one already, a reminder of it with links to sign in and to reset the password.

    The caller hashes the password in both cases, so the answer's timing does not tell which.
    """
    email = normalise_email(email)
    user = await session.scalar(select(User).where(User.email == email))
    if user is not None:
        return _account_exists_mail(user, site=site, next_path=next_path)
    token = secrets.token_urlsafe(32)
    now = utcnow()
    # Links nobody used are of no further use to anyone.
    await session.execute(delete(Signup).where(Signup.expires_at < now))
    session.add(
        Signup(
            email=email,
            name=name,
            password_hash=password_hash,
            token_hash=hash_token(token),
            next_path=next_path,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=ttl_s),
        )
    )
    await session.flush()
    return _confirm_mail(email, link=f"{site}/signup/{token}", ttl_s=ttl_s)


async def finish_signup(session: AsyncSession, *, token: str) -> tuple[User, str]:
    """Create the account of a sign-up link and spend every link of its email; returns the
    account and the path the person was going to."""
    token_hash = hash_token(token)
    email = await session.scalar(select(Signup.email).where(Signup.token_hash == token_hash))
    if email is None:
        raise SignupLinkInvalid()
    # Every pending sign-up of the email is locked, always in the same order: two of its links
    # used at once run one after the other, and the second finds its row gone.
    pending = await session.scalars(
        select(Signup).where(Signup.email == email).order_by(Signup.id).with_for_update()
    )
    row = next((item for item in pending if item.token_hash == token_hash), None)
    if row is None:
        raise SignupLinkInvalid()
    if row.expires_at <= utcnow():
        raise SignupLinkExpired()
    try:
        user = await add_user(
            session,
            email=row.email,
            password_hash=row.password_hash,
            name=row.name,
            role=Role.attendee,
        )
    except AlreadyExists:
        # The email got an account after the link was sent (an admin created it).
        raise SignupLinkInvalid() from None
    await session.execute(delete(Signup).where(Signup.email == email))
    return user, row.next_path


def _confirm_mail(email: str, *, link: str, ttl_s: int) -> Mail:
    # Nothing the requester typed but the address goes in: anyone can send this to anyone.
    return Mail(
        to=email,
        subject="Confirm your email to finish creating your FindMe account",
        text=(
            "Hello,\n\n"
            "Someone, hopefully you, signed up to FindMe with this email address.\n"
            f"Finish creating your account here (the link works once, for {lifetime(ttl_s)}):"
            f"\n\n{link}\n\n"
            "If it was not you, ignore this email: no account is created.\n"
        ),
        secret=link,
    )


def _account_exists_mail(user: User, *, site: str, next_path: str) -> Mail:
    sign_in = f"{site}/login" + (f"?next={quote(next_path, safe='/')}" if next_path != "/" else "")
    return Mail(
        to=user.email,
        subject="You already have a FindMe account",
        text=(
            f"Hello {user.name},\n\n"
            "Someone, hopefully you, tried to sign up to FindMe with this email address. It "
            "already has an account, so no new one was made.\n\n"
            f"Sign in here:\n\n{sign_in}\n\n"
            f"Forgot your password? Choose a new one here:\n\n{site}/forgot-password\n\n"
            "If it was not you, ignore this email: your account stays as it is.\n"
        ),
    )
