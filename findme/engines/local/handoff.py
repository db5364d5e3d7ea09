"""How a photo's bytes reach an engine process: an anonymous memory file rather than the pipe.

Through the pool's pipe, a 9 MB camera photo is pickled and pushed 64 KB at a time, waking both
processes for every piece: 34 ms, 19 of them the sending process's CPU, which the web process
and the engine share two cores with. Written into a memory file (memfd) that the engine process
opens through /proc, the same bytes cost 4 ms and 2.6 ms (docs/BENCHMARKS.md, "Photos reach
the engine processes in memory files"). The file has no name: nothing is left behind when a
process dies, and it is gone once the call is over. Where memory files cannot be made or opened
(not Linux, a /proc the engine processes may not read), the bytes go through the pipe, after one
warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class HandoffRefused(Exception):
    """The engine process could not read the photo's memory file."""


@dataclass(frozen=True)
class MemoryFile:
    """The memory file that the process `pid` holds as its descriptor `fd`, named by its device
    and inode, so that a descriptor closed and reused meanwhile is never taken for it."""

    pid: int
    fd: int
    device: int
    inode: int

    @classmethod
    def of(cls, fd: int) -> MemoryFile:
        """The memory file this process holds as `fd`."""
        status = os.fstat(fd)
        return cls(os.getpid(), fd, status.st_dev, status.st_ino)

    def read(self) -> bytes:
        # A call given up while queued still runs, after its file was closed: the number may name
        # a pipe by then, whose open and read would wait for ever. Opened without waiting, and
        # read only if it is still the same file.
        try:
            fd = os.open(f"/proc/{self.pid}/fd/{self.fd}", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as error:
            raise HandoffRefused(f"the photo's memory file cannot be read: {error}") from None
        try:
            status = os.fstat(fd)
            if (status.st_dev, status.st_ino) != (self.device, self.inode):
                raise HandoffRefused("the photo's memory file is gone: its call was given up")
            with open(fd, "rb", closefd=False) as file:
                return file.read()
        finally:
            os.close(fd)


def call_with_photo(source: MemoryFile | bytes, function: Callable[..., _T], **kwargs: Any) -> _T:
    """`function(photo, **kwargs)` in an engine process, the photo read from where it was put."""
    data = source.read() if isinstance(source, MemoryFile) else source
    return function(data, **kwargs)


class Handoff:
    """Puts photos where engine processes read them: memory files while they work, else bytes."""

    def __init__(self) -> None:
        self.memory_files = hasattr(os, "memfd_create")

    @contextlib.asynccontextmanager
    async def source(self, data: bytes) -> AsyncIterator[MemoryFile | bytes]:
        """What to hand an engine process for `data`, valid until the block ends."""
        fd = None
        if self.memory_files:
            # On a thread: copying 9 MB would hold the event loop for milliseconds.
            made = asyncio.get_running_loop().run_in_executor(None, _memory_file_of, data)
            try:
                # Shielded: a caller cancelled meanwhile must not lose the file being made.
                fd = await asyncio.shield(made)
            except OSError as error:
                self.refused(error)
            except asyncio.CancelledError:
                made.add_done_callback(_close_unused)
                raise
        try:
            yield data if fd is None else MemoryFile.of(fd)
        finally:
            if fd is not None:
                os.close(fd)

    def refused(self, error: Exception) -> None:
        """Memory files do not work here: from now on photos go through the pipe."""
        if self.memory_files:
            self.memory_files = False
            logger.warning(
                "Photos go to the face recognition processes through a pipe, which costs more "
                "CPU: %s",
                error,
                extra={"action": "handoff_fallback"},
            )


def _close_unused(made: asyncio.Future[int]) -> None:
    """Close a memory file made for a call that was cancelled while it was being made."""
    if not made.cancelled() and made.exception() is None:
        os.close(made.result())


def _memory_file_of(data: bytes) -> int:
    fd = os.memfd_create("findme-photo", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as file:
            file.write(data)
    except BaseException:
        os.close(fd)
        raise
    return fd
