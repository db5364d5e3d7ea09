"""New-photo emails: a member opts in per event, and gets at most one email an hour saying how
many new photos of them arrived, with a link that turns the emails off.

What was mailed is recorded on the membership (`notified_through_match_id`, `notified_at`), so
nothing but the member's matches is needed to know what is new. A round claims each membership
with `FOR UPDATE SKIP LOCKED` and keeps the lock while the email goes out: a second process
skips it, and a send that fails rolls the claim back, so the photos are mailed in a later round.
The unsubscribe link is signed, not stored: it names the member and the event, and works for as
long as the secret key stays the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import aiosmtplib
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from findme.auth import Principal
from findme.db import Database, Event, EventMember, FaceMatch, User, utcnow
from findme.domain.access import event_for
from findme.domain.photos import latest_match_id
from findme.errors import BadRequest, Conflict, Forbidden
from findme.mail import Mail, Mailer
from findme.settings import Settings

if TYPE_CHECKING:
    # Annotations only, as in findme/domain/photos.py.
    from findme.services import AppState

logger = logging.getLogger(__name__)

# At most one email per member and event in this time.
MIN_GAP = dt.timedelta(hours=1)
# Memberships mailed per round at most; the rest wait for the next round.
ROUND_LIMIT = 200
# Longer than any token `unsubscribe_token` makes; anything longer is refused unread.
MAX_TOKEN_CHARS = 200
_SALT = "findme-unsubscribe"


class NotificationsUnavailable(Conflict):
    """This FindMe server cannot send email, so it cannot tell you about new photos. Ask the
    people who run it to set FINDME_SMTP_HOST and FINDME_PUBLIC_URL."""

    code = "notifications_unavailable"


class NotAMember(Forbidden):
    """Only the event's members get emails about new photos of them: join the event first."""

    code = "not_a_member"


class UnsubscribeLinkInvalid(BadRequest):
    """This unsubscribe link is not valid: it may have been cut short. Open the link in the
    email again, or turn the emails off on your "My photos" page."""

    code = "unsubscribe_link_invalid"


def available(mailer: Mailer, settings: Settings) -> bool:
    """Whether new-photo emails can be sent: a mail server, and the site's address for links
    (a round runs outside any request, so it cannot take the address from one)."""
    return mailer.configured and bool(settings.public_url)


def unsubscribe_token(settings: Settings, *, user_id: int, event_id: int) -> str:
    return _serializer(settings).dumps([user_id, event_id])


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(str(settings.secret_key), salt=_SALT)


def _read_token(settings: Settings, token: str) -> tuple[int, int]:
    """The (user id, event id) a token names; 400 when it is not one we signed."""
    if len(token) > MAX_TOKEN_CHARS:
        raise UnsubscribeLinkInvalid()
    try:
        value = _serializer(settings).loads(token)
    except BadSignature:
        raise UnsubscribeLinkInvalid() from None
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        raise UnsubscribeLinkInvalid()
    return value[0], value[1]


async def member_setting(state: AppState, principal: Principal, event_id: int) -> bool:
    """Whether the caller gets new-photo emails for the event (404 for an event they cannot
    see, 403 for one they see but did not join)."""
    async with state.db.sessions() as session:
        member = await _membership(state, session, principal, event_id)
        return member.notify_new_photos


async def set_new_photos(state: AppState, principal: Principal, event_id: int, *, on: bool) -> bool:
    """Turn the caller's new-photo emails for the event on or off; returns the new value.

    Turning them on starts after the photos the member has now: they have seen those already.
    Turning them on again keeps the hour since the last email, so switching costs nothing.
    """
    if on and not available(state.mailer, state.settings):
        raise NotificationsUnavailable()
    async with state.db.sessions() as session:
        await _membership(state, session, principal, event_id)
    async with state.db.transaction() as session:
        member = await session.get(
            EventMember, (event_id, principal.id), with_for_update=True, populate_existing=True
        )
        if member is None:  # left or erased meanwhile
            raise NotAMember()
        if on and not member.notify_new_photos:
            member.notified_through_match_id = await latest_match_id(
                session, user_id=principal.id, event_id=event_id
            )
        member.notify_new_photos = on
    return on


async def _membership(
    state: AppState, session: AsyncSession, principal: Principal, event_id: int
) -> EventMember:
    await event_for(state, session, principal, event_id)
    member = await session.get(EventMember, (event_id, principal.id))
    if member is None:
        raise NotAMember()
    return member


async def event_of_token(state: AppState, token: str) -> tuple[int, str]:
    """The id and name of the event an unsubscribe link is for (400 for a forged or damaged
    link; a link of a deleted event still reads, as there is nothing left to send)."""
    _, event_id = _read_token(state.settings, token)
    async with state.db.sessions() as session:
        return event_id, await _event_name(session, event_id)


async def _event_name(session: AsyncSession, event_id: int) -> str:
    name = await session.scalar(select(Event.name).where(Event.id == event_id))
    return name or "this event"


async def unsubscribe(state: AppState, token: str) -> str:
    """Turn off the emails a link names; returns the event's name. Idempotent: a second use,
    or a membership gone meanwhile, changes nothing and says the same."""
    user_id, event_id = _read_token(state.settings, token)
    async with state.db.transaction() as session:
        member = await session.get(EventMember, (event_id, user_id), with_for_update=True)
        if member is not None:
            member.notify_new_photos = False
        return await _event_name(session, event_id)


def unsubscribed_sentence(event_name: str) -> str:
    return f"You will get no more emails about {event_name}."


@dataclasses.dataclass(frozen=True)
class _Due:
    """A membership with new matches, as the round's first query found it."""

    event_id: int
    user_id: int


async def send_new_photo_mails(
    *, db: Database, mailer: Mailer, settings: Settings, now: dt.datetime | None = None
) -> int:
    """One round: one email to each member due one; returns how many were sent.

    Due: emails on, the last one at least an hour ago (or none yet), new matches, and the
    newest of them at least FINDME_NOTIFY_QUIET_S old, so a batch being uploaded is mailed
    once it settles rather than photo by photo. `now` lets tests move time along.
    """
    if not available(mailer, settings):
        return 0
    now = now or utcnow()
    sent = 0
    async with db.sessions() as session:
        due = [
            _Due(event_id, user_id)
            for event_id, user_id in await session.execute(
                _due_query(now=now, quiet_s=settings.notify_quiet_s).limit(ROUND_LIMIT)
            )
        ]
    for member in due:
        try:
            sent += await _mail_one(db, mailer=mailer, settings=settings, due=member, now=now)
        except (aiosmtplib.SMTPException, OSError) as error:
            # Nothing was recorded: the same photos are mailed in a later round.
            logger.warning(
                "new-photo email for member %d of event %d not sent, retried next round: %s",
                member.user_id,
                member.event_id,
                type(error).__name__,
                extra={"action": "photo_mail_failed"},
            )
    return sent


def _due_query(*, now: dt.datetime, quiet_s: int) -> Any:
    new = _new_matches()
    return (
        select(EventMember.event_id, EventMember.user_id)
        .join(FaceMatch, and_(FaceMatch.event_id == EventMember.event_id, new))
        .where(*_may_mail(now))
        .group_by(EventMember.event_id, EventMember.user_id)
        .having(func.max(FaceMatch.matched_at) <= now - dt.timedelta(seconds=quiet_s))
        .order_by(func.max(FaceMatch.matched_at))
    )


def _new_matches() -> Any:
    """The member's matches after the last one mailed (the join condition on FaceMatch)."""
    return and_(
        FaceMatch.user_id == EventMember.user_id,
        FaceMatch.id > func.coalesce(EventMember.notified_through_match_id, 0),
    )


def _may_mail(now: dt.datetime) -> tuple[Any, ...]:
    return (
        EventMember.notify_new_photos,
        or_(EventMember.notified_at.is_(None), EventMember.notified_at <= now - MIN_GAP),
    )


async def _mail_one(
    db: Database, *, mailer: Mailer, settings: Settings, due: _Due, now: dt.datetime
) -> int:
    """Claim the membership, mail it, record it: all in one transaction, so a failed send
    records nothing and another process skips the row while the email goes out."""
    async with db.sessions() as session, session.begin():
        member = await session.scalar(
            select(EventMember)
            .where(
                EventMember.event_id == due.event_id,
                EventMember.user_id == due.user_id,
                *_may_mail(now),
            )
            .with_for_update(skip_locked=True)
        )
        if member is None:  # another process has it, or it changed since the first query
            return 0
        count, through, newest = (
            await session.execute(
                select(func.count(), func.max(FaceMatch.id), func.max(FaceMatch.matched_at))
                .select_from(EventMember)
                .join(FaceMatch, and_(FaceMatch.event_id == EventMember.event_id, _new_matches()))
                .where(EventMember.event_id == due.event_id, EventMember.user_id == due.user_id)
            )
        ).one()
        if not count or newest > now - dt.timedelta(seconds=settings.notify_quiet_s):
            return 0
        user = await session.get(User, due.user_id)
        event = await session.get(Event, due.event_id)
        if user is None or event is None:
            return 0
        await mailer.send(photo_mail(settings, user=user, event=event, count=count))
        member.notified_through_match_id = through
        member.notified_at = now
    return 1


def photo_mail(settings: Settings, *, user: User, event: Event, count: int) -> Mail:
    """The email itself: how many photos and where, never the photos (nor anything of faces)."""
    site = settings.public_url.rstrip("/")
    token = unsubscribe_token(settings, user_id=user.id, event_id=event.id)
    photos = f"{count} new photo{'s' if count != 1 else ''}"
    return Mail(
        to=user.email,
        subject=f"{photos} of you at {event.name}",
        text=(
            f"Hello {user.name},\n\n"
            f"FindMe found {photos} of you at {event.name}. See them here:\n\n"
            f"{site}/my-photos?event_id={event.id}\n\n"
            "You get this email because you asked to be told when new photos of you arrive "
            "(at most one email an hour). To stop these emails about this event:\n\n"
            f"{site}/unsubscribe/{token}\n"
        ),
        headers=(
            ("List-Unsubscribe", f"<{site}/api/unsubscribe/{token}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ),
    )
