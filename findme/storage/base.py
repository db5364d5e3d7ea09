"""What a photo storage is: where the bytes of originals and thumbnails live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Photo

CHUNK_BYTES = 256 * 1024


class PhotoStorage(Protocol):
    async def save(self, session: AsyncSession, photo: Photo, original: bytes) -> None:
        """Store a new photo's original as part of the transaction that inserts its row
        (`photo`, added to `session`, flushed or not yet)."""

    async def save_thumbnail(self, photo_id: int, thumbnail: bytes) -> None:
        """Store the grid thumbnail that the photo's job made."""

    def stream_original(self, photo_id: int, *, size_bytes: int) -> AsyncIterator[bytes]:
        """The original in bounded chunks."""

    async def read_original(self, photo_id: int) -> bytes:
        """The whole original, for the pipeline."""

    async def read_thumbnail(self, photo_id: int) -> bytes | None:
        """The grid thumbnail; None until the photo's job has made it."""

    async def delete(self, photo_ids: list[int]) -> None:
        """Forget these photos' bytes (rows are deleted by the caller)."""
