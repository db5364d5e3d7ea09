"""Amazon Rekognition as the recognition engine: one face collection per event.

A selfie is indexed with ExternalImageId `user-<id>`, a photo with `photo-<id>`, and each face of
a photo is searched once; a member who joins after photos were indexed costs one IndexFaces and
one SearchFaces. For a fresh event with U members, P photos and F faces that is 1 + U + P + F
calls. What is done is recorded under the event's lock (`events.collection_id`,
`event_members.cloud_face_id`, `faces.cloud_face_id`, `photos.processed_at`), so neither a restart
nor concurrent workers pay for it twice. Selfies are still checked for exactly one face locally,
and photos' thumbnails are made in the same local process pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import aioboto3  # type: ignore[import-untyped]
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Database, Event, EventMember, Selfie
from findme.engines.base import (
    EnrolledSelfie,
    MatchesChanged,
    NewFace,
    PhotoJobs,
    finish_photo,
    store_faces,
)
from findme.engines.local.engine import open_recognizer, selfie_descriptor
from findme.engines.local.pool import LocalRecognizer
from findme.engines.matching import Candidate
from findme.engines.rekognition.client import (
    FaceHit,
    IndexedFace,
    RekognitionClient,
    collection_name,
    open_client,
    similarity_distance,
)
from findme.engines.rekognition.erasure import CloudErasure
from findme.engines.rekognition.records import (
    SEARCH_PENDING,
    apply_evidence,
    has_stored_faces,
    record_face_ids,
    recorded_face_ids,
    rematch_member,
    stored_faces,
    user_id_of,
)
from findme.jobs import ClaimedJob
from findme.settings import Settings
from findme.storage import PhotoStorage

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class RekognitionEngine(CloudErasure, PhotoJobs):
    """Photos and selfies indexed in the event's collection; matches from SearchFaces."""

    name = "rekognition"

    def __init__(
        self,
        *,
        db: Database,
        storage: PhotoStorage,
        client: RekognitionClient,
        local_pool: LocalRecognizer,
        on_matches_changed: MatchesChanged,
    ) -> None:
        super().__init__(db=db, storage=storage, on_matches_changed=on_matches_changed)
        self.client = client
        # checks selfies for exactly one face, and makes the photos' thumbnails
        self.local_pool = local_pool

    def describe(self) -> dict[str, str]:
        return {
            "engine": self.name,
            "detector": f"Amazon Rekognition (selfies: {self.local_pool.detector_name})",
        }

    async def warm_up(self) -> None:
        await self.local_pool.warm_up()

    async def enrol_selfie(self, data: bytes) -> EnrolledSelfie:
        return await selfie_descriptor(self.local_pool, data)

    async def process_photo(self, job: ClaimedJob) -> None:
        assert job.photo_id is not None
        photo_id = job.photo_id
        started = await self._start_photo(photo_id)
        if started is None or started.finished:
            return  # deleted while queued, or finished before a restart: nothing is paid twice
        event_id = started.event_id
        data = await self._storage.read_original(photo_id)
        # Made first: a photo whose pixels cannot be decoded fails before any call is paid for.
        thumbnail = await self.local_pool.make_thumbnail(data)
        if not await self._keep_thumbnail(photo_id, thumbnail):
            return  # deleted meanwhile
        async with self._db.sessions() as session:
            stored = await stored_faces(session, photo_id)
        collection_id = await self._collection(event_id)
        if collection_id is None:
            return  # the event was deleted
        indexed: list[IndexedFace] | None = None
        if not stored:
            indexed = await self.client.index_faces(
                collection_id, data, external_image_id=f"photo-{photo_id}"
            )
        changed: set[int] = set()
        async with self._event_writes(event_id) as session:
            if not await has_stored_faces(session, event_id):
                # A fresh event: the members waiting for their own jobs are indexed before the
                # first photo faces are stored, so the photos' searches find them and they owe
                # no search of their own. Later joiners are left to their jobs.
                changed |= await self._index_members(session, event_id, collection_id, late=False)
            if indexed is not None:
                # Recorded before searching: a retried job never indexes this photo again.
                new = [NewFace(face.box, cloud_face_id=face.face_id) for face in indexed]
                await store_faces(session, photo_id=photo_id, event_id=event_id, faces=new)
                stored = await stored_faces(session, photo_id)
            if not stored:
                await finish_photo(session, photo_id, found_faces=False)
        if stored:
            hits = await _all(
                *(self.client.search_faces(collection_id, f.cloud_face_id) for f in stored)
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
                    if (user_id := user_id_of(hit.external_image_id)) in members
                ]
                changed |= await apply_evidence(session, event_id, found, photo_ids={photo_id})
                await finish_photo(session, photo_id, found_faces=True)
        await self._announce(changed)

    async def match_member(self, job: ClaimedJob) -> None:
        """A member joined or changed selfie: index it, and search it once if photos came first."""
        assert job.event_id is not None
        event_id = job.event_id
        user_ids = None if job.user_id is None else [job.user_id]
        collection_id = await self._collection(event_id)
        if collection_id is None:
            return
        async with self._event_writes(event_id) as session:
            late = await has_stored_faces(session, event_id)
            changed = await self._index_members(
                session, event_id, collection_id, user_ids=user_ids, late=late
            )
        changed |= await self._search_members(event_id, collection_id, user_ids=user_ids)
        await self._announce(changed)

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
            name = collection_name(self.client.collection_prefix, event_id, event.created_at)
            await self.client.create_collection(name)
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
            select(Selfie.user_id, Selfie.image)
            .join(EventMember, EventMember.user_id == Selfie.user_id)
            .where(EventMember.event_id == event_id, EventMember.cloud_face_id.is_(None))
        )
        if user_ids is not None:
            query = query.where(Selfie.user_id.in_(list(user_ids)))
        pending = (await session.execute(query.order_by(Selfie.user_id, Selfie.id))).all()
        indexed = await _all(
            *(
                self.client.index_faces(
                    collection_id,
                    bytes(image or b""),
                    external_image_id=f"user-{user_id}",
                    max_faces=1,
                )
                for user_id, image in pending
            )
        )
        face_ids: dict[int, list[str]] = {}
        for (user_id, _), faces in zip(pending, indexed, strict=True):
            face_ids.setdefault(user_id, []).extend(face.face_id for face in faces)
        changed: set[int] = set()
        if user_ids is not None:
            # A member who removed their last selfie: their matches go with it.
            with_selfies = set(
                await session.scalars(
                    select(Selfie.user_id).where(Selfie.user_id.in_(list(user_ids)))
                )
            )
            for user_id in set(user_ids) - with_selfies:
                changed |= await rematch_member(session, event_id, user_id, [])
        for user_id, ids in face_ids.items():
            await session.execute(
                update(EventMember)
                .where(EventMember.event_id == event_id, EventMember.user_id == user_id)
                .values(cloud_face_id=record_face_ids(ids, search_owed=late))
            )
            if not ids:  # new selfies that cannot be indexed: the old ones' matches go
                changed |= await rematch_member(session, event_id, user_id, [])
        return changed

    async def _search_members(
        self, event_id: int, collection_id: str, *, user_ids: Iterable[int] | None
    ) -> set[int]:
        """The one search per selfie face each late member owes, and the matches they find."""
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
        searches = [
            (user_id, face_id) for user_id, marked in owed for face_id in recorded_face_ids(marked)
        ]
        hits = await _all(
            *(self.client.search_faces(collection_id, face_id) for _, face_id in searches)
        )
        found: dict[int, list[FaceHit]] = {user_id: [] for user_id, _ in owed}
        for (user_id, _), face_hits in zip(searches, hits, strict=True):
            found[user_id].extend(face_hits)
        changed: set[int] = set()
        async with self._event_writes(event_id) as session:
            for user_id, marked in owed:
                current = await session.scalar(
                    select(EventMember.cloud_face_id).where(
                        EventMember.event_id == event_id, EventMember.user_id == user_id
                    )
                )
                if current != marked:
                    continue  # searched by another worker, or the selfie changed meanwhile
                changed |= await rematch_member(session, event_id, user_id, found[user_id])
                await session.execute(
                    update(EventMember)
                    .where(EventMember.event_id == event_id, EventMember.user_id == user_id)
                    .values(
                        cloud_face_id=record_face_ids(recorded_face_ids(marked), search_owed=False)
                    )
                )
        return changed


async def _all(*calls: Coroutine[Any, Any, _T]) -> list[_T]:
    """Run calls side by side (the semaphore bounds them); one failing cancels the others."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def open_engine(
    stack: AsyncExitStack,
    settings: Settings,
    *,
    db: Database,
    storage: PhotoStorage,
    on_matches_changed: MatchesChanged,
) -> RekognitionEngine:
    """One long-lived Rekognition client per process, and the local pool for selfie checks and
    thumbnails."""
    aws = aioboto3.Session(region_name=settings.aws_region)
    client = await stack.enter_async_context(open_client(aws, settings))
    return RekognitionEngine(
        db=db,
        storage=storage,
        client=RekognitionClient(
            client=client,
            concurrency=settings.aws_concurrency,
            collection_prefix=settings.rekognition_collection_prefix,
            min_similarity=settings.rekognition_min_similarity,
        ),
        local_pool=await open_recognizer(stack, settings),
        on_matches_changed=on_matches_changed,
    )
