"""Share links: a private link to one photo, made by someone who may see it, until turned off.

The token is in the link only; the database keeps its SHA-256, so a copy of the database opens
no photo. A link shows the photo and its event's name, nothing else, and works only while the
person who made it may still see the photo (`findme.domain.access.viewable_photo`): an
organiser closing the gallery that let them see it ends their links to it too. Rows go with
the photo (and so the event) and with the account by foreign keys; "not me" turns off the
person's links to it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.auth import Principal, hash_token
from findme.db import Event, Photo, ShareLink, User, utcnow
from findme.domain.access import viewable_photo
from findme.domain.views import iso
from findme.errors import NotFound

if TYPE_CHECKING:
    # Annotations only, as in findme/domain/photos.py.
    from findme.services import AppState

TOKEN_BYTES = 24
# What `secrets.token_urlsafe` makes, with room to change TOKEN_BYTES: anything else names no
# link and is refused before it reaches the database.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,128}")


class ShareLinkGone(NotFound):
    """This link was turned off by the person who shared it, or never existed."""

    code = "share_link_gone"


@dataclass(frozen=True)
class SharedPhoto:
    """What a share link's page and image show: the photo and its event's name."""

    photo_id: int
    event_name: str
    content_type: str
    size_bytes: int
    sha256: str
    width: int
    height: int


async def create_link(
    state: AppState, principal: Principal, photo_id: int
) -> tuple[ShareLink, str]:
    """A new link to a photo the caller may see (404 otherwise, as for any photo), and its
    token: shown this once, never stored."""
    # Checked outside the writing transaction, as every route checks access: a refusal there
    # would roll back and expire the cached event the check loaded.
    async with state.db.sessions() as session:
        photo = await viewable_photo(state, session, principal, photo_id)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    async with state.db.transaction() as session:
        link = ShareLink(token_hash=hash_token(token), photo_id=photo.id, user_id=principal.id)
        session.add(link)
        await session.flush()
    return link, token


async def links_of(session: AsyncSession, user_id: int) -> list[dict[str, Any]]:
    """A person's links, newest first, without their tokens."""
    rows = await session.execute(
        select(ShareLink, Photo.event_id, Event.name)
        .join(Photo, Photo.id == ShareLink.photo_id)
        .join(Event, Event.id == Photo.event_id)
        .where(ShareLink.user_id == user_id)
        .order_by(ShareLink.id.desc())
    )
    return [
        {
            "id": link.id,
            "photo_id": link.photo_id,
            "event_id": event_id,
            "event_name": event_name,
            "thumb_url": f"/api/photo/{link.photo_id}/thumb",
            "created_at": iso(link.created_at),
            "last_opened_at": iso(link.last_opened_at),
            "opened_count": link.opened_count,
        }
        for link, event_id, event_name in rows.all()
    ]


async def revoke_link(session: AsyncSession, *, link_id: int, user_id: int) -> None:
    """Turn off one of the person's links; another's answers as an unknown one."""
    result = await session.execute(
        delete(ShareLink).where(ShareLink.id == link_id, ShareLink.user_id == user_id)
    )
    if not getattr(result, "rowcount", 0):
        raise NotFound("You have no share link with this id.")


async def revoke_links_to(session: AsyncSession, *, photo_id: int, user_id: int) -> None:
    """Turn off the person's links to a photo ("not me": it is not theirs to share)."""
    await session.execute(
        delete(ShareLink).where(ShareLink.photo_id == photo_id, ShareLink.user_id == user_id)
    )


async def open_link(state: AppState, token: str, *, count: bool) -> SharedPhoto:
    """The photo a token shares, if its link is on and its maker may still see the photo;
    `count` records the opening (the page, not each fetch of its image)."""
    if not _TOKEN_SHAPE.fullmatch(token):
        raise ShareLinkGone()
    async with state.db.sessions() as session:
        link = await session.scalar(
            select(ShareLink).where(ShareLink.token_hash == hash_token(token))
        )
        owner = None if link is None else await session.get(User, link.user_id)
        if link is None or owner is None:
            raise ShareLinkGone()
        try:
            photo = await viewable_photo(state, session, Principal(user=owner), link.photo_id)
        except NotFound:
            raise ShareLinkGone() from None
        event_name = await session.scalar(select(Event.name).where(Event.id == photo.event_id))
    if count:
        async with state.db.transaction() as session:
            await session.execute(
                update(ShareLink)
                .where(ShareLink.id == link.id)
                .values(last_opened_at=utcnow(), opened_count=ShareLink.opened_count + 1)
            )
    return SharedPhoto(
        photo_id=photo.id,
        event_name=event_name or "",
        content_type=photo.content_type,
        size_bytes=photo.size_bytes,
        sha256=photo.sha256,
        width=photo.width,
        height=photo.height,
    )
