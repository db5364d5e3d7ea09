"""S3 photo storage against moto's server (the S3 API on 127.0.0.1), through the real app."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import aioboto3
import asyncpg
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image
from sqlalchemy import text

from findme.db import Photo
from findme.services import build_pipeline, open_services
from findme.settings import Settings
from findme.storage.s3 import S3Storage
from tests.conftest import free_port, with_settings
from tests.scenes import drain
from tests.shared_faces import faces_dir

PREFIX = "gallery"
UPLOAD = "/api/photographer/events/{}/upload-photos"


def event_photos() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted((faces_dir() / "event").iterdir())]


def jpeg(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(out, "JPEG")
    return out.getvalue()


async def upload(client, event_id: int, *files: tuple[str, bytes]):
    return await client.post(
        UPLOAD.format(event_id), files=[("files", (name, data)) for name, data in files]
    )


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch, moto_url: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
async def s3() -> AsyncIterator:
    async with aioboto3.Session(region_name="us-east-1").client("s3") as client:
        yield client


@pytest.fixture
async def bucket(s3) -> str:
    name = f"findme-test-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def settings(settings: Settings, bucket: str) -> Settings:
    return with_settings(
        settings, storage="s3", s3_bucket=bucket, s3_prefix=PREFIX, engine_processes=1
    )


@pytest.fixture
async def organiser(make_user, make_event):
    client = await make_user("photographer")
    client.event = await make_event(client)
    return client


async def keys(s3, bucket: str) -> set[str]:
    listed = await s3.list_objects_v2(Bucket=bucket)
    return {item["Key"] for item in listed.get("Contents", [])}


def original_keys(*photo_ids: int) -> set[str]:
    return {f"{PREFIX}/photos/{photo_id}/original" for photo_id in photo_ids}


def photo_keys(*photo_ids: int) -> set[str]:
    """The original and the thumbnail its job made."""
    return original_keys(*photo_ids) | {f"{PREFIX}/photos/{i}/thumb.jpg" for i in photo_ids}


async def pg(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.database_url.replace("+asyncpg", ""))


async def test_photos_are_stored_in_s3_and_served_from_it(organiser, s3, bucket, server) -> None:
    photos = event_photos()[:4]
    response = await upload(organiser, organiser.event["id"], *photos)
    assert response.status_code == 202, response.text
    ids = {r["filename"]: r["photo_id"] for r in response.json()["results"]}
    assert await keys(s3, bucket) == original_keys(*ids.values())
    assert not (await drain(server.settings))["failed"]  # the jobs put the thumbnails
    assert await keys(s3, bucket) == photo_keys(*ids.values())
    connection = await pg(server.settings)
    assert await connection.fetchval("SELECT count(*) FROM photos") == 4
    assert (
        await connection.fetchval(
            "SELECT count(*) FROM photos WHERE original IS NOT NULL OR thumbnail IS NOT NULL"
        )
        == 0
    )
    await connection.close()

    for name, data in photos:
        photo_id = ids[name]
        stored = await s3.get_object(Bucket=bucket, Key=f"{PREFIX}/photos/{photo_id}/original")
        assert await stored["Body"].read() == data
        for path in (f"/api/photo/{photo_id}", f"/api/image/{photo_id}"):
            served = await organiser.get(path)
            assert served.status_code == 200
            assert served.content == data  # byte for byte
            assert served.headers["content-length"] == str(len(data))
            etag = served.headers["etag"]
            again = await organiser.get(path, headers={"if-none-match": etag})
            assert (again.status_code, again.content) == (304, b"")
        thumb = await organiser.get(f"/api/photo/{photo_id}/thumb")
        assert thumb.status_code == 200
        assert thumb.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.content)).size) <= 480
        cached = await organiser.get(
            f"/api/photo/{photo_id}/thumb", headers={"if-none-match": thumb.headers["etag"]}
        )
        assert cached.status_code == 304


async def test_deletions_remove_the_objects(
    organiser, make_user, make_event, s3, bucket, server
) -> None:
    event_id = organiser.event["id"]
    results = await upload(organiser, event_id, ("1.jpg", jpeg("red")), ("2.jpg", jpeg("tan")))
    first, second = (r["photo_id"] for r in results.json()["results"])
    await drain(server.settings)
    assert await keys(s3, bucket) == photo_keys(first, second)
    assert (await organiser.delete(f"/api/photo/{first}")).status_code == 204
    assert await keys(s3, bucket) == photo_keys(second)
    assert (await organiser.delete(f"/api/events/{event_id}")).status_code == 204
    assert await keys(s3, bucket) == set()

    # Erasing a photographer's account deletes the events they ran, and their photos' objects.
    other = await make_user("photographer")
    other_event = await make_event(other)
    kept = await upload(organiser, (await make_event(organiser))["id"], ("k.jpg", jpeg("gold")))
    gone = await upload(other, other_event["id"], ("a.jpg", jpeg("pink")), ("b.jpg", jpeg("lime")))
    kept_id = kept.json()["results"][0]["photo_id"]
    await drain(server.settings)
    assert len(await keys(s3, bucket)) == 6
    assert gone.status_code == 202
    assert (await other.delete("/api/me")).status_code == 204
    assert await keys(s3, bucket) == photo_keys(kept_id)
    assert (await organiser.get(f"/api/photo/{kept_id}")).status_code == 200


async def test_a_failed_put_leaves_no_photo_and_no_object(organiser, s3, bucket, server) -> None:
    await s3.delete_bucket(Bucket=bucket)  # the bucket goes away behind the app's back
    response = await upload(organiser, organiser.event["id"], ("lost.jpg", jpeg("plum")))
    assert response.status_code == 503
    assert response.json()["error"] == "storage_error"
    assert "NoSuchBucket" in response.json()["detail"]
    connection = await pg(server.settings)
    assert await connection.fetchval("SELECT count(*) FROM photos") == 0
    assert await connection.fetchval("SELECT count(*) FROM jobs") == 0
    await connection.close()
    await s3.create_bucket(Bucket=bucket)
    assert await keys(s3, bucket) == set()
    retried = await upload(organiser, organiser.event["id"], ("lost.jpg", jpeg("plum")))
    assert retried.json()["results"][0]["status"] == "created"


async def test_a_rolled_back_insert_takes_its_objects_along(settings, s3, bucket) -> None:
    async with open_services(settings, run_workers=False) as state:
        storage = state.storage
        assert isinstance(storage, S3Storage)
        with pytest.raises(RuntimeError):
            async with state.db.transaction() as session:
                await session.execute(text("SELECT 1"))
                await storage.save(session, Photo(id=424242), original=b"o" * 10)
                assert await keys(s3, bucket) == original_keys(424242)
                raise RuntimeError("the insert fails after the objects were put")
        await storage.aclose()  # the clean-up runs in the background; wait for it
        assert await keys(s3, bucket) == set()

        async with state.db.transaction() as session:
            await storage.save(session, Photo(id=7), original=b"o" * 10)
        await storage.aclose()
        assert await keys(s3, bucket) == original_keys(7)  # a commit keeps them


async def test_originals_stream_in_bounded_chunks(settings, s3, bucket) -> None:
    data = os.urandom(300_000)
    async with open_services(settings, run_workers=False) as state:
        storage = S3Storage(
            client=state.storage.client, bucket=bucket, prefix=PREFIX, chunk_bytes=64 * 1024
        )
        async with state.db.transaction() as session:
            await storage.save(session, Photo(id=1), original=data)
        await storage.save_thumbnail(1, b"t")
        chunks = [chunk async for chunk in storage.stream_original(1, size_bytes=len(data))]
        assert b"".join(chunks) == data
        assert len(chunks) >= 5 and max(map(len, chunks)) <= 64 * 1024
        assert await storage.read_original(1) == data
        assert await storage.read_thumbnail(1) == b"t"
        assert await storage.read_thumbnail(2) is None


async def test_the_pipeline_reads_originals_from_s3(organiser, make_user, server) -> None:
    obama = await make_user(name="obama")
    selfie = (faces_dir() / "selfies" / "obama.jpg").read_bytes()
    response = await obama.put(
        "/api/me/selfie", files={"file": ("me.jpg", selfie)}, data={"consent": "true"}
    )
    assert response.status_code == 200, response.text
    await obama.post("/api/events/join", json={"code": organiser.event["code"]})
    e01 = (faces_dir() / "event" / "e01.jpg").read_bytes()
    await upload(organiser, organiser.event["id"], ("e01.jpg", e01))
    async with open_services(server.settings, run_workers=False) as state:
        outcomes = await build_pipeline(state).run_burst()
    assert outcomes["done"] == 2 and not outcomes["failed"]
    mine = await obama.get("/api/my-photos", params={"event_id": organiser.event["id"]})
    assert [item["filename"] for item in mine.json()["items"]] == ["e01.jpg"]


def doctor(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "findme.cli", "doctor"],
        env={
            **os.environ,
            "FINDME_DATABASE_URL": settings.database_url,
            "FINDME_DATA_DIR": str(settings.data_dir),
            "FINDME_STORAGE": "s3",
            "FINDME_S3_BUCKET": settings.s3_bucket,
            **env,
        },
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def test_doctor_checks_what_is_configured(settings) -> None:
    healthy = doctor(settings)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    assert "recognition engine local, photo storage s3" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == [
        "✓ database",
        "✓ engine",
        "✓ storage",
        "✓ email",
        "✓ capacity",
    ]
    assert f"S3 bucket {settings.s3_bucket}" in lines[3]
    assert "sign-up" in lines[4]
    assert "live pages" in lines[5]

    closed = f"http://127.0.0.1:{free_port()}"
    broken = doctor(
        settings,
        FINDME_RECOGNIZER="rekognition",
        AWS_ENDPOINT_URL_S3=closed,
        AWS_ENDPOINT_URL_REKOGNITION=closed,
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    lines = broken.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:]] == [
        "✓ database",
        "✗ engine",
        "✗ storage",
        "✓ email",
        "✓ capacity",
    ]
    assert "Amazon Rekognition" in lines[2] and "AWS_ENDPOINT_URL_REKOGNITION" in lines[2]
    assert "cannot be reached" in lines[3] and "AWS_ENDPOINT_URL_S3" in lines[3]

    missing = doctor(settings, FINDME_S3_BUCKET="findme-no-such-bucket")
    assert missing.returncode == 1
    assert "does not exist" in missing.stdout.splitlines()[3]
