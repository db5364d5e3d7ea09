"""Amazon Rekognition as the recognition engine: one face collection per event.

A selfie is indexed with ExternalImageId `user-<id>`, a photo with `photo-<id>`, and each face of
a photo is searched once; a member who joins after photos were indexed costs one IndexFaces and
one SearchFaces. For a fresh event with U members, P photos and F faces that is 1 + U + P + F
calls. What is done is recorded under the event's lock (`events.collection_id`,
`event_members.cloud_face_id`, `faces.cloud_face_id`, `photos.processed_at`), so neither a restart
nor concurrent workers pay for it twice.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import aioboto3  # type: ignore[import-untyped]
import pillow_heif
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from PIL import Image, ImageOps
from sqlalchemy import delete, insert, select, update
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
    User,
    utcnow,
)
from findme.errors import RecognitionError
from findme.images import to_rgb
from findme.jobs import ClaimedJob
from findme.matching import (
    Assignment,
    Candidate,
    EventLocks,
    MatchesChanged,
    choose_matches,
    expired_events,
    lock_events,
    rejections,
    sync_matches,
)
from findme.settings import Settings
from findme.storage import PhotoStorage

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

pillow_heif.register_heif_opener()

# Rekognition takes JPEG or PNG bytes up to 5 MB.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
# SearchFaces answers at most this many faces: a person in more photos than this is cut short.
SEARCH_MAX_FACES = 4096
DELETE_FACES_BATCH = 4096
# event_members.cloud_face_id of a selfie Rekognition would not index: not tried again until the
# selfie changes (which resets it to NULL).
NO_FACE = ""
# Prefixed to event_members.cloud_face_id while the selfie, indexed after photo faces, still owes
# its one SearchFaces: recorded before searching, so a retry searches without indexing again.
SEARCH_PENDING = "?"
_EXTERNAL_ID = re.compile(r"(user|photo)-(\d+)")
_ORIENTATION_TAG = 0x0112
_FINISHED = (PhotoStatus.done, PhotoStatus.no_faces)


def open_client(session: aioboto3.Session, settings: Settings) -> AbstractAsyncContextManager[Any]:
    """The process's Rekognition client. Throttling is retried with backoff (adaptive mode also
    slows this client down while AWS throttles it); endpoints follow AWS_ENDPOINT_URL(_REKOGNITION).
    """
    config = AioConfig(
        # total_max_attempts counts the first try; botocore's "max_attempts" would count retries.
        retries={"mode": "adaptive", "total_max_attempts": settings.aws_max_attempts},
        max_pool_connections=settings.aws_concurrency,
    )
    client: AbstractAsyncContextManager[Any] = session.client("rekognition", config=config)
    return client


@dataclass(frozen=True)
class CloudImage:
    data: bytes
    # the EXIF-oriented full-resolution size, which Rekognition's box ratios refer to
    width: int
    height: int


def prepare_image(data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES) -> CloudImage:
    """What Rekognition is sent: the original if it is an upright JPEG under the size limit, else
    a JPEG with the EXIF orientation applied, made smaller until it fits.

    HEIC and WebP are not accepted by Rekognition; PNG is, but a JPEG is smaller. Rekognition
    does not rotate PNGs at all, so boxes always refer to the upright image this way.
    """
    try:
        image = Image.open(io.BytesIO(data))
        with image:
            orientation = image.getexif().get(_ORIENTATION_TAG, 1)
            width, height = image.size
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if image.format == "JPEG" and len(data) <= max_bytes and orientation in (0, 1):
                return CloudImage(data, width, height)
            image.load()
            upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise RecognitionError(f"The image cannot be read ({error}).") from error
    return CloudImage(_jpeg_under(to_rgb(upright), max_bytes), width, height)


def _jpeg_under(image: Image.Image, max_bytes: int) -> bytes:
    scaled = image
    for _ in range(8):
        out = io.BytesIO()
        scaled.save(out, "JPEG", quality=90)
        if out.tell() <= max_bytes:
            return out.getvalue()
        # Bytes grow with the pixel count: shrink both sides by the square root, with margin.
        factor = math.sqrt(max_bytes / out.tell()) * 0.9
        size = (max(1, round(scaled.width * factor)), max(1, round(scaled.height * factor)))
        scaled = image.resize(size, Image.Resampling.LANCZOS)
    raise RecognitionError("The image could not be made small enough for Amazon Rekognition.")


def collection_name(prefix: str, event_id: int, created_at: Any) -> str:
    """The event's collection: its creation time in the name keeps a rebuilt database (whose ids
    start again) from adopting a collection of another event."""
    return f"{prefix}{event_id}-{int(created_at.timestamp())}"


def parse_external_id(external_image_id: str | None) -> tuple[str, int] | None:
    """`user-12` → ("user", 12); `photo-7` → ("photo", 7); anything else → None."""
    found = _EXTERNAL_ID.fullmatch(external_image_id or "")
    return None if found is None else (found[1], int(found[2]))


def similarity_distance(similarity: float) -> float:
    """Rekognition's similarity (percent, higher is closer) as a match distance (lower is)."""
    return (100.0 - similarity) / 100.0


@dataclass(frozen=True)
class IndexedFace:
    face_id: str
    # left, top, right, bottom in the pixels of the upright full-resolution image
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class FaceHit:
    face_id: str
    external_image_id: str
    similarity: float


class RekognitionRecognizer:
    """One long-lived client; every call waits for the semaphore and is counted by kind."""

    def __init__(
        self,
        *,
        client: Any,
        concurrency: int,
        collection_prefix: str,
        min_similarity: float,
    ) -> None:
        self.client = client
        self.collection_prefix = collection_prefix
        self.min_similarity = min_similarity
        self.calls: Counter[str] = Counter()
        self.unindexed: Counter[str] = Counter()
        self._semaphore = asyncio.Semaphore(concurrency)

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        name = operation.title().replace("_", "")
        async with self._semaphore:
            self.calls[name] += 1
            try:
                response: dict[str, Any] = await getattr(self.client, operation)(**params)
            except ClientError as error:
                details = error.response.get("Error", {})
                code = details.get("Code", "")
                raise RecognitionError(
                    f"Amazon Rekognition refused {name}: {code} ({details.get('Message', '')}).",
                    aws_code=code,
                ) from error
            except BotoCoreError as error:
                raise RecognitionError(
                    f"Amazon Rekognition could not be reached for {name}: {error}."
                ) from error
        return response

    async def list_collections(self) -> list[str]:
        response = await self._call("list_collections", MaxResults=1)
        return list(response.get("CollectionIds", []))

    async def create_collection(self, collection_id: str) -> None:
        try:
            await self._call("create_collection", CollectionId=collection_id)
        except RecognitionError as error:
            if error.extra.get("aws_code") != "ResourceAlreadyExistsException":
                raise
            # Created by a process that died before recording it: it is this event's.
            logger.info(
                "collection %s already exists; adopted",
                collection_id,
                extra={"action": "rekognition_collection_adopted"},
            )

    async def delete_collection(self, collection_id: str) -> None:
        try:
            await self._call("delete_collection", CollectionId=collection_id)
        except RecognitionError as error:
            if error.extra.get("aws_code") != "ResourceNotFoundException":
                raise

    async def delete_faces(self, collection_id: str, face_ids: list[str]) -> None:
        for start in range(0, len(face_ids), DELETE_FACES_BATCH):
            try:
                await self._call(
                    "delete_faces",
                    CollectionId=collection_id,
                    FaceIds=face_ids[start : start + DELETE_FACES_BATCH],
                )
            except RecognitionError as error:
                if error.extra.get("aws_code") != "ResourceNotFoundException":
                    raise

    async def index_faces(
        self,
        collection_id: str,
        data: bytes,
        *,
        external_image_id: str,
        max_faces: int | None = None,
    ) -> list[IndexedFace]:
        image = await asyncio.to_thread(prepare_image, data)
        params: dict[str, Any] = {
            "CollectionId": collection_id,
            "Image": {"Bytes": image.data},
            "ExternalImageId": external_image_id,
        }
        if max_faces is not None:
            params["MaxFaces"] = max_faces
        response = await self._call("index_faces", **params)
        self._log_unindexed(external_image_id, response.get("UnindexedFaces", []))
        return [
            IndexedFace(
                face_id=record["Face"]["FaceId"],
                box=_pixel_box(record["Face"].get("BoundingBox", {}), image.width, image.height),
            )
            for record in response.get("FaceRecords", [])
        ]

    def _log_unindexed(self, external_image_id: str, unindexed: list[dict[str, Any]]) -> None:
        if not unindexed:
            return
        reasons = Counter(
            reason for face in unindexed for reason in face.get("Reasons", []) or ["UNKNOWN"]
        )
        self.unindexed.update(reasons)
        logger.warning(
            "%d faces of %s were not indexed: %s",
            len(unindexed),
            external_image_id,
            ", ".join(f"{reason} x{count}" for reason, count in sorted(reasons.items())),
            extra={
                "action": "rekognition_unindexed",
                "external_image_id": external_image_id,
                "reasons": dict(reasons),
            },
        )

    async def search_faces(self, collection_id: str, face_id: str) -> list[FaceHit]:
        response = await self._call(
            "search_faces",
            CollectionId=collection_id,
            FaceId=face_id,
            FaceMatchThreshold=self.min_similarity,
            MaxFaces=SEARCH_MAX_FACES,
        )
        matches = response.get("FaceMatches", [])
        if len(matches) >= SEARCH_MAX_FACES:
            logger.warning(
                "face %s has %d look-alikes or more: later ones are not seen",
                face_id,
                SEARCH_MAX_FACES,
                extra={"action": "rekognition_search_capped"},
            )
        return [
            FaceHit(
                face_id=match["Face"]["FaceId"],
                external_image_id=match["Face"].get("ExternalImageId", ""),
                similarity=float(match["Similarity"]),
            )
            for match in matches
            if float(match.get("Similarity", 0.0)) >= self.min_similarity
        ]

    # The cloud side of deletions, inside the transaction that deletes or changes the rows and
    # before it commits: if AWS fails, the rows stay and the request can be repeated.

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
        for collection_id, face_id in rows.all():
            if collection_id and face_id:
                await self.delete_faces(collection_id, [face_id.removeprefix(SEARCH_PENDING)])
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
        await self.delete_collections(session, organised)

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
            await self.delete_faces(rows[0].collection_id, [row.cloud_face_id for row in rows])

    async def delete_collections(self, session: AsyncSession, event_ids: Collection[int]) -> None:
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
                await self.delete_collection(name)
        await session.execute(
            update(Event).where(Event.id.in_(event_ids)).values(collection_id=None)
        )

    async def purge_expired(self, db: Database, *, retention_days: int) -> int:
        """Retention: delete the collections of events past it, as their face rows are."""
        async with db.sessions() as session:
            expired = list(
                await session.scalars(
                    expired_events(retention_days=retention_days).where(
                        Event.collection_id.is_not(None)
                    )
                )
            )
        for event_id in expired:
            async with db.transaction() as session:
                await self.delete_collections(session, [event_id])
                await session.execute(
                    update(EventMember)
                    .where(EventMember.event_id == event_id)
                    .values(cloud_face_id=None)
                )
        return len(expired)


def _pixel_box(ratios: dict[str, float], width: int, height: int) -> tuple[int, int, int, int]:
    left, top = ratios.get("Left", 0.0), ratios.get("Top", 0.0)
    right, bottom = left + ratios.get("Width", 0.0), top + ratios.get("Height", 0.0)
    return (
        min(width, max(0, round(left * width))),
        min(height, max(0, round(top * height))),
        min(width, max(0, round(right * width))),
        min(height, max(0, round(bottom * height))),
    )


@dataclass(frozen=True)
class _StoredFace:
    id: int
    cloud_face_id: str


class RekognitionMatcher:
    """The handlers of `process_photo` and `match_member` jobs on Rekognition."""

    def __init__(
        self,
        *,
        db: Database,
        storage: PhotoStorage,
        recognizer: RekognitionRecognizer,
        on_matches_changed: MatchesChanged,
    ) -> None:
        self._db = db
        self._storage = storage
        self._recognizer = recognizer
        self._on_matches_changed = on_matches_changed
        self._event_writes = EventLocks(db).transaction

    def handlers(self) -> dict[JobKind, Callable[[ClaimedJob], Awaitable[None]]]:
        return {
            JobKind.process_photo: self.process_photo,
            JobKind.match_member: self.match_member,
        }

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
