"""The local engine's jobs: faces and descriptors from dlib, matched by descriptor distance."""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AsyncExitStack

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Database, EventMember, FaceMatch, Selfie
from findme.engines.base import (
    EnrolledSelfie,
    MatchesChanged,
    NewFace,
    PhotoJobs,
    finish_photo,
    store_faces,
)
from findme.engines.local.batch_heads import BatchHeads
from findme.engines.local.face_index import FaceIndex
from findme.engines.local.faces import DESCRIPTOR_BYTES, UnreadableImage
from findme.engines.local.pool import LocalRecognizer
from findme.engines.matching import (
    FaceRow,
    match_faces,
    rejections,
    sync_matches,
    sync_suggestions,
)
from findme.errors import BadRequest, NoFace, SeveralFaces
from findme.jobs import ClaimedJob
from findme.settings import Settings
from findme.storage import PhotoStorage


class LocalEngine(PhotoJobs):
    """Faces found and described on this machine; a face goes to the nearest member under the
    threshold."""

    name = "local"

    def __init__(
        self,
        *,
        db: Database,
        storage: PhotoStorage,
        recognizer: LocalRecognizer,
        threshold: float,
        suggestion_margin: float,
        on_matches_changed: MatchesChanged,
    ) -> None:
        super().__init__(db=db, storage=storage, on_matches_changed=on_matches_changed)
        self.recognizer = recognizer
        self._threshold = threshold
        self._suggestion_margin = suggestion_margin
        self.face_index = FaceIndex()
        self._batch_heads = BatchHeads()

    def describe(self) -> dict[str, str]:
        return {"engine": self.name, "detector": self.recognizer.detector_name}

    async def warm_up(self) -> None:
        await self.recognizer.warm_up()

    async def enrol_selfie(self, data: bytes) -> EnrolledSelfie:
        return await selfie_descriptor(self.recognizer, data)

    async def process_photo(self, job: ClaimedJob) -> None:
        assert job.photo_id is not None
        started = await self._start_photo(job.photo_id)
        if started is None:
            return  # deleted while queued: nothing to do
        event_id = started.event_id
        data = await self._storage.read_original(job.photo_id)
        analysis = await self.recognizer.analyse_photo(
            data, urgent=self._batch_heads.is_head(event_id)
        )
        assert analysis.thumbnail is not None  # the recognizer makes one with every photo
        if not await self._keep_thumbnail(job.photo_id, analysis.thumbnail):
            return  # deleted while it was analysed
        async with self._event_writes(event_id) as session:
            found = [NewFace(face.box, descriptor=face.descriptor) for face in analysis.faces]
            ids = await store_faces(session, photo_id=job.photo_id, event_id=event_id, faces=found)
            faces = [
                FaceRow(face_id, job.photo_id, face.descriptor)
                for face_id, face in zip(ids, analysis.faces, strict=True)
            ]
            members = await member_descriptors(session, event_id)
            changed = await self._match(session, event_id, faces, members, [job.photo_id])
            await finish_photo(session, job.photo_id, found_faces=bool(faces))
        await self._announce(changed)

    async def match_member(self, job: ClaimedJob) -> None:
        """A member joined or changed selfie: match again the photos they may gain or lose.

        No photo is decoded again. The member alone is compared with every stored face of the
        event (held in memory, see face_index.py: a 10,000-photo event has 20,000 faces); the
        photos where a face is near them, or that were theirs, are then matched with every
        member as a new photo would be. No other photo can change: the member is near none of
        its faces, and it was not theirs.
        """
        assert job.event_id is not None and job.user_id is not None
        event_id, user_id = job.event_id, job.user_id
        async with self._event_writes(event_id) as session:
            event_faces = await self.face_index.current(await session.connection(), event_id)
            members = await member_descriptors(session, event_id)
            theirs = [descriptor for member, descriptor in members if member == user_id]
            photo_ids = set(
                await session.scalars(
                    select(FaceMatch.photo_id).where(
                        FaceMatch.user_id == user_id, FaceMatch.event_id == event_id
                    )
                )
            )
            # Near enough for a match, or for a suggestion.
            reach = self._threshold + self._suggestion_margin
            photo_ids |= event_faces.photos_near(theirs, reach=reach)
            if not photo_ids:
                return
            faces = event_faces.faces_of(photo_ids)
            changed = await self._match(session, event_id, faces, members, photo_ids)
        await self._announce(changed)

    async def _match(
        self,
        session: AsyncSession,
        event_id: int,
        faces: list[FaceRow],
        members: list[tuple[int, bytes]],
        photo_ids: Collection[int],
    ) -> set[int]:
        """Match these photos' faces with the members, store matches and suggestions; returns
        the users whose matches changed."""
        rejected = await rejections(session, event_id, photo_ids=photo_ids)
        outcome = match_faces(
            faces,
            members,
            threshold=self._threshold,
            margin=self._suggestion_margin,
            rejected=rejected,
        )
        changed = await sync_matches(session, event_id, outcome.matches, photo_ids=photo_ids)
        await sync_suggestions(session, event_id, outcome.suggestions, photo_ids=photo_ids)
        return changed

    # Descriptors live in rows that go with the user, photo or event, and in the face index.

    async def forget_selfie(self, session: AsyncSession, user_id: int) -> None:
        pass

    async def forget_photo(self, session: AsyncSession, photo_id: int) -> None:
        self.face_index.forget_photo(photo_id)

    async def forget_user(self, session: AsyncSession, user_id: int) -> None:
        pass

    async def forget_events(self, session: AsyncSession, event_ids: Collection[int]) -> None:
        self.face_index.forget_events(event_ids)

    async def purge_expired(self, *, retention_days: int) -> int:
        purged = await super().purge_expired(retention_days=retention_days)
        if purged:
            self.face_index.clear()
        return purged


async def selfie_descriptor(recognizer: LocalRecognizer, data: bytes) -> EnrolledSelfie:
    """The one face of a selfie; every engine checks selfies this way."""
    try:
        analysis = await recognizer.analyse_selfie(data)
    except UnreadableImage as error:
        raise BadRequest(str(error)) from None
    if not analysis.faces:
        raise NoFace()
    if len(analysis.faces) > 1:
        raise SeveralFaces()
    face = analysis.faces[0]
    return EnrolledSelfie(descriptor=face.descriptor, box=face.box)


async def member_descriptors(session: AsyncSession, event_id: int) -> list[tuple[int, bytes]]:
    """(user_id, descriptor) of every selfie of the event's members."""
    rows = await session.execute(
        select(Selfie.user_id, Selfie.descriptor)
        .join(EventMember, EventMember.user_id == Selfie.user_id)
        .where(EventMember.event_id == event_id)
        .order_by(Selfie.id)
    )
    return [
        (row.user_id, bytes(row.descriptor))
        for row in rows
        if len(row.descriptor) == DESCRIPTOR_BYTES
    ]


async def open_recognizer(stack: AsyncExitStack, settings: Settings) -> LocalRecognizer:
    """The process pool of the face code (and of photo thumbnails), closed with the process."""
    return await stack.enter_async_context(
        LocalRecognizer(
            processes=settings.engine_processes,
            min_face_px=settings.min_face_px,
            thumbnail_px=settings.thumbnail_px,
            niceness=settings.engine_niceness,
            urgent_processes=settings.engine_urgent_processes,
            detector=settings.detector,
            min_score=settings.detector_min_score,
        )
    )


async def open_engine(
    stack: AsyncExitStack,
    settings: Settings,
    *,
    db: Database,
    storage: PhotoStorage,
    on_matches_changed: MatchesChanged,
) -> LocalEngine:
    return LocalEngine(
        db=db,
        storage=storage,
        recognizer=await open_recognizer(stack, settings),
        threshold=settings.match_threshold,
        suggestion_margin=settings.suggestion_margin,
        on_matches_changed=on_matches_changed,
    )
