"""Uploads, lists and image serving over real HTTP against real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidRequestError

from findme.db import Database, Photo
from findme.uploads import WRITE_BYTES
from tests.conftest import serve, with_settings
from tests.scenes import drain, jpeg_with_broken_pixels, png_with_broken_pixels
from tests.shared_faces import faces_dir

UPLOAD = "/api/photographer/events/{}/upload-photos"


def event_photos() -> list[tuple[str, bytes]]:
    folder = faces_dir() / "event"
    return [(path.name, path.read_bytes()) for path in sorted(folder.iterdir())]


def jpeg(color: str = "teal", size: tuple[int, int] = (320, 240), **save: Any) -> bytes:
    return jpeg_of(Image.new("RGB", size, color), **save)


def jpeg_of(image: Image.Image, **save: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **save)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares huge dimensions: a decompression bomb."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, "PNG")
    data = bytearray(out.getvalue())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


async def upload(client: httpx.AsyncClient, event_id: int, *files: tuple[str, bytes]):
    return await client.post(
        UPLOAD.format(event_id), files=[("files", (name, data)) for name, data in files]
    )


@pytest.fixture
async def organiser(make_user, make_event):
    client = await make_user("photographer")
    client.event = await make_event(client)
    return client


async def photo_count(client: httpx.AsyncClient, event_id: int) -> int:
    response = await client.get("/api/all-photos", params={"event_id": event_id, "limit": 200})
    assert response.status_code == 200
    return len(response.json()["items"])


async def test_upload_many_real_photos_in_one_request(organiser, server) -> None:
    photos = event_photos()
    response = await upload(organiser, organiser.event["id"], *photos)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [name for name, _ in photos]
    assert {r["status"] for r in results} == {"created"}
    assert all(r["photo_id"] and r["job_id"] for r in results)

    listed = await organiser.get("/api/all-photos", params={"event_id": organiser.event["id"]})
    items = listed.json()["items"]
    assert len(items) == 15
    assert {item["status"] for item in items} == {"queued"}  # never waits for processing
    e08 = next(item for item in items if item["filename"] == "e08.png")
    assert (e08["width"], e08["height"]) == (424, 394)
    original = await organiser.get(e08["image_url"])
    assert original.content == dict(photos)["e08.png"]
    assert original.headers["content-type"] == "image/png"
    # The job makes the thumbnail: until then the grid shows a plain tile that no cache keeps,
    # from an address of its own (browsers keep an image per address while a page is open).
    assert e08["thumb_url"] == f"/api/photo/{e08['id']}/thumb?pending"
    waiting = await organiser.get(e08["thumb_url"])
    assert waiting.status_code == 200
    assert waiting.headers["content-type"] == "image/jpeg"
    assert waiting.headers["cache-control"] == "no-store"
    assert "etag" not in waiting.headers
    Image.open(io.BytesIO(waiting.content)).verify()

    assert (await drain(server.settings))["failed"] == 0
    listed = await organiser.get("/api/all-photos", params={"event_id": organiser.event["id"]})
    items = listed.json()["items"]
    for item in items:
        assert item["thumb_url"] == f"/api/photo/{item['id']}/thumb"
        thumb = await organiser.get(item["thumb_url"])
        assert thumb.headers["content-type"] == "image/jpeg"
        assert thumb.headers["cache-control"] == "private, max-age=31536000, immutable"
        shown = Image.open(io.BytesIO(thumb.content))
        upright = ImageOps.exif_transpose(Image.open(io.BytesIO(dict(photos)[item["filename"]])))
        # The upright photo, scaled to fit the grid's size (never enlarged).
        scale = min(1.0, 480 / max(upright.size))
        assert shown.size == (round(upright.width * scale), round(upright.height * scale))


async def test_photos_of_several_megabytes_are_stored_byte_for_byte(organiser) -> None:
    """A camera-sized file reaches its temp file in many pieces: none is lost or reordered."""
    rng = np.random.default_rng(7)
    sent = []
    for name in ("e01.jpg", "e05.jpg"):
        photo = Image.open(faces_dir() / "event" / name).convert("RGB").resize((4000, 2667))
        grain = rng.normal(0, 12, (2667, 4000, 3))
        grainy = Image.fromarray(np.clip(np.asarray(photo) + grain, 0, 255).astype(np.uint8))
        buffer = io.BytesIO()
        grainy.save(buffer, "JPEG", quality=95)
        sent.append((f"big-{name}", buffer.getvalue()))
    assert all(len(data) > 3_000_000 for _, data in sent)
    response = await upload(organiser, organiser.event["id"], *sent)
    assert response.status_code == 202, response.text
    for (_, data), result in zip(sent, response.json()["results"], strict=True):
        assert result["status"] == "created"
        stored = await organiser.get(f"/api/image/{result['photo_id']}")
        assert stored.content == data


async def test_same_bytes_twice_is_a_duplicate_same_name_other_bytes_is_new(organiser) -> None:
    event_id = organiser.event["id"]
    first = (await upload(organiser, event_id, ("a.jpg", jpeg("red")))).json()["results"][0]
    again = (await upload(organiser, event_id, ("renamed.jpg", jpeg("red")))).json()["results"][0]
    assert again["status"] == "duplicate"
    assert again["photo_id"] == first["photo_id"]
    other = (await upload(organiser, event_id, ("a.jpg", jpeg("blue")))).json()["results"][0]
    assert other["status"] == "created"
    assert other["photo_id"] != first["photo_id"]
    assert await photo_count(organiser, event_id) == 2


async def test_ten_concurrent_copies_make_exactly_one_photo(organiser) -> None:
    event_id = organiser.event["id"]
    data = jpeg("purple", (1200, 900))
    responses = await asyncio.gather(
        *(upload(organiser, event_id, (f"copy{i}.jpg", data)) for i in range(10))
    )
    results = [response.json()["results"][0] for response in responses]
    assert sorted(r["status"] for r in results) == ["created"] + ["duplicate"] * 9
    assert len({r["photo_id"] for r in results}) == 1
    assert await photo_count(organiser, event_id) == 1


async def test_camera_sized_photos_are_stored_byte_for_byte(organiser) -> None:
    """Photos of several MB reach storage through many writes of the request's chunks."""
    source = ImageOps.exif_transpose(Image.open(faces_dir() / "event" / "e04.jpg"))
    camera = [
        (f"camera{i}.jpg", jpeg_of(source.resize((3000 + 8 * i, 4880)), quality=95))
        for i in range(2)
    ]
    files = [camera[0], ("small.jpg", jpeg("navy")), camera[1]]
    assert all(len(data) > 2 * WRITE_BYTES and len(data) % WRITE_BYTES for _, data in camera)

    response = await upload(organiser, organiser.event["id"], *files)

    assert response.status_code == 202, response.text
    assert [r["status"] for r in response.json()["results"]] == ["created"] * 3
    listed = await organiser.get("/api/all-photos", params={"event_id": organiser.event["id"]})
    for item in listed.json()["items"]:
        served = await organiser.get(item["image_url"])
        assert served.content == dict(files)[item["filename"]]


async def test_overlapping_requests_store_each_photo_once_in_the_order_sent(organiser) -> None:
    """Three requests of 20 photos (several commits each) at once, sharing half their photos,
    one of them sent twice in a request: every file is answered, each photo stored once."""
    event_id = organiser.event["id"]
    shared = [(f"shared{i}.jpg", jpeg((i * 9, 80, 120), (400, 300))) for i in range(10)]
    requests = [
        [
            *shared[:5],
            *((f"own{r}-{i}.jpg", jpeg((r * 60, i * 20, 30))) for i in range(10)),
            *shared[5:],
        ]
        for r in range(3)
    ]
    requests[0].append(requests[0][0])
    responses = await asyncio.gather(*(upload(organiser, event_id, *files) for files in requests))
    by_bytes: dict[bytes, set[int]] = {}
    created: dict[bytes, int] = {}
    for files, response in zip(requests, responses, strict=True):
        assert response.status_code == 202, response.text
        results = response.json()["results"]
        assert [r["filename"] for r in results] == [name for name, _ in files]
        new_ids = [r["photo_id"] for r in results if r["status"] == "created"]
        assert new_ids == sorted(new_ids)  # a gallery lists them in the order they were sent
        for (_, data), result in zip(files, results, strict=True):
            assert result["status"] in {"created", "duplicate"}
            by_bytes.setdefault(data, set()).add(result["photo_id"])
            if result["status"] == "created":
                assert result["job_id"] is not None
                assert data not in created
                created[data] = result["photo_id"]
            else:
                assert result["job_id"] is None
    assert requests[0][-1] == requests[0][0]
    assert responses[0].json()["results"][-1]["status"] == "duplicate"
    assert len(by_bytes) == 40
    assert all(len(ids) == 1 for ids in by_bytes.values())
    assert {data: ids.pop() for data, ids in by_bytes.items()} == created
    assert await photo_count(organiser, event_id) == 40
    for data, photo_id in created.items():
        assert (await organiser.get(f"/api/image/{photo_id}")).content == data


def truncated_jpeg() -> bytes:
    data = jpeg("orange", (800, 600), quality=95)
    return data[: len(data) // 2]


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (10, 10)).save(out, "GIF")
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("empty.jpg", b"", 400, "empty_file"),
        ("notes.jpg", b"these are my notes, not a photo\n" * 20, 415, "unsupported_media_type"),
        ("cut.jpg", truncated_jpeg(), 400, "corrupt_image"),
        ("bomb.png", png_claiming(100_000, 100_000), 413, "too_many_pixels"),
        ("anim.gif", gif(), 415, "unsupported_media_type"),
    ],
)
async def test_bad_files_are_rejected_and_lose_nothing(organiser, name, data, status, code) -> None:
    event_id = organiser.event["id"]
    await upload(organiser, event_id, ("keep.jpg", jpeg("green")))
    response = await upload(organiser, event_id, (name, data))
    assert response.status_code == status
    body = response.json()
    assert body["error"] == code
    assert body["detail"].endswith(".")
    assert body["results"][0]["status"] == "rejected"
    assert await photo_count(organiser, event_id) == 1
    # A bad file next to a good one: the good one is stored, the bad one reported.
    mixed = await upload(organiser, event_id, (name, data), ("fine.jpg", jpeg("navy")))
    assert mixed.status_code == 202
    assert [r["status"] for r in mixed.json()["results"]] == ["rejected", "created"]
    assert await photo_count(organiser, event_id) == 2
    assert (await organiser.get("/healthz")).status_code == 200


def raw_multipart(filename: str, data: bytes, boundary: str = "rawboundary") -> bytes:
    """A multipart body with the filename exactly as a hostile client would write it."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"'
        "\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../etc/pass\x07wd.jpg", "passwd.jpg"),
        ("..\\..\\windows\\evil.jpg", "evil.jpg"),
        ("gpj.\u202eexe.jpg", "gpj.exe.jpg"),
        ("../", "photo"),
    ],
)
async def test_hostile_filenames_are_stored_safely(organiser, sent, stored) -> None:
    response = await organiser.post(
        UPLOAD.format(organiser.event["id"]),
        content=raw_multipart(sent, jpeg("olive")),
        headers={"content-type": "multipart/form-data; boundary=rawboundary"},
    )
    result = response.json()["results"][0]
    assert result["status"] == "created"
    assert result["filename"] == stored
    listed = await organiser.get("/api/all-photos", params={"event_id": organiser.event["id"]})
    assert listed.json()["items"][0]["filename"] == stored
    served = await organiser.get(f"/api/photo/{result['photo_id']}?download=1")
    disposition = served.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "/" not in disposition and "\\" not in disposition


async def test_requests_that_are_not_uploads(organiser, make_user, make_event) -> None:
    event_id = organiser.event["id"]
    no_files = await organiser.post(UPLOAD.format(event_id), data={"note": "hi"}, files={})
    assert no_files.status_code in (400, 415)
    empty_form = await organiser.post(
        UPLOAD.format(event_id),
        content=b"--xyz--\r\n",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert empty_form.status_code == 400
    assert empty_form.json()["error"] == "no_files"
    not_multipart = await organiser.post(UPLOAD.format(event_id), json={"files": ["a.jpg"]})
    assert not_multipart.status_code == 415
    assert "multipart/form-data" in not_multipart.json()["detail"]
    garbage = await organiser.post(
        UPLOAD.format(event_id),
        content=b"\x00\x01garbage" * 100,
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert garbage.status_code == 400
    unknown = await upload(organiser, 999_999, ("a.jpg", jpeg()))
    assert unknown.status_code == 404
    other = await make_user("photographer")
    other_event = await make_event(other)
    theirs = await upload(organiser, other_event["id"], ("a.jpg", jpeg()))
    assert theirs.status_code == 404  # not theirs to see: as if it did not exist
    attendee = await make_user()
    assert (await upload(attendee, event_id, ("a.jpg", jpeg()))).status_code == 403
    assert await photo_count(organiser, event_id) == 0
    assert await photo_count(other, other_event["id"]) == 0


async def test_size_limits_with_and_without_content_length(settings, make_event) -> None:
    small = with_settings(settings, max_upload_bytes=300_000, max_request_bytes=1_000_000)
    async with serve(small) as url:
        from findme.db import Role
        from findme.domain.accounts import create_user
        from tests.conftest import PASSWORD

        db = Database(small)
        async with db.transaction() as session:
            await create_user(
                session, email="p@example.com", password=PASSWORD, name="P", role=Role.photographer
            )
        await db.aclose()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            login = await client.post(
                "/api/auth/login", json={"email": "p@example.com", "password": PASSWORD}
            )
            client.headers["x-csrf-token"] = login.json()["csrf_token"]
            event_id = (await make_event(client))["id"]
            big = (faces_dir() / "event" / "e04.jpg").read_bytes()
            assert len(big) > 300_000
            one = await upload(client, event_id, ("big.jpg", big), ("ok.jpg", jpeg("gray")))
            assert one.status_code == 202
            assert [r["error"] for r in one.json()["results"]] == ["file_too_large", None]

            # Over the request limit with a Content-Length: refused before reading.
            huge = [(f"{i}.jpg", jpeg("black", (10 + i, 10))) for i in range(3)]
            huge.append(("pad.jpg", b"\xff" * 1_100_000))
            refused = await upload(client, event_id, *huge)
            assert refused.status_code == 413
            assert refused.json()["error"] == "request_too_large"

            # Without a Content-Length (chunked): counted while streaming, nothing stored.
            boundary = "chunkyboundary"

            async def body() -> AsyncIterator[bytes]:
                part = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                    f'filename="valid.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
                ).encode()
                yield part + jpeg("yellow") + b"\r\n"
                yield (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                    f'filename="endless.jpg"\r\n\r\n'
                ).encode()
                for _ in range(150):
                    yield b"\x00" * 10_000
                yield f"\r\n--{boundary}--\r\n".encode()

            chunked = await client.post(
                UPLOAD.format(event_id),
                content=body(),
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            )
            assert chunked.status_code == 413
            assert "smaller requests" in chunked.json()["detail"]
            assert await photo_count(client, event_id) == 1
            assert (await client.get("/healthz")).status_code == 200


async def test_image_caching_headers_and_304(organiser, server) -> None:
    result = (await upload(organiser, organiser.event["id"], ("c.jpg", jpeg("pink")))).json()
    photo_id = result["results"][0]["photo_id"]
    await drain(server.settings)  # the thumbnail is the photo job's
    for path in (
        f"/api/photo/{photo_id}",
        f"/api/image/{photo_id}",
        f"/api/photo/{photo_id}/thumb",
    ):
        first = await organiser.get(path)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "private, max-age=31536000, immutable"
        etag = first.headers["etag"]
        again = await organiser.get(path, headers={"if-none-match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        stale = await organiser.get(path, headers={"if-none-match": '"other"'})
        assert stale.status_code == 200


async def test_only_allowed_viewers_see_photos(organiser, make_user, anon) -> None:
    result = (await upload(organiser, organiser.event["id"], ("v.jpg", jpeg("gold")))).json()
    photo_id = result["results"][0]["photo_id"]
    stranger = await make_user()
    member = await make_user()
    join = await member.post("/api/events/join", json={"code": organiser.event["code"].lower()})
    assert join.status_code == 200
    # Nobody is in the photo: a member sees it once the organiser opens the gallery to all.
    assert (await member.get(f"/api/photo/{photo_id}")).status_code == 404
    await open_gallery(organiser)
    assert (await member.get(f"/api/photo/{photo_id}")).status_code == 200
    assert (await member.get(f"/api/photo/{photo_id}/thumb")).status_code == 200
    for path in (f"/api/photo/{photo_id}", f"/api/photo/{photo_id}/thumb"):
        assert (await stranger.get(path)).status_code == 404
        assert (await anon.get(path)).status_code == 401
    assert (await stranger.get("/api/photo/424242")).status_code == 404
    listed = await stranger.get("/api/all-photos", params={"event_id": organiser.event["id"]})
    assert listed.status_code == 404
    assert (await stranger.get("/api/all-photos")).json()["items"] == []
    assert (await stranger.delete(f"/api/photo/{photo_id}")).status_code == 404
    assert (await member.delete(f"/api/photo/{photo_id}")).status_code == 403


async def open_gallery(organiser) -> None:
    """Every member may see every photo of the organiser's event, matched or not."""
    path = f"/api/events/{organiser.event['id']}"
    response = await organiser.patch(path, json={"gallery": "all"})
    assert response.status_code == 200, response.text


def jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "FindMe Camera"
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 31.5), 3: "E", 4: (4.0, 53.0, 12.25)}
    return jpeg("cyan", (640, 480), exif=exif, quality=90)


async def test_gps_is_removed_without_touching_pixels(organiser, make_user) -> None:
    original = jpeg_with_gps()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)
    result = (await upload(organiser, organiser.event["id"], ("gps.jpg", original))).json()
    member = await make_user()
    await member.post("/api/events/join", json={"code": organiser.event["code"]})
    await open_gallery(organiser)
    served = (await member.get(f"/api/photo/{result['results'][0]['photo_id']}")).content
    assert len(served) == len(original)
    image = Image.open(io.BytesIO(served))
    assert not image.getexif().get_ifd(0x8825)
    assert image.getexif()[0x010F] == "FindMe Camera"
    # The compressed image data is byte-for-byte the same: nothing was re-encoded.
    scan = original.index(b"\xff\xda")
    assert served[scan:] == original[scan:]
    assert image.tobytes() == Image.open(io.BytesIO(original)).tobytes()


async def test_paging_and_lists_never_load_image_bytes(organiser, server) -> None:
    event_id = organiser.event["id"]
    await upload(organiser, event_id, *[(f"{i}.jpg", jpeg("red", (50 + i, 40))) for i in range(7)])
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        seen: list[int] = []
        cursor = None
        while True:
            params = {"event_id": event_id, "limit": 3} | ({"cursor": cursor} if cursor else {})
            page = (await organiser.get("/api/all-photos", params=params)).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        mine = await organiser.get("/api/my-photos", params={"event_id": event_id})
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen)
    assert mine.json() == {"items": [], "next_cursor": None}
    photo_queries = [s for s in statements if "photos" in s]
    assert photo_queries
    assert not [s for s in photo_queries if "photos.original" in s or "photos.thumbnail" in s]
    # And an entity query that touched the bytes would fail loudly instead of loading them.
    db = Database(server.settings)
    try:
        async with db.sessions() as session:
            photo = (await session.scalars(select(Photo).limit(1))).one()
            with pytest.raises(InvalidRequestError):
                _ = photo.original
    finally:
        await db.aclose()


async def test_bad_query_parameters(organiser) -> None:
    for params in ({"limit": "lots"}, {"cursor": "-1"}, {"event_id": "x"}, {"limit": "100000"}):
        response = await organiser.get("/api/all-photos", params=params)
        assert response.status_code == 400
        assert response.json()["detail"]
    assert (await organiser.get("/api/photo/abc")).status_code == 400


async def test_delete_photo_and_event(organiser) -> None:
    event_id = organiser.event["id"]
    results = await upload(organiser, event_id, ("1.jpg", jpeg("red")), ("2.jpg", jpeg("tan")))
    first, second = (r["photo_id"] for r in results.json()["results"])
    assert (await organiser.delete(f"/api/photo/{first}")).status_code == 204
    assert (await organiser.get(f"/api/photo/{first}")).status_code == 404
    assert await photo_count(organiser, event_id) == 1
    assert (await organiser.delete(f"/api/events/{event_id}")).status_code == 204
    assert (await organiser.get(f"/api/photo/{second}")).status_code == 404
    assert (await organiser.get(f"/api/events/{event_id}")).status_code == 404


def turned_photo_with_gps() -> tuple[bytes, Image.Image]:
    """e07.jpg, a real photo that carries GPS, stored turned and tagged to be shown upright
    (EXIF orientation 6), as phones write them; and the upright picture."""
    source = Image.open(faces_dir() / "event" / "e07.jpg")
    exif = source.getexif()
    assert exif.get_ifd(GPS_IFD)  # loaded, so it is written again
    exif[ORIENTATION] = 6
    upright = source.convert("RGB")
    out = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", exif=exif, quality=92)
    return out.getvalue(), upright


GPS_IFD = 0x8825
ORIENTATION = 0x0112


async def test_the_grid_shows_the_jobs_thumbnail_upright_and_without_gps(organiser, server):
    data, upright = turned_photo_with_gps()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(GPS_IFD)
    result = (await upload(organiser, organiser.event["id"], ("turned.jpg", data))).json()
    photo_id = result["results"][0]["photo_id"]
    assert (await drain(server.settings))["failed"] == 0

    thumb = await organiser.get(f"/api/photo/{photo_id}/thumb")
    assert thumb.headers["cache-control"] == "private, max-age=31536000, immutable"
    shown = Image.open(io.BytesIO(thumb.content))
    scale = server.settings.thumbnail_px / max(upright.size)
    assert shown.size == (round(upright.width * scale), round(upright.height * scale))
    # The same picture as the upright photo, and no metadata at all: no GPS, nothing to turn.
    expected = np.asarray(upright.resize(shown.size, Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(np.asarray(shown.convert("RGB"), dtype=np.int16) - expected).mean() < 6
    assert not shown.getexif()
    assert b"Exif" not in thumb.content
    original = Image.open(io.BytesIO((await organiser.get(f"/api/photo/{photo_id}")).content))
    assert not original.getexif().get_ifd(GPS_IFD)
    assert original.getexif()[ORIENTATION] == 6


async def test_pixels_broken_behind_a_sound_header_fail_in_the_job_with_a_sentence(
    organiser, server
) -> None:
    event_id = organiser.event["id"]
    fine = (faces_dir() / "event" / "e01.jpg").read_bytes()
    sent = [
        ("broken.png", png_with_broken_pixels()),
        ("broken.jpg", jpeg_with_broken_pixels()),
        ("fine.jpg", fine),
    ]
    # The request reads headers only: all three are stored and queued.
    response = await upload(organiser, event_id, *sent)
    assert response.status_code == 202
    assert [r["status"] for r in response.json()["results"]] == ["created"] * 3

    await drain(with_settings(server.settings, job_retry_base_s=0.05))
    page = (await organiser.get(f"/api/events/{event_id}/photos")).json()
    shown = {item["filename"]: item for item in page["items"]}
    assert shown["fine.jpg"]["status"] == "done"
    for name in ("broken.png", "broken.jpg"):
        assert shown[name]["status"] == "failed"
        assert shown[name]["job"]["error"] == (
            "The photo is damaged or incomplete. Copy it from the camera again and re-send it."
        )
        thumb = await organiser.get(shown[name]["thumb_url"])
        assert (thumb.status_code, thumb.headers["cache-control"]) == (200, "no-store")
    progress = (await organiser.get(f"/api/events/{event_id}/progress")).json()
    assert (progress["done"], progress["failed"]) == (1, 2)
