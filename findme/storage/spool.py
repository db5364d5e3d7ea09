"""Uploaded originals kept on this machine's disk until their photo's job reads them.

An upload writes each photo to a file of its own before storing it, and the photo's job, a few
seconds later, needs the same bytes again. Read back from PostgreSQL, a 9 MB camera photo costs
~30 ms of CPU between the database and this process, a seventh of what a photo costs outside the
engine (docs/BENCHMARKS.md). So a process that runs the workers keeps the upload's file, renamed
into its spool, and the job takes it from there. The storage still holds the photo: the spool
is a copy that is read once, and never by anyone else.

What it keeps is bounded: `max_bytes` on disk at most, and a file for `max_age_s` at most (the
job may run on another instance, which reads the storage). One process per data directory
spools (it holds a lock in the directory), and it first empties what a process before it left.
A deleted or erased photo loses its spooled file with its other bytes (`SpooledStorage.delete`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import aiofiles
import aiofiles.os
from sqlalchemy.ext.asyncio import AsyncSession

from findme.db import Photo
from findme.storage.base import PhotoStorage
from findme.uploads import remove_file

logger = logging.getLogger(__name__)

# A file older than this belongs to a job another instance ran, or one still waiting behind a
# very long queue; the latter reads the storage instead.
MAX_AGE_S = 3600.0
_LOCK_NAME = ".lock"
_SUFFIX = ".original"


class Spool:
    """Files named by photo id in one directory, with their sizes counted against a budget."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        # photo id -> (size, when it was kept), oldest first
        self._kept: dict[int, tuple[int, float]] = {}
        self._bytes = 0
        self._lock: int | None = None

    def open(self) -> bool:
        """Take the directory for this process, emptied; False if another process has it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            return False
        self._lock = lock
        for left in self.directory.glob(f"*{_SUFFIX}"):
            left.unlink(missing_ok=True)
        return True

    async def close(self) -> None:
        """Remove every file (their jobs read the storage when they run again) and let go."""
        await self.discard(list(self._kept))
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @property
    def kept_bytes(self) -> int:
        return self._bytes

    async def keep(self, photo_id: int, path: Path, size_bytes: int) -> bool:
        """Move an upload's file in for its photo's job; False, with the file left where it is,
        when the spool is not open or has no room for it."""
        if self._lock is None:
            return False
        await self._expire()
        if self._bytes + size_bytes > self._max_bytes:
            return False
        try:
            await aiofiles.os.replace(path, self._path(photo_id))
        except OSError as error:
            # On another file system than the upload's, say: the job reads the storage.
            logger.warning(
                "an upload could not be spooled: %s", error, extra={"action": "spool_error"}
            )
            return False
        self._kept[photo_id] = (size_bytes, self._clock())
        self._bytes += size_bytes
        return True

    async def take(self, photo_id: int) -> bytes | None:
        """The photo's original if it is here, None if not; either way it is here no longer."""
        if not self._forget(photo_id):
            return None
        path = self._path(photo_id)
        try:
            async with aiofiles.open(path, "rb") as source:
                data: bytes = await source.read()
                return data
        except FileNotFoundError:
            # Removed by hand: the storage has it.
            logger.warning("a spooled photo's file was gone", extra={"action": "spool_missing"})
            return None
        finally:
            await remove_file(path)

    async def discard(self, photo_ids: Iterable[int]) -> None:
        for photo_id in photo_ids:
            if self._forget(photo_id):
                await remove_file(self._path(photo_id))

    async def _expire(self) -> None:
        oldest_kept = self._clock() - self._max_age_s
        expired = [photo_id for photo_id, (_, kept) in self._kept.items() if kept < oldest_kept]
        await self.discard(expired)

    def _forget(self, photo_id: int) -> bool:
        # Synchronous, so a take and a discard of the same photo never both act on its file.
        entry = self._kept.pop(photo_id, None)
        if entry is None:
            return False
        self._bytes -= entry[0]
        return True

    def _path(self, photo_id: int) -> Path:
        return self.directory / f"{photo_id}{_SUFFIX}"


class SpooledStorage:
    """A storage whose originals are taken from the spool when their upload left them there."""

    def __init__(self, storage: PhotoStorage, spool: Spool) -> None:
        self._storage = storage
        self._spool = spool

    async def save(self, session: AsyncSession, photo: Photo, original: bytes) -> None:
        await self._storage.save(session, photo, original)

    async def save_thumbnail(self, photo_id: int, thumbnail: bytes) -> None:
        await self._storage.save_thumbnail(photo_id, thumbnail)

    def stream_original(self, photo_id: int, *, size_bytes: int) -> AsyncIterator[bytes]:
        return self._storage.stream_original(photo_id, size_bytes=size_bytes)

    async def read_original(self, photo_id: int) -> bytes:
        spooled = await self._spool.take(photo_id)
        return spooled if spooled is not None else await self._storage.read_original(photo_id)

    async def read_thumbnail(self, photo_id: int) -> bytes | None:
        return await self._storage.read_thumbnail(photo_id)

    async def delete(self, photo_ids: list[int]) -> None:
        await self._spool.discard(photo_ids)
        await self._storage.delete(photo_ids)
