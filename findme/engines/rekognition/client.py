"""The Amazon Rekognition client: the calls FindMe makes, bounded, counted and translated.

It holds no SQL: what is indexed and searched, and what is recorded of it, is decided by
`findme.engines.rekognition.engine`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
from collections import Counter
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aioboto3  # type: ignore[import-untyped]
import pillow_heif
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from PIL import Image, ImageOps

from findme.errors import RecognitionError
from findme.images import to_rgb
from findme.settings import Settings

logger = logging.getLogger(__name__)


pillow_heif.register_heif_opener()

# Rekognition takes JPEG or PNG bytes up to 5 MB.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
# SearchFaces answers at most this many faces: a person in more photos than this is cut short.
SEARCH_MAX_FACES = 4096
DELETE_FACES_BATCH = 4096
_EXTERNAL_ID = re.compile(r"(user|photo)-(\d+)")
_ORIENTATION_TAG = 0x0112


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


class RekognitionClient:
    """One long-lived client; every call waits for the semaphore and is counted by kind."""

    def __init__(
        self,
        *,
        client: Any,
        concurrency: int,
        collection_prefix: str,
        min_similarity: float,
    ) -> None:
        self.aws = client
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
                response: dict[str, Any] = await getattr(self.aws, operation)(**params)
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


def _pixel_box(ratios: dict[str, float], width: int, height: int) -> tuple[int, int, int, int]:
    left, top = ratios.get("Left", 0.0), ratios.get("Top", 0.0)
    right, bottom = left + ratios.get("Width", 0.0), top + ratios.get("Height", 0.0)
    return (
        min(width, max(0, round(left * width))),
        min(height, max(0, round(top * height))),
        min(width, max(0, round(right * width))),
        min(height, max(0, round(bottom * height))),
    )
