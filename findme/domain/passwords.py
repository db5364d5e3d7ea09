"""Password reset: a one-time link by email, then a new password that ends every session."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.auth import end_sessions_of, hash_password, hash_token
from findme.db import PasswordReset, User, utcnow
from findme.domain.accounts import check_password, normalise_email
from findme.errors import BadRequest, FindMeError
from findme.mail import Mail


class EmailNotConfigured(FindMeError):
    """Email is not configured on this FindMe server, so no reset link can be sent. Ask the
    people who run it to set FINDME_SMTP_HOST."""

    status_code = 503
    code = "email_not_configured"


class ResetLinkInvalid(BadRequest):
    """This password-reset link is not valid, or was already used. Ask for a new one."""

    code = "reset_link_invalid"


class ResetLinkExpired(BadRequest):
    """This password-reset link has expired. Ask for a new one: links work for a limited time."""

    code = "reset_link_expired"


async def start_reset(session: AsyncSession, *, email: str, ttl_s: int) -> tuple[User, str] | None:
    """A new one-time token for the account with this email (None when there is none).

    Only the token's hash is stored, so a copy of the database resets no password.
    """
    user = await session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=now + dt.timedelta(seconds=ttl_s),
        )
    )
    # Spent and expired links are of no further use to anyone.
    await session.execute(
        delete(PasswordReset).where(
            PasswordReset.user_id == user.id,
            (PasswordReset.expires_at < now) | PasswordReset.used_at.is_not(None),
        )
    )
    await session.flush()
    return user, token


def reset_mail(user: User, *, link: str, ttl_s: int) -> Mail:
    minutes = max(1, ttl_s // 60)
    return Mail(
        to=user.email,
        subject="Reset your FindMe password",
        text=(
            f"Hello {user.name},\n\n"
            "Someone, hopefully you, asked to reset the password of your FindMe account.\n"
            f"Choose a new password here (the link works once, for {minutes} minutes):\n\n"
            f"{link}\n\n"
            "If you did not ask for this, ignore this email: your password stays as it is.\n"
        ),
        secret=link,
    )


async def finish_reset(session: AsyncSession, *, token: str, password: str) -> int:
    """Set the new password, spend the token (and the account's other links), and end every
    browser session of the account; returns the account's id."""
    check_password(password)
    now = utcnow()
    # Locked, so two uses of one link at once cannot both pass.
    row = await session.scalar(
        select(PasswordReset).where(PasswordReset.token_hash == hash_token(token)).with_for_update()
    )
    if row is None or row.used_at is not None:
        raise ResetLinkInvalid()
    if row.expires_at <= now:
        raise ResetLinkExpired()
    await session.execute(
        update(User)
        .where(User.id == row.user_id)
        .values(password_hash=await hash_password(password))
    )
    await session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == row.user_id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    await end_sessions_of(session, row.user_id)
    return row.user_id
