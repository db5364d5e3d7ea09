"""Uploaded originals kept on disk for their jobs: read once, bounded, and gone with the photo."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from findme.db import Database
from findme.storage.database import DatabaseStorage
from findme.storage.spool import Spool, SpooledStorage
from tests.conftest import with_settings
from tests.scenes import expected, join, my_filenames, put_selfie, upload_event_photos
from tests.shared_faces import faces_dir, manifest

MB = 1024 * 1024


@pytest.fixture
def spool_mb() -> int:
    return 1024


@pytest.fixture
def settings(settings, spool_mb):
    # A server that runs its workers, as `findme serve` does by default: the spool is theirs.
    return with_settings(
        settings,
        run_workers=True,
        engine_processes=1,
        engine_urgent_processes=0,
        spool_mb=spool_mb,
    )


def photo_files(spool: Spool) -> list[str]:
    return sorted(path.name for path in spool.directory.iterdir() if path.name != ".lock")


def upload_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def processed(client, event_id: int, total: int) -> dict:
    """The event's progress once its photos' jobs have all ended."""
    while True:
        progress: dict = (await client.get(f"/api/events/{event_id}/progress")).json()
        if progress["done"] + progress["failed"] >= total:
            return progress
        await asyncio.sleep(0.2)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("spool_mb", "reads_from_database"), [(1024, 0), (0, 15)])
async def test_jobs_take_their_photos_from_the_upload_not_the_database(
    server, make_user, make_event, spool_mb, reads_from_database
) -> None:
    """Every photo is found and matched either way; with the spool on, no job reads an original
    back from the database, and nothing is left in the spool afterwards."""
    organiser = await make_user("photographer")
    organiser_event = await make_event(organiser)
    obama = await make_user(name="obama")
    selfie = faces_dir() / manifest()["selfies"]["obama"]
    assert (await put_selfie(obama, selfie.read_bytes(), selfie.name)).status_code == 200
    await join(obama, organiser_event)

    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        uploaded = await upload_event_photos(organiser, organiser_event["id"])
        async with asyncio.timeout(240):
            progress = await processed(organiser, organiser_event["id"], len(uploaded))
    finally:
        event.remove(Engine, "before_cursor_execute", record)

    assert len(uploaded) == 15
    assert (progress["done"], progress["failed"]) == (15, 0)
    assert await my_filenames(obama, organiser_event["id"]) == expected("obama")
    original_reads = [
        s for s in statements if s.lstrip().startswith("SELECT") and "photos.original" in s
    ]
    assert len(original_reads) == reads_from_database
    spool_dir = server.settings.data_dir / "spool"
    assert not [path for path in spool_dir.glob("*") if path.name != ".lock"]


async def test_the_spool_keeps_files_within_its_budget_and_gives_each_once(tmp_path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10)
    first = upload_file(tmp_path, "first.upload", b"abcdef")
    assert not await spool.keep(1, first, 6)  # not open: the upload keeps its file
    assert first.exists()

    assert spool.open()
    assert await spool.keep(1, first, 6)
    assert not first.exists()
    second = upload_file(tmp_path, "second.upload", b"ghijk")
    assert not await spool.keep(2, second, 5)  # 11 bytes would be over the 10 allowed
    assert second.exists()
    assert (photo_files(spool), spool.kept_bytes) == (["1.original"], 6)
    # A file that cannot be moved in (gone, or on another file system) is not counted.
    assert not await spool.keep(3, tmp_path / "gone.upload", 1)
    assert (photo_files(spool), spool.kept_bytes) == (["1.original"], 6)

    assert await spool.take(1) == b"abcdef"
    assert (photo_files(spool), spool.kept_bytes) == ([], 0)
    assert await spool.take(1) is None  # read once: the job's retry reads the storage
    assert await spool.keep(2, second, 5)  # room again
    await spool.close()
    assert photo_files(spool) == []


async def test_old_files_expire_and_one_process_spools_per_directory(tmp_path) -> None:
    now = [0.0]
    spool = Spool(tmp_path / "spool", max_bytes=MB, max_age_s=60, clock=lambda: now[0])
    (tmp_path / "spool").mkdir()
    left_behind = upload_file(tmp_path / "spool", "9.original", b"of a process before")
    assert spool.open()
    assert not left_behind.exists()

    assert await spool.keep(1, upload_file(tmp_path, "a.upload", b"a"), 1)
    now[0] = 30.0
    assert await spool.keep(2, upload_file(tmp_path, "b.upload", b"b"), 1)
    now[0] = 61.0  # the first file's job ran elsewhere, or not yet: it goes at the next keep
    assert await spool.keep(3, upload_file(tmp_path, "c.upload", b"c"), 1)
    assert photo_files(spool) == ["2.original", "3.original"]

    other = Spool(tmp_path / "spool", max_bytes=MB)
    assert not other.open()  # this directory is the first spool's
    assert photo_files(spool) == ["2.original", "3.original"]
    await spool.close()
    assert other.open()
    await other.close()


async def test_a_deleted_photo_loses_its_spooled_file(settings, tmp_path) -> None:
    db = Database(settings)
    spool = Spool(tmp_path / "spool", max_bytes=MB)
    assert spool.open()
    try:
        storage = SpooledStorage(DatabaseStorage(db), spool)
        assert await spool.keep(7, upload_file(tmp_path, "7.upload", b"photo 7"), 7)
        assert await spool.keep(8, upload_file(tmp_path, "8.upload", b"photo 8"), 7)
        await storage.delete([7])
        assert photo_files(spool) == ["8.original"]
        # Not in the spool any more: read from the storage, which holds no photo 7 either.
        assert await storage.read_original(7) == b""
        assert await storage.read_original(8) == b"photo 8"
        assert photo_files(spool) == []
    finally:
        await spool.close()
        await db.aclose()
