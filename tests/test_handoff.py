"""How photos reach the engine processes: memory files, and the pipe where those do not work."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from findme.engines.local.faces import analyse_photo
from findme.engines.local.handoff import Handoff, HandoffRefused, MemoryFile
from findme.engines.local.pool import LocalRecognizer, _Lane
from tests.shared_faces import group_shot

MIN_FACE_PX = 120
THUMBNAIL_PX = 480  # the settings default, which the engine's pool uses unless told


def open_memory_files() -> list[str]:
    """This process's descriptors that are photos' memory files."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # the listing's own descriptor, closed meanwhile
            continue
        if target.startswith("/memfd:findme-photo"):  # "/memfd:NAME (deleted)"
            found.append(target)
    return found


async def test_a_camera_photo_reaches_its_engine_process_whole_through_a_memory_file():
    photo, _ = group_shot([120, 160, 200])
    expected = analyse_photo(photo, min_face_px=MIN_FACE_PX, thumbnail_px=THUMBNAIL_PX)
    async with LocalRecognizer(processes=1, min_face_px=MIN_FACE_PX) as recognizer:
        await recognizer.warm_up()
        call = asyncio.create_task(recognizer.analyse_photo(photo))
        seen: list[str] = []
        while not call.done() and not seen:
            seen = open_memory_files()
            await asyncio.sleep(0.005)
        assert seen, "the photo did not go through a memory file"
        assert await call == expected
        assert recognizer._bulk._handoff.memory_files
    assert open_memory_files() == [], "a memory file outlived its call"


async def test_a_call_cancelled_while_its_photo_is_handed_over_leaves_no_memory_file():
    photo, _ = group_shot([150])
    async with LocalRecognizer(processes=1, min_face_px=MIN_FACE_PX) as recognizer:
        await recognizer.warm_up()
        # Cancelled while the memory file is being written, just after, and while the engine works.
        for delay in (0, 0.001, 0.003, 0.05):
            call = asyncio.create_task(recognizer.analyse_photo(photo))
            await asyncio.sleep(delay)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        deadline = time.monotonic() + 10
        while open_memory_files() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # a file still being written is closed once it is
        assert open_memory_files() == []
        assert await recognizer.analyse_photo(photo) == analyse_photo(
            photo, min_face_px=MIN_FACE_PX, thumbnail_px=THUMBNAIL_PX
        )


def test_a_memory_file_that_is_gone_or_holds_other_bytes_is_refused():
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(HandoffRefused, match="cannot be read"):
        MemoryFile(os.getpid(), read_end, 10).read()

    fd = os.memfd_create("findme-photo")
    try:
        os.write(fd, b"12345")
        with pytest.raises(HandoffRefused, match="holds 5 bytes, not 6"):
            MemoryFile(os.getpid(), fd, 6).read()
        assert MemoryFile(os.getpid(), fd, 5).read() == b"12345"
    finally:
        os.close(fd)


async def test_where_memory_files_are_refused_photos_go_through_the_pipe_after_one_warning(
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.WARNING, logger="findme.engines.local.handoff")
    handoff = Handoff()
    handoff.refused(HandoffRefused("the photo's memory file cannot be read: Permission denied"))
    handoff.refused(HandoffRefused("the photo's memory file cannot be read: Permission denied"))
    warnings = [r for r in caplog.records if getattr(r, "action", None) == "handoff_fallback"]
    assert len(warnings) == 1
    assert "Permission denied" in warnings[0].getMessage()

    photo, _ = group_shot([150])
    async with handoff.source(photo) as source:
        assert source is photo
    lane = _Lane("bulk", 1, 0, "cnn", 0.7, handoff=handoff)
    lane.open()
    try:
        faces = await lane.run_on_photo(len, photo)
    finally:
        await lane.close()
    assert faces == len(photo)
    assert open_memory_files() == []
