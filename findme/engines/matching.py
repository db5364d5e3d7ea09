"""The jobs' work: find faces in photos and keep each event's matches right.

A face is matched to at most one member of its event: the nearest whose distance is under the
threshold, never to several look-alikes. Writing an event's matches is serialised by a per-event
`asyncio.Lock` within this process and a transaction-scoped advisory lock across processes.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Select, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import (
    Database,
    Event,
    EventMember,
    Face,
    FaceMatch,
    JobKind,
    Photo,
    PhotoStatus,
    RejectedMatch,
    User,
    utcnow,
)
from findme.jobs import ClaimedJob
from findme.recognition import DESCRIPTOR_BYTES, LocalRecognizer
from findme.storage import PhotoStorage

logger = logging.getLogger(__name__)

MatchesChanged = Callable[[set[int]], Awaitable[None]]
_DTYPE = np.dtype("<f4")
# pg_advisory_xact_lock(namespace, event_id): the event's matches and its once-only cloud work.
EVENT_LOCK_NAMESPACE = 0x46D


@dataclass(frozen=True)
class FaceRow:
    id: int
    photo_id: int
    descriptor: bytes


@dataclass(frozen=True)
class Assignment:
    # None only for a match kept after retention purged its face.
    face_id: int | None
    distance: float


@dataclass(frozen=True)
class Candidate:
    """Evidence that a face may be a member; a lower distance is more alike."""

    face_id: int
    photo_id: int
    user_id: int
    distance: float


def choose_matches(
    candidates: Iterable[Candidate], *, rejected: Iterable[tuple[int, int]] = ()
) -> dict[tuple[int, int], Assignment]:
    """(photo_id, user_id) → face: each face goes to its nearest member who did not reject the
    photo ("not me"), never to several look-alikes."""
    refused = set(rejected)
    nearest: dict[int, Candidate] = {}
    for candidate in candidates:
        if (candidate.photo_id, candidate.user_id) in refused:
            continue
        best = nearest.get(candidate.face_id)
        if best is None or candidate.distance < best.distance:
            nearest[candidate.face_id] = candidate
    return _nearest_face_per_match(nearest.values())


def _nearest_face_per_match(chosen: Iterable[Candidate]) -> dict[tuple[int, int], Assignment]:
    """A member seen in one photo through several faces is matched through the nearest one."""
    matches: dict[tuple[int, int], Assignment] = {}
    for candidate in chosen:
        key = (candidate.photo_id, candidate.user_id)
        if key not in matches or candidate.distance < matches[key].distance:
            matches[key] = Assignment(candidate.face_id, candidate.distance)
    return matches


def assign_faces(
    faces: list[FaceRow],
    members: dict[int, bytes],
    *,
    threshold: float,
    rejected: Iterable[tuple[int, int]] = (),
) -> dict[tuple[int, int], Assignment]:
    """(photo_id, user_id) → the face that matched, for every face's nearest member."""
    if not faces or not members:
        return {}
    user_ids = list(members)
    a = np.frombuffer(b"".join(face.descriptor for face in faces), _DTYPE).reshape(len(faces), -1)
    b = np.frombuffer(b"".join(members.values()), _DTYPE).reshape(len(user_ids), -1)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    # |a-b|^2 = |a|^2 + |b|^2 - 2ab: a faces-by-members matrix, never a faces-by-members-by-128
    # array (2,000 faces and 200 members would need 400 MB).
    squared = (a64**2).sum(1)[:, None] + (b64**2).sum(1)[None, :] - 2 * a64 @ b64.T
    distances = np.sqrt(np.clip(squared, 0, None))
    column = {user_id: index for index, user_id in enumerate(user_ids)}
    photo_rows: dict[int, list[int]] = defaultdict(list)
    for row, face in enumerate(faces):
        photo_rows[face.photo_id].append(row)
    for photo_id, user_id in rejected:
        if user_id in column:
            distances[photo_rows.get(photo_id, []), column[user_id]] = np.inf
    best = distances.argmin(axis=1)
    return _nearest_face_per_match(
        Candidate(face.id, face.photo_id, user_ids[best[row]], float(distances[row, best[row]]))
        for row, face in enumerate(faces)
        if distances[row, best[row]] < threshold
    )


def nearest_member(
    face: bytes, members: Mapping[int, bytes], *, threshold: float
) -> tuple[int, float] | None:
    """The one member a single face matches, by the same rule as `assign_faces`."""
    chosen = assign_faces([FaceRow(0, 0, face)], dict(members), threshold=threshold)
    for (_photo, user_id), assignment in chosen.items():
        return user_id, assignment.distance
    return None


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
    """What the handlers of `process_photo` and `match_member` share, whichever the engine."""

    def __init__(
        self, *, db: Database, storage: PhotoStorage, on_matches_changed: MatchesChanged
    ) -> None:
        self._db = db
        self._storage = storage
        self._on_matches_changed = on_matches_changed
        self._event_writes = EventLocks(db).transaction

    def handlers(self) -> dict[JobKind, Callable[[ClaimedJob], Awaitable[None]]]:
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


class Matcher(PhotoJobs):
    """The local engine's handlers."""

    def __init__(
        self,
        *,
        db: Database,
        storage: PhotoStorage,
        recognizer: LocalRecognizer,
        threshold: float,
        on_matches_changed: MatchesChanged,
    ) -> None:
        super().__init__(db=db, storage=storage, on_matches_changed=on_matches_changed)
        self._recognizer = recognizer
        self._threshold = threshold

    async def process_photo(self, job: ClaimedJob) -> None:
        assert job.photo_id is not None
        async with self._db.transaction() as session:
            photo = await session.get(Photo, job.photo_id)
            if photo is None:
                return  # deleted while queued: nothing to do
            event_id = photo.event_id
            photo.status = PhotoStatus.processing
        data = await self._storage.read_original(job.photo_id)
        analysis = await self._recognizer.analyse_photo(data)
        async with self._event_writes(event_id) as session:
            await session.execute(delete(Face).where(Face.photo_id == job.photo_id))
            faces: list[FaceRow] = []
            for found in analysis.faces:
                face_id = await session.scalar(
                    insert(Face)
                    .values(
                        photo_id=job.photo_id,
                        event_id=event_id,
                        box=list(found.box),
                        descriptor=found.descriptor,
                    )
                    .returning(Face.id)
                )
                assert face_id is not None
                faces.append(FaceRow(face_id, job.photo_id, found.descriptor))
            members = await _member_descriptors(session, event_id)
            rejected = await rejections(session, event_id, photo_ids=[job.photo_id])
            wanted = assign_faces(faces, members, threshold=self._threshold, rejected=rejected)
            changed = await sync_matches(session, event_id, wanted, photo_ids=[job.photo_id])
            await session.execute(
                update(Photo)
                .where(Photo.id == job.photo_id)
                .values(
                    status=PhotoStatus.done if faces else PhotoStatus.no_faces,
                    processed_at=utcnow(),
                )
            )
        if changed:
            await self._on_matches_changed(changed)

    async def match_member(self, job: ClaimedJob) -> None:
        """A member joined or changed selfie: recompute the event's matches from stored faces.

        No photo is decoded again: this compares descriptors only, so a late joiner of a
        1,000-photo event is done in well under a second.
        """
        assert job.event_id is not None
        async with self._event_writes(job.event_id) as session:
            face_rows = await session.execute(
                select(Face.id, Face.photo_id, Face.descriptor).where(
                    Face.event_id == job.event_id, Face.descriptor.is_not(None)
                )
            )
            faces = [FaceRow(row.id, row.photo_id, row.descriptor) for row in face_rows]
            members = await _member_descriptors(session, job.event_id)
            rejected = await rejections(session, job.event_id)
            wanted = assign_faces(faces, members, threshold=self._threshold, rejected=rejected)
            changed = await sync_matches(session, job.event_id, wanted)
        if changed:
            await self._on_matches_changed(changed)


async def _member_descriptors(session: AsyncSession, event_id: int) -> dict[int, bytes]:
    rows = await session.execute(
        select(User.id, User.selfie_descriptor)
        .join(EventMember, EventMember.user_id == User.id)
        .where(EventMember.event_id == event_id, User.selfie_descriptor.is_not(None))
    )
    return {
        row.id: bytes(row.selfie_descriptor)
        for row in rows
        if len(row.selfie_descriptor) == DESCRIPTOR_BYTES
    }


async def rejections(
    session: AsyncSession, event_id: int, *, photo_ids: Collection[int] | None = None
) -> list[tuple[int, int]]:
    """The event's "not me" (photo_id, user_id) pairs, or those of some of its photos."""
    query = select(RejectedMatch.photo_id, RejectedMatch.user_id).join(
        Photo, Photo.id == RejectedMatch.photo_id
    )
    query = query.where(Photo.event_id == event_id)
    if photo_ids is not None:
        query = query.where(RejectedMatch.photo_id.in_(photo_ids))
    return [(row.photo_id, row.user_id) for row in await session.execute(query)]


async def sync_matches(
    session: AsyncSession,
    event_id: int,
    wanted: dict[tuple[int, int], Assignment],
    *,
    photo_ids: Collection[int] | None = None,
) -> set[int]:
    """Make the stored matches (of some photos, or the whole event) equal `wanted`.

    Returns the users whose matches changed. Idempotent: running it twice changes nothing.
    """
    query = select(FaceMatch.id, FaceMatch.photo_id, FaceMatch.user_id, FaceMatch.face_id).where(
        FaceMatch.event_id == event_id
    )
    if photo_ids is not None:
        query = query.where(FaceMatch.photo_id.in_(photo_ids))
    current = {(row.photo_id, row.user_id): row for row in await session.execute(query)}
    stale = [row.id for key, row in current.items() if key not in wanted]
    if stale:
        await session.execute(delete(FaceMatch).where(FaceMatch.id.in_(stale)))
    new = [key for key in wanted if key not in current]
    if new:
        now = utcnow()
        await session.execute(
            insert(FaceMatch),
            [
                {
                    "photo_id": photo,
                    "user_id": user,
                    "event_id": event_id,
                    "face_id": wanted[(photo, user)].face_id,
                    "distance": wanted[(photo, user)].distance,
                    "matched_at": now,
                }
                for photo, user in new
            ],
        )
    for key, row in current.items():
        if key in wanted and row.face_id != wanted[key].face_id:
            await session.execute(
                update(FaceMatch)
                .where(FaceMatch.id == row.id)
                .values(face_id=wanted[key].face_id, distance=wanted[key].distance)
            )
    return {user for _, user in new} | {
        user for (photo, user) in current if (photo, user) not in wanted
    }


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
