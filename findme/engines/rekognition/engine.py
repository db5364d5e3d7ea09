"""The Rekognition engine's jobs: index photos and selfies once, search each face once.

The job handlers of `process_photo` and `match_member` when FINDME_RECOGNIZER=rekognition; the
client they call, and what each call costs, are in findme/rekognition.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import (
    Database,
    Event,
    EventMember,
    Face,
    FaceMatch,
    Photo,
    PhotoStatus,
    User,
    utcnow,
)
from findme.jobs import ClaimedJob
from findme.matching import (
    Assignment,
    Candidate,
    MatchesChanged,
    PhotoJobs,
    choose_matches,
    rejections,
    sync_matches,
)
from findme.rekognition import (
    NO_FACE,
    SEARCH_PENDING,
    FaceHit,
    IndexedFace,
    RekognitionRecognizer,
    collection_name,
    parse_external_id,
    similarity_distance,
)
from findme.storage import PhotoStorage

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_FINISHED = (PhotoStatus.done, PhotoStatus.no_faces)


@dataclass(frozen=True)
class _StoredFace:
    id: int
    cloud_face_id: str


class RekognitionMatcher(PhotoJobs):
    """The handlers of `process_photo` and `match_member` jobs on Rekognition."""

    def __init__(
        self,
        *,
        db: Database,
        storage: PhotoStorage,
        recognizer: RekognitionRecognizer,
        on_matches_changed: MatchesChanged,
    ) -> None:
        super().__init__(db=db, storage=storage, on_matches_changed=on_matches_changed)
        self._recognizer = recognizer

    async def process_photo(self, job: ClaimedJob) -> None:
        assert job.photo_id is not None
        photo_id = job.photo_id
        async with self._db.transaction() as session:
            photo = await session.get(Photo, photo_id)
            if photo is None:
                return  # deleted while queued
            if photo.processed_at is not None and photo.status in _FINISHED:
                return  # finished before a restart: nothing is paid for twice
            event_id = photo.event_id
            photo.status = PhotoStatus.processing
            stored = await _stored_faces(session, photo_id)
        collection_id = await self._collection(event_id)
        if collection_id is None:
            return  # the event was deleted
        indexed: list[IndexedFace] | None = None
        if not stored:
            data = await self._storage.read_original(photo_id)
            indexed = await self._recognizer.index_faces(
                collection_id, data, external_image_id=f"photo-{photo_id}"
            )
        changed: set[int] = set()
        async with self._event_writes(event_id) as session:
            if not await _has_stored_faces(session, event_id):
                # A fresh event: the members waiting for their own jobs are indexed before the
                # first photo faces are stored, so the photos' searches find them and they owe
                # no search of their own. Later joiners are left to their jobs.
                changed |= await self._index_members(session, event_id, collection_id, late=False)
            if indexed is not None:
                # Recorded before searching: a retried job never indexes this photo again.
                await session.execute(delete(Face).where(Face.photo_id == photo_id))
                for face in indexed:
                    await session.execute(
                        insert(Face).values(
                            photo_id=photo_id,
                            event_id=event_id,
                            box=list(face.box),
                            cloud_face_id=face.face_id,
                        )
                    )
                stored = await _stored_faces(session, photo_id)
            if not stored:
                await _finish(session, photo_id, PhotoStatus.no_faces)
        if stored:
            hits = await _all(
                *(self._recognizer.search_faces(collection_id, f.cloud_face_id) for f in stored)
            )
            async with self._event_writes(event_id) as session:
                members = set(
                    await session.scalars(
                        select(EventMember.user_id).where(EventMember.event_id == event_id)
                    )
                )
                found = [
                    Candidate(face.id, photo_id, user_id, similarity_distance(hit.similarity))
                    for face, face_hits in zip(stored, hits, strict=True)
                    for hit in face_hits
                    if (user_id := _user_id(hit.external_image_id)) in members
                ]
                changed |= await _apply(session, event_id, found, photo_ids={photo_id})
                await _finish(session, photo_id, PhotoStatus.done)
        if changed:
            await self._on_matches_changed(changed)

    async def match_member(self, job: ClaimedJob) -> None:
        """A member joined or changed selfie: index it, and search it once if photos came first."""
        assert job.event_id is not None
        event_id = job.event_id
        user_ids = None if job.user_id is None else [job.user_id]
        collection_id = await self._collection(event_id)
        if collection_id is None:
            return
        async with self._event_writes(event_id) as session:
            late = await _has_stored_faces(session, event_id)
            changed = await self._index_members(
                session, event_id, collection_id, user_ids=user_ids, late=late
            )
        changed |= await self._search_members(event_id, collection_id, user_ids=user_ids)
        if changed:
            await self._on_matches_changed(changed)

    async def _collection(self, event_id: int) -> str | None:
        """The event's collection, created the first time it is needed and never again."""
        async with self._db.sessions() as session:
            known = await session.scalar(select(Event.collection_id).where(Event.id == event_id))
        if known:
            return known
        async with self._event_writes(event_id) as session:
            event = (
                await session.execute(
                    select(Event.collection_id, Event.created_at).where(Event.id == event_id)
                )
            ).one_or_none()
            if event is None:
                return None
            if event.collection_id:
                return str(event.collection_id)
            name = collection_name(self._recognizer.collection_prefix, event_id, event.created_at)
            await self._recognizer.create_collection(name)
            await session.execute(
                update(Event).where(Event.id == event_id).values(collection_id=name)
            )
        logger.info(
            "collection %s created for event %d",
            name,
            event_id,
            extra={"action": "rekognition_collection_created"},
        )
        return name

    async def _index_members(
        self,
        session: AsyncSession,
        event_id: int,
        collection_id: str,
        *,
        user_ids: Iterable[int] | None = None,
        late: bool,
    ) -> set[int]:
        """Index the selfies of members not in the collection yet, under the event's lock.

        `late`: photo faces are stored already, so each new face owes one search (recorded as
        SEARCH_PENDING until `_search_members` has done it).
        """
        query = (
            select(User.id, User.selfie)
            .join(EventMember, EventMember.user_id == User.id)
            .where(
                EventMember.event_id == event_id,
                EventMember.cloud_face_id.is_(None),
                User.selfie_descriptor.is_not(None),
            )
        )
        if user_ids is not None:
            query = query.where(User.id.in_(list(user_ids)))
        pending = (await session.execute(query.order_by(User.id))).all()
        indexed = await _all(
            *(
                self._recognizer.index_faces(
                    collection_id,
                    bytes(selfie or b""),
                    external_image_id=f"user-{user_id}",
                    max_faces=1,
                )
                for user_id, selfie in pending
            )
        )
        changed: set[int] = set()
        for (user_id, _), faces in zip(pending, indexed, strict=True):
            face_id = faces[0].face_id if faces else NO_FACE
            if face_id and late:
                face_id = SEARCH_PENDING + face_id
            await session.execute(
                update(EventMember)
                .where(EventMember.event_id == event_id, EventMember.user_id == user_id)
                .values(cloud_face_id=face_id)
            )
            if not faces:  # a new selfie that cannot be indexed: the old one's matches go
                changed |= await _rematch_member(session, event_id, user_id, [])
        return changed

    async def _search_members(
        self, event_id: int, collection_id: str, *, user_ids: Iterable[int] | None
    ) -> set[int]:
        """The one search each late member owes, and the matches it finds."""
        query = select(EventMember.user_id, EventMember.cloud_face_id).where(
            EventMember.event_id == event_id,
            EventMember.cloud_face_id.startswith(SEARCH_PENDING, autoescape=True),
        )
        if user_ids is not None:
            query = query.where(EventMember.user_id.in_(list(user_ids)))
        async with self._db.sessions() as session:
            owed = [(row.user_id, row.cloud_face_id) for row in await session.execute(query)]
        if not owed:
            return set()
        hits = await _all(
            *(
                self._recognizer.search_faces(collection_id, marked[len(SEARCH_PENDING) :])
                for _, marked in owed
            )
        )
        changed: set[int] = set()
        async with self._event_writes(event_id) as session:
            for (user_id, marked), found in zip(owed, hits, strict=True):
                current = await session.scalar(
                    select(EventMember.cloud_face_id).where(
                        EventMember.event_id == event_id, EventMember.user_id == user_id
                    )
                )
                if current != marked:
                    continue  # searched by another worker, or the selfie changed meanwhile
                changed |= await _rematch_member(session, event_id, user_id, found)
                await session.execute(
                    update(EventMember)
                    .where(EventMember.event_id == event_id, EventMember.user_id == user_id)
                    .values(cloud_face_id=marked[len(SEARCH_PENDING) :])
                )
        return changed


async def _has_stored_faces(session: AsyncSession, event_id: int) -> bool:
    found = await session.scalar(
        select(Face.id).where(Face.event_id == event_id, Face.cloud_face_id.is_not(None)).limit(1)
    )
    return found is not None


async def _rematch_member(
    session: AsyncSession, event_id: int, user_id: int, hits: list[FaceHit]
) -> set[int]:
    """The member's matches from the search of their newly indexed face; the matches of an
    earlier selfie go."""
    by_face = {hit.face_id: hit for hit in hits if _photo_id(hit.external_image_id) is not None}
    found: list[Candidate] = []
    if by_face:
        faces = await session.execute(
            select(Face.id, Face.photo_id, Face.cloud_face_id).where(
                Face.event_id == event_id, Face.cloud_face_id.in_(list(by_face))
            )
        )
        found = [
            Candidate(
                row.id,
                row.photo_id,
                user_id,
                similarity_distance(by_face[row.cloud_face_id].similarity),
            )
            for row in faces
        ]
    before = set(
        await session.scalars(
            select(FaceMatch.photo_id).where(
                FaceMatch.event_id == event_id, FaceMatch.user_id == user_id
            )
        )
    )
    photo_ids = before | {candidate.photo_id for candidate in found}
    if not photo_ids:
        return set()
    return await _apply(session, event_id, found, photo_ids=photo_ids, renewed_user=user_id)


async def _stored_faces(session: AsyncSession, photo_id: int) -> list[_StoredFace]:
    rows = await session.execute(
        select(Face.id, Face.cloud_face_id)
        .where(Face.photo_id == photo_id, Face.cloud_face_id.is_not(None))
        .order_by(Face.id)
    )
    return [_StoredFace(row.id, row.cloud_face_id) for row in rows]


async def _finish(session: AsyncSession, photo_id: int, status: PhotoStatus) -> None:
    await session.execute(
        update(Photo).where(Photo.id == photo_id).values(status=status, processed_at=utcnow())
    )


async def _apply(
    session: AsyncSession,
    event_id: int,
    found: list[Candidate],
    *,
    photo_ids: Collection[int],
    renewed_user: int | None = None,
) -> set[int]:
    """Merge new evidence into the matches of these photos.

    Stored matches are evidence too (a face that found its member earlier keeps them unless a
    more similar member claims it), except those of `renewed_user`, whose selfie is new.
    """
    existing = await session.execute(
        select(FaceMatch.photo_id, FaceMatch.user_id, FaceMatch.face_id, FaceMatch.distance).where(
            FaceMatch.event_id == event_id, FaceMatch.photo_id.in_(photo_ids)
        )
    )
    candidates = list(found)
    kept: dict[tuple[int, int], Assignment] = {}
    for row in existing:
        if row.user_id == renewed_user:
            continue
        if row.face_id is None:  # its face was purged (retention): the match stays as it is
            kept[(row.photo_id, row.user_id)] = Assignment(None, row.distance)
        else:
            candidates.append(Candidate(row.face_id, row.photo_id, row.user_id, row.distance))
    refused = await rejections(session, event_id, photo_ids=photo_ids)
    wanted = kept | choose_matches(candidates, rejected=refused)
    return await sync_matches(session, event_id, wanted, photo_ids=photo_ids)


async def _all(*calls: Coroutine[Any, Any, _T]) -> list[_T]:
    """Run calls side by side (the semaphore bounds them); one failing cancels the others."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _user_id(external_image_id: str) -> int | None:
    parsed = parse_external_id(external_image_id)
    return parsed[1] if parsed is not None and parsed[0] == "user" else None


def _photo_id(external_image_id: str) -> int | None:
    parsed = parse_external_id(external_image_id)
    return parsed[1] if parsed is not None and parsed[0] == "photo" else None
