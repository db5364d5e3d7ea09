"""What every recognition engine is (`Engine`), and the job steps all engines share.

An engine analyses photos and selfies and keeps each event's matches right; routes, the CLI and
the workers call it through this interface and never ask which engine it is. The steps below
(mark a photo, keep its thumbnail, store its faces, finish it, serialise an event's writes,
retention) are written once, here.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Select, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Database, Event, Face, JobKind, Photo, PhotoStatus, utcnow
from findme.jobs import ClaimedJob
from findme.storage import PhotoStorage

MatchesChanged = Callable[[set[int]], Awaitable[None]]
JobHandler = Callable[[ClaimedJob], Awaitable[None]]
# pg_advisory_xact_lock(namespace, event_id): the event's matches and its once-only cloud work.
EVENT_LOCK_NAMESPACE = 0x46D
_FINISHED = (PhotoStatus.done, PhotoStatus.no_faces)


class Engine(Protocol):
    """A face recognition engine, as the rest of FindMe sees it."""

    name: str

    def handlers(self) -> Mapping[JobKind, JobHandler]:
        """The workers' handlers: analyse a photo (`process_photo`), match a member who joined
        or changed selfie (`match_member`)."""

    def describe(self) -> dict[str, str]:
        """What runs, for `findme doctor`, /readyz and the admin page."""

    async def warm_up(self) -> None:
        """Load what the first job would otherwise wait for."""

    async def enrol_selfie(self, data: bytes) -> EnrolledSelfie:
        """The one face of a selfie (NoFace, SeveralFaces, BadRequest)."""

    async def forget_selfie(self, session: AsyncSession, user_id: int) -> None:
        """The user's selfie is about to change: forget what the engine holds of the old one."""

    async def forget_photo(self, session: AsyncSession, photo_id: int) -> None:
        """The photo's rows are about to be deleted in this transaction."""

    async def forget_user(self, session: AsyncSession, user_id: int) -> None:
        """The account (and the events it organises) is about to be erased."""

    async def forget_events(self, session: AsyncSession, event_ids: Collection[int]) -> None:
        """These events are about to be deleted."""

    async def purge_expired(self, *, retention_days: int) -> int:
        """Retention: delete the face data of events past it; returns the faces deleted."""


@dataclass(frozen=True)
class EnrolledSelfie:
    # 128 float32 little-endian: how selfies are checked and matched locally
    descriptor: bytes
    # left, top, right, bottom in the upright selfie: where its thumbnail is centred
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class NewFace:
    """A face an engine found, as it is stored: a descriptor (local) or a cloud face id."""

    box: tuple[int, int, int, int]
    descriptor: bytes | None = None
    cloud_face_id: str | None = None


@dataclass(frozen=True)
class StartedPhoto:
    event_id: int
    # finished before (a restart, a retry): an engine that pays per call need not redo it
    finished: bool


async def lock_events(session: AsyncSession, event_ids: Iterable[int]) -> None:
    """Hold these events' advisory locks (PostgreSQL) until the transaction ends.

    Taken in id order, so two transactions that lock several events cannot deadlock.
    """
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite runs one writer at a time anyway
    for event_id in sorted(set(event_ids)):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :event_id)"),
            {"namespace": EVENT_LOCK_NAMESPACE, "event_id": event_id},
        )


class EventLocks:
    """Serialises the writes of one event: an `asyncio.Lock` within this process and a
    transaction-scoped advisory lock across processes."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def transaction(self, event_id: int) -> AsyncIterator[AsyncSession]:
        async with self._locks[event_id], self._db.transaction() as session:
            await lock_events(session, [event_id])
            yield session


class PhotoJobs(abc.ABC):
    """The steps of `process_photo` and `match_member` that do not depend on the engine."""

    def __init__(
        self, *, db: Database, storage: PhotoStorage, on_matches_changed: MatchesChanged
    ) -> None:
        self._db = db
        self._storage = storage
        self._on_matches_changed = on_matches_changed
        self._event_writes = EventLocks(db).transaction

    def handlers(self) -> Mapping[JobKind, JobHandler]:
        return {
            JobKind.process_photo: self.process_photo,
            JobKind.match_member: self.match_member,
        }

    @abc.abstractmethod
    async def process_photo(self, job: ClaimedJob) -> None:
        """Find the photo's faces and match them with the event's members."""

    @abc.abstractmethod
    async def match_member(self, job: ClaimedJob) -> None:
        """Match a member who joined, or changed selfie, with the event's stored faces."""

    async def _start_photo(self, photo_id: int) -> StartedPhoto | None:
        """Mark the photo as being processed; None if it was deleted while queued."""
        async with self._db.transaction() as session:
            photo = await session.get(Photo, photo_id)
            if photo is not None:
                finished = photo.processed_at is not None and photo.status in _FINISHED
                if not finished:
                    photo.status = PhotoStatus.processing
                return StartedPhoto(photo.event_id, finished)
        # Its deletion may have run on another instance, which cannot reach this one's spool:
        # no byte of a deleted photo stays behind.
        await self._storage.delete([photo_id])
        return None

    async def _keep_thumbnail(self, photo_id: int, thumbnail: bytes) -> bool:
        """Store the grid thumbnail the job made; False if the photo was deleted meanwhile, and
        then the thumbnail goes too, so no byte of a deleted photo stays behind."""
        await self._storage.save_thumbnail(photo_id, thumbnail)
        async with self._db.sessions() as session:
            exists = await session.scalar(select(Photo.id).where(Photo.id == photo_id))
        if exists is None:
            await self._storage.delete([photo_id])
            return False
        return True

    async def _announce(self, changed: set[int]) -> None:
        if changed:
            await self._on_matches_changed(changed)

    async def purge_expired(self, *, retention_days: int) -> int:
        return await purge_expired_faces(self._db, retention_days=retention_days)


async def store_faces(
    session: AsyncSession, *, photo_id: int, event_id: int, faces: Iterable[NewFace]
) -> list[int]:
    """Replace the photo's stored faces with these; their ids, in order."""
    await session.execute(delete(Face).where(Face.photo_id == photo_id))
    ids = []
    for face in faces:
        face_id = await session.scalar(
            insert(Face)
            .values(
                photo_id=photo_id,
                event_id=event_id,
                box=list(face.box),
                descriptor=face.descriptor,
                cloud_face_id=face.cloud_face_id,
            )
            .returning(Face.id)
        )
        assert face_id is not None
        ids.append(face_id)
    return ids


async def finish_photo(session: AsyncSession, photo_id: int, *, found_faces: bool) -> None:
    await session.execute(
        update(Photo)
        .where(Photo.id == photo_id)
        .values(
            status=PhotoStatus.done if found_faces else PhotoStatus.no_faces,
            processed_at=utcnow(),
        )
    )


def expired_events(*, retention_days: int) -> Select[int]:
    """The ids of the events whose face data is past the retention period."""
    cutoff = utcnow() - dt.timedelta(days=retention_days)
    return select(Event.id).where(
        func.coalesce(Event.date, func.date(Event.created_at)) < cutoff.date()
    )


async def purge_expired_faces(db: Database, *, retention_days: int) -> int:
    """Delete the face data of events older than the retention period; matches stay."""
    async with db.transaction() as session:
        expired = expired_events(retention_days=retention_days)
        result = await session.execute(delete(Face).where(Face.event_id.in_(expired)))
    return int(getattr(result, "rowcount", 0) or 0)
