"""Photo bytes in the photos table's deferred columns: the default storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Database, Photo
from findme.settings import Settings
from findme.storage.base import CHUNK_BYTES, PhotoStorage


class DatabaseStorage:
    """Bytes in the photos table's deferred columns, read back in bounded chunks."""

    def __init__(self, db: Database, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._db = db
        self._chunk_bytes = chunk_bytes

    async def save(self, session: AsyncSession, photo: Photo, original: bytes) -> None:
        # A column of the row: before the row's first flush it goes in with the INSERT, where an
        # UPDATE after it would cost a round trip and write the row twice (docs/BENCHMARKS.md).
        photo.original = original

    async def save_thumbnail(self, photo_id: int, thumbnail: bytes) -> None:
        async with self._db.transaction() as session:
            await session.execute(
                update(Photo).where(Photo.id == photo_id).values(thumbnail=thumbnail)
            )

    async def stream_original(self, photo_id: int, *, size_bytes: int) -> AsyncIterator[bytes]:
        # substr() on bytea (PostgreSQL) and blobs (SQLite) reads only the slice asked for, so a
        # 12 MB original never sits whole in this process's memory.
        for offset in range(0, size_bytes, self._chunk_bytes):
            async with self._db.sessions() as session:
                chunk = await session.scalar(
                    select(func.substr(Photo.original, offset + 1, self._chunk_bytes)).where(
                        Photo.id == photo_id
                    )
                )
            if not chunk:
                return
            yield bytes(chunk)

    async def read_original(self, photo_id: int) -> bytes:
        async with self._db.sessions() as session:
            data = await session.scalar(select(Photo.original).where(Photo.id == photo_id))
        return bytes(data or b"")

    async def read_thumbnail(self, photo_id: int) -> bytes | None:
        async with self._db.sessions() as session:
            data = await session.scalar(select(Photo.thumbnail).where(Photo.id == photo_id))
        return None if data is None else bytes(data)

    async def delete(self, photo_ids: list[int]) -> None:
        """The bytes go with the rows."""


async def open_storage(stack: AsyncExitStack, settings: Settings, *, db: Database) -> PhotoStorage:
    return DatabaseStorage(db)
