"""Photo bytes in Amazon S3 (or an S3-compatible store); the database keeps the metadata only.

Images are streamed through FindMe from S3 in chunks rather than redirected to presigned URLs:
every request still passes the app's access check and gets the `ETag`/304 handling, the bucket
stays private, and memory stays bounded whatever the photo's size. The price is that image bytes
cross the app's network twice; presigned redirects would be the next step if that ever matters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import aioboto3  # type: ignore[import-untyped]
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from findme.db import Database, Photo
from findme.errors import StorageError
from findme.settings import Settings
from findme.storage.base import CHUNK_BYTES, PhotoStorage

logger = logging.getLogger(__name__)

# Streams to slow browsers hold a connection each: more than the default 10.
POOL_CONNECTIONS = 64
DELETE_OBJECTS_BATCH = 1000
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


def open_client(session: aioboto3.Session, settings: Settings) -> AbstractAsyncContextManager[Any]:
    """The process's S3 client; endpoints follow AWS_ENDPOINT_URL(_S3)."""
    config = AioConfig(
        # total_max_attempts counts the first try; botocore's "max_attempts" would count retries.
        retries={"mode": "adaptive", "total_max_attempts": settings.aws_max_attempts},
        max_pool_connections=POOL_CONNECTIONS,
    )
    client: AbstractAsyncContextManager[Any] = session.client("s3", config=config)
    return client


class S3Storage:
    """Originals and thumbnails as objects under keys derived from the photo id."""

    def __init__(
        self, *, client: Any, bucket: str, prefix: str = "", chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._chunk_bytes = chunk_bytes
        self._cleanups: set[asyncio.Task[None]] = set()

    def original_key(self, photo_id: int) -> str:
        return f"{self.prefix}photos/{photo_id}/original"

    def thumbnail_key(self, photo_id: int) -> str:
        return f"{self.prefix}photos/{photo_id}/thumb.jpg"

    async def save(self, session: AsyncSession, photo: Photo, original: bytes) -> None:
        """Put the original; a failure raises, which rolls back the photo's row."""
        await session.flush()  # the key is the row's id
        await self._put(self.original_key(photo.id), original, "application/octet-stream")
        self._delete_on_rollback(session, photo.id)

    async def save_thumbnail(self, photo_id: int, thumbnail: bytes) -> None:
        await self._put(self.thumbnail_key(photo_id), thumbnail, "image/jpeg")

    def _delete_on_rollback(self, session: AsyncSession, photo_id: int) -> None:
        """If the transaction that inserts the row does not commit, the objects go too."""
        committed = False

        def after_commit(_session: Session) -> None:
            nonlocal committed
            committed = True

        def after_rollback(_session: Session) -> None:
            if not committed:
                task = asyncio.get_running_loop().create_task(self.delete([photo_id]))
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)

        event.listen(session.sync_session, "after_commit", after_commit, once=True)
        event.listen(session.sync_session, "after_rollback", after_rollback, once=True)

    async def aclose(self) -> None:
        """Wait for the deletions of rolled-back uploads still running."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def stream_original(self, photo_id: int, *, size_bytes: int) -> AsyncIterator[bytes]:
        response = await self._get(self.original_key(photo_id))
        if response is None:
            logger.error(
                "the original of photo %d is missing from the bucket",
                photo_id,
                extra={"action": "s3_missing", "photo_id": photo_id},
            )
            return
        body = response["Body"]
        async with body:  # released to the pool however the stream ends
            try:
                async for chunk in body.iter_chunks(self._chunk_bytes):
                    yield chunk
            except (ClientError, BotoCoreError, OSError) as error:
                raise StorageError(f"Reading the photo from S3 failed ({error}).") from error

    async def read_original(self, photo_id: int) -> bytes:
        data = await self._read(self.original_key(photo_id))
        if data is None:
            raise StorageError(f"The original of photo {photo_id} is missing from the bucket.")
        return data

    async def read_thumbnail(self, photo_id: int) -> bytes | None:
        return await self._read(self.thumbnail_key(photo_id))

    async def delete(self, photo_ids: list[int]) -> None:
        """Delete the objects; a failure is logged with the keys left behind, not raised (the
        rows are already gone: there is nothing for the caller to retry)."""
        keys = [
            key
            for photo_id in photo_ids
            for key in (self.original_key(photo_id), self.thumbnail_key(photo_id))
        ]
        for start in range(0, len(keys), DELETE_OBJECTS_BATCH):
            batch = keys[start : start + DELETE_OBJECTS_BATCH]
            try:
                response = await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            except (ClientError, BotoCoreError) as error:
                failed = batch
                logger.error("deleting objects failed: %s", error, extra={"action": "s3_orphans"})
            else:
                failed = [item["Key"] for item in response.get("Errors", [])]
            if failed:
                logger.error(
                    "%d objects were not deleted from %s: %s",
                    len(failed),
                    self.bucket,
                    " ".join(failed),
                    extra={"action": "s3_orphans", "keys": failed},
                )

    async def check(self) -> None:
        """One cheap call that proves the bucket is there and ours (HeadBucket)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(_describe(error)) from error

    async def _put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"Storing the photo in S3 failed ({_describe(error)}).") from error

    async def _get(self, key: str) -> dict[str, Any] | None:
        try:
            response: dict[str, Any] = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise StorageError(f"Reading the photo from S3 failed ({_describe(error)}).") from error
        except BotoCoreError as error:
            raise StorageError(f"Reading the photo from S3 failed ({error}).") from error
        return response

    async def _read(self, key: str) -> bytes | None:
        response = await self._get(key)
        if response is None:
            return None
        body = response["Body"]
        async with body:
            try:
                data: bytes = await body.read()
            except (ClientError, BotoCoreError, OSError) as error:
                raise StorageError(f"Reading the photo from S3 failed ({error}).") from error
        return data


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', '')}: {details.get('Message', '')}".strip(": ")
    return str(error)


async def open_storage(stack: AsyncExitStack, settings: Settings, *, db: Database) -> PhotoStorage:
    """One long-lived client per process, closed after the storage's pending clean-ups."""
    aws = aioboto3.Session(region_name=settings.aws_region)
    client = await stack.enter_async_context(open_client(aws, settings))
    storage = S3Storage(client=client, bucket=settings.s3_bucket, prefix=settings.s3_prefix)
    stack.push_async_callback(storage.aclose)  # before its client closes
    return storage
