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


def test_a_memory_file_that_is_gone_is_refused():
    memory = os.memfd_create("findme-photo")
    os.write(memory, b"photo")
    assert MemoryFile.of(memory).read() == b"photo"
    gone = MemoryFile.of(memory)
    os.close(memory)
    with pytest.raises(HandoffRefused, match="cannot be read"):
        gone.read()


async def test_a_descriptor_reused_for_a_pipe_is_refused_without_waiting():
    """A call given up while queued still runs after its file was closed; by then the number
    may name a pipe, which an engine process must not wait on for ever."""
    memory = os.memfd_create("findme-photo")
    os.write(memory, b"photo")
    stale = MemoryFile.of(memory)
    os.close(memory)
    read_end, write_end = os.pipe()
    os.dup2(read_end, stale.fd)
    reading = asyncio.create_task(asyncio.to_thread(stale.read))
    try:
        with pytest.raises(HandoffRefused, match="is gone"):
            async with asyncio.timeout(5):
                await asyncio.shield(reading)
    finally:
        os.close(write_end)  # ends a read that waits, so the test cannot hang
        await asyncio.gather(reading, return_exceptions=True)
        os.close(read_end)
        if stale.fd not in (read_end, write_end):
            os.close(stale.fd)


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
