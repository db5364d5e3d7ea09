"""The cloud side of deletions: faces leave Rekognition before their rows leave the database.

Each runs inside the transaction that deletes or changes the rows, before it commits: if AWS
fails, the rows stay and the request can be repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Database, Event, EventMember, Face
from findme.engines.base import expired_events, lock_events, purge_expired_faces
from findme.engines.rekognition.client import RekognitionClient
from findme.engines.rekognition.records import NO_FACE, recorded_face_ids

logger = logging.getLogger(__name__)


class CloudErasure:
    """The `forget_*` and retention steps of the Rekognition engine."""

    client: RekognitionClient
    _db: Database

    async def forget_selfie(self, session: AsyncSession, user_id: int) -> None:
        """Delete the user's selfie faces from every event collection (the selfie changes)."""
        event_ids = list(
            await session.scalars(
                select(EventMember.event_id).where(EventMember.user_id == user_id)
            )
        )
        # The lock that guards indexing: a selfie being indexed right now is recorded first.
        await lock_events(session, event_ids)
        rows = await session.execute(
            select(Event.collection_id, EventMember.cloud_face_id)
            .join(Event, Event.id == EventMember.event_id)
            .where(
                EventMember.user_id == user_id,
                EventMember.cloud_face_id.is_not(None),
                EventMember.cloud_face_id != NO_FACE,
                Event.collection_id.is_not(None),
            )
        )
        for collection_id, recorded in rows.all():
            if collection_id and recorded_face_ids(recorded):
                await self.client.delete_faces(collection_id, recorded_face_ids(recorded))
        await session.execute(
            update(EventMember).where(EventMember.user_id == user_id).values(cloud_face_id=None)
        )

    async def forget_user(self, session: AsyncSession, user_id: int) -> None:
        """Account erasure: the user's selfie faces, and the collections of events they run."""
        organised = list(
            await session.scalars(select(Event.id).where(Event.organiser_id == user_id))
        )
        joined = list(
            await session.scalars(
                select(EventMember.event_id).where(EventMember.user_id == user_id)
            )
        )
        await lock_events(session, organised + joined)  # all at once, in order
        await self.forget_selfie(session, user_id)
        await self.forget_events(session, organised)

    async def forget_photo(self, session: AsyncSession, photo_id: int) -> None:
        """A deleted photo's faces leave its event's collection with it."""
        rows = (
            await session.execute(
                select(Event.collection_id, Face.cloud_face_id)
                .join(Face, Face.event_id == Event.id)
                .where(Face.photo_id == photo_id, Face.cloud_face_id.is_not(None))
                .order_by(Face.id)
            )
        ).all()
        if rows and rows[0].collection_id:
            await self.client.delete_faces(
                rows[0].collection_id, [row.cloud_face_id for row in rows]
            )

    async def forget_events(self, session: AsyncSession, event_ids: Collection[int]) -> None:
        """Delete these events' collections: every face indexed for them goes."""
        if not event_ids:
            return
        await lock_events(session, event_ids)
        names = await session.scalars(
            select(Event.collection_id).where(
                Event.id.in_(event_ids), Event.collection_id.is_not(None)
            )
        )
        for name in list(names):
            if name:
                await self.client.delete_collection(name)
        await session.execute(
            update(Event).where(Event.id.in_(event_ids)).values(collection_id=None)
        )

    async def purge_expired(self, *, retention_days: int) -> int:
        """Retention: the collections of events past it go, then their face rows."""
        async with self._db.sessions() as session:
            expired = list(
                await session.scalars(
                    expired_events(retention_days=retention_days).where(
                        Event.collection_id.is_not(None)
                    )
                )
            )
        for event_id in expired:
            async with self._db.transaction() as session:
                await self.forget_events(session, [event_id])
                await session.execute(
                    update(EventMember)
                    .where(EventMember.event_id == event_id)
                    .values(cloud_face_id=None)
                )
        if expired:
            logger.info(
                "deleted %d expired collections",
                len(expired),
                extra={"action": "retention_purge"},
            )
        return await purge_expired_faces(self._db, retention_days=retention_days)
