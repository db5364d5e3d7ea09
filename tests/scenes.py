"""What several test modules set up: uploads, joins, matches, live streams and drained queues."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlalchemy import insert, update
from sqlalchemy.engine import make_url

from findme.db import Database, FaceMatch, Photo, PhotoStatus, utcnow
from findme.live import MatchFeed
from findme.services import build_pipeline, open_services
from findme.settings import Settings
from tests.shared_faces import faces_dir, manifest

UPLOAD = "/api/photographer/events/{}/upload-photos"


def jpeg(seed: int, size: tuple[int, int] = (320, 240), *, noisy: bool = False) -> bytes:
    """A distinct JPEG per seed; a noisy one is large enough to take several storage chunks."""
    rng = np.random.default_rng(seed)
    if noisy:
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    else:
        pixels = np.full((size[1], size[0], 3), rng.integers(0, 256, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


async def upload(client: httpx.AsyncClient, event_id: int, *files: tuple[str, bytes]) -> list[int]:
    response = await client.post(
        UPLOAD.format(event_id), files=[("files", (name, data)) for name, data in files]
    )
    assert response.status_code == 202, response.text
    return [result["photo_id"] for result in response.json()["results"]]


async def join(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    response = await client.post("/api/events/join", json={"code": event["code"]})
    assert response.status_code == 200, response.text


async def add_matches(settings, *, user_id: int, event_id: int, photo_ids: list[int]) -> list[int]:
    """Match rows as the pipeline writes them, with their photos processed as the pipeline
    leaves them once matched, then the NOTIFY another instance would send."""
    db = Database(settings)
    try:
        async with db.transaction() as session:
            await session.execute(
                update(Photo)
                .where(Photo.id.in_(photo_ids), Photo.status == PhotoStatus.queued)
                .values(status=PhotoStatus.done, processed_at=utcnow())
            )
            ids = [
                await session.scalar(
                    insert(FaceMatch)
                    .values(photo_id=photo_id, user_id=user_id, event_id=event_id, distance=0.3)
                    .returning(FaceMatch.id)
                )
                for photo_id in photo_ids
            ]
    finally:
        await db.aclose()
    await notify(settings, {user_id})
    return [match_id for match_id in ids if match_id is not None]


def processed_photo(event_id: int, filename: str, sha256: str) -> Photo:
    """A photo row as the pipeline leaves it, without bytes: for tests that write faces."""
    return Photo(
        event_id=event_id,
        filename=filename,
        sha256=sha256,
        content_type="image/jpeg",
        size_bytes=1,
        width=1,
        height=1,
        status=PhotoStatus.done,
    )


def feed_dsn(settings) -> str:
    """The test database as asyncpg (the live feed's connection) names it."""
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    return dsn.render_as_string(hide_password=False)


async def notify(settings, user_ids: set[int]) -> None:
    """What another instance's worker sends after writing matches (NOTIFY)."""
    async with MatchFeed(postgres_dsn=feed_dsn(settings)) as feed:
        await feed.publish(user_ids)


class EventStream:
    """Reads Server-Sent Events from a streamed httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout_s: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self._next(), timeout_s)

    async def _next(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        async for line in self._lines:
            if not line:
                if "data" in event or "event" in event:
                    return event
                event = {}
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                event["data"] = json.loads(value)
            elif field in {"id", "event", "retry"}:
                event[field] = value
        raise EOFError("the stream ended")

    async def until_ready(self) -> list[dict[str, Any]]:
        """The backlog: every message before the 'ready' event."""
        messages = []
        while (event := await self.next()).get("event") != "ready":
            messages.append(event)
        return messages


@contextlib.asynccontextmanager
async def open_stream(client: httpx.AsyncClient, **params: Any) -> AsyncIterator[EventStream]:
    headers = {}
    if "last_event_id" in params:
        headers["Last-Event-ID"] = str(params.pop("last_event_id"))
    async with client.stream(
        "GET", "/api/my-photos/stream", params=params, headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)


async def drain(settings: Settings):
    """Run the workers until the queue is empty, as `findme process --burst` does."""
    async with open_services(settings, run_workers=False) as state:
        return await build_pipeline(state).run_burst()


async def put_selfie(client, data: bytes, filename: str = "me.jpg", consent: str = "true"):
    return await client.put(
        "/api/me/selfie", files={"file": (filename, data)}, data={"consent": consent}
    )


async def add_selfie(client, data: bytes, filename: str = "more.jpg", consent: str = "true"):
    return await client.post(
        "/api/me/selfies", files={"file": (filename, data)}, data={"consent": consent}
    )


async def attendees_with_selfies(make_user) -> dict:
    clients = {}
    for person, path in manifest()["selfies"].items():
        client = await make_user(name=person)
        response = await put_selfie(client, (faces_dir() / path).read_bytes(), path)
        assert response.status_code == 200, (person, response.text)
        clients[person] = client
    return clients


async def upload_event_photos(organiser, event_id: int) -> dict[int, str]:
    folder = faces_dir() / "event"
    files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.iterdir())]
    response = await organiser.post(UPLOAD.format(event_id), files=files)
    assert response.status_code == 202, response.text
    return {r["photo_id"]: r["filename"] for r in response.json()["results"]}


async def my_filenames(client, event_id: int) -> list[str]:
    response = await client.get("/api/my-photos", params={"event_id": event_id})
    assert response.status_code == 200
    return sorted(item["filename"] for item in response.json()["items"])


def expected(person: str) -> list[str]:
    return sorted(manifest()["expected_my_photos"][person])


def png_with_broken_pixels() -> bytes:
    """e08.png with a sound header and end but a damaged compressed stream (its chunk's CRC
    made right again): only decoding the pixels tells."""
    data = bytearray((faces_dir() / "event" / "e08.png").read_bytes())
    chunk = data.index(b"IDAT")
    (length,) = struct.unpack_from(">I", data, chunk - 4)
    for index in range(chunk + 20, chunk + 4 + min(length, 2000)):
        data[index] ^= 0x5A
    struct.pack_into(">I", data, chunk + 4 + length, zlib.crc32(data[chunk : chunk + 4 + length]))
    return bytes(data)


def jpeg_with_broken_pixels() -> bytes:
    """e12.jpg whose scan names colour components its frame does not have."""
    data = bytearray((faces_dir() / "event" / "e12.jpg").read_bytes())
    scan = data.index(b"\xff\xda")
    for component in range(data[scan + 4]):
        data[scan + 5 + 2 * component] = 0x77
    return bytes(data)
