"""The live match stream, the streamed zip and the QR code, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import zipfile
from collections.abc import AsyncIterator

import httpx
import pytest
import segno
import uvicorn
from sqlalchemy import select

from findme.app import create_app
from findme.db import Database, FaceMatch
from tests.conftest import PASSWORD, free_port
from tests.scenes import (
    add_matches,
    join,
    jpeg,
    notify,
    open_stream,
    upload,
)


@pytest.fixture
async def scene(server, make_user, make_event):
    """An organiser's event with three photos, and two attendees who joined it."""
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    photo_ids = await upload(
        organiser, event["id"], ("a.jpg", jpeg(1)), ("b.jpg", jpeg(2)), ("c.jpg", jpeg(3))
    )
    me = await make_user("attendee", name="Me")
    other = await make_user("attendee", name="Other")
    for attendee in (me, other):
        await join(attendee, event)
    return {"organiser": organiser, "event": event, "photos": photo_ids, "me": me, "other": other}


async def test_stream_sends_backlog_then_live_and_resumes(scene, settings) -> None:
    me, event, photos = scene["me"], scene["event"], scene["photos"]
    user_id = me.user["id"]
    first, second = await add_matches(
        settings, user_id=user_id, event_id=event["id"], photo_ids=photos[:2]
    )

    async with open_stream(me, event_id=event["id"]) as stream:
        backlog = await stream.until_ready()
        assert [m["id"] for m in backlog] == [str(first), str(second)]
        assert [m["data"]["id"] for m in backlog] == photos[:2]
        assert backlog[0]["data"]["thumb_url"] == f"/api/photo/{photos[0]}/thumb"
        assert backlog[0]["data"]["match_id"] == first
        # A match made while the page is open arrives without asking (NOTIFY, as from
        # another instance's worker).
        (third,) = await add_matches(
            settings, user_id=user_id, event_id=event["id"], photo_ids=photos[2:]
        )
        live = await stream.next()
        assert (live["id"], live["data"]["id"]) == (str(third), photos[2])

    # A dropped connection resumes after the last id it saw: nothing lost, nothing repeated.
    async with open_stream(me, event_id=event["id"], last_event_id=first) as stream:
        assert [m["id"] for m in await stream.until_ready()] == [str(second), str(third)]
    async with open_stream(me, event_id=event["id"], after=second) as stream:
        assert [m["id"] for m in await stream.until_ready()] == [str(third)]
    # The header (sent by EventSource on reconnect) wins over the page's ?after=.
    async with open_stream(me, event_id=event["id"], after=0, last_event_id=third) as stream:
        assert await stream.until_ready() == []
    # Without event_id: every event of mine.
    async with open_stream(me) as stream:
        assert len(await stream.until_ready()) == 3


async def test_stream_shows_nothing_of_another_user(scene, settings, anon) -> None:
    me, other, event, photos = scene["me"], scene["other"], scene["event"], scene["photos"]
    await add_matches(settings, user_id=me.user["id"], event_id=event["id"], photo_ids=photos[:2])
    async with open_stream(other, event_id=event["id"]) as stream:
        assert await stream.until_ready() == []
        await add_matches(
            settings, user_id=me.user["id"], event_id=event["id"], photo_ids=photos[2:]
        )
        await notify(settings, {me.user["id"], other.user["id"]})
        with pytest.raises(TimeoutError):
            await stream.next(timeout_s=1.5)
    async with open_stream(other) as stream:
        assert await stream.until_ready() == []

    outsider = await anon.post(
        "/api/auth/register",
        json={"email": "outsider@example.com", "password": PASSWORD, "name": "Out"},
    )
    assert outsider.status_code == 201
    assert (
        await anon.get("/api/my-photos/stream", params={"event_id": event["id"]})
    ).status_code == 404
    async with httpx.AsyncClient(base_url=str(anon.base_url)) as nobody:
        signed_out = await nobody.get("/api/my-photos/stream")
        assert signed_out.status_code == 401
    bad = await me.get("/api/my-photos/stream", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400


@contextlib.asynccontextmanager
async def uvicorn_server(settings) -> AsyncIterator[tuple[uvicorn.Server, asyncio.Task, str]]:
    """Like conftest.serve, but the test holds the server to watch and stop it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server stopped while starting"
        await asyncio.sleep(0.02)
    try:
        yield server, task, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def attendee_client(url: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=30)
    body = {"email": f"live-{time.monotonic_ns()}@example.com", "password": PASSWORD, "name": "L"}
    assert (await client.post("/api/auth/register", json=body)).status_code == 201
    return client


async def wait_for(condition, timeout_s: float = 5) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "timed out"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_stream_ends_when_the_client_disconnects(settings) -> None:
    async with uvicorn_server(settings) as (server, _, url):
        client = await attendee_client(url)
        try:
            async with open_stream(client) as stream:
                assert await stream.until_ready() == []
                assert len(server.server_state.tasks) == 1
            # The stream's request task ends once the browser goes away.
            await wait_for(lambda: not server.server_state.tasks)
        finally:
            await client.aclose()


async def test_server_stops_promptly_with_a_stream_open(settings) -> None:
    async with contextlib.AsyncExitStack() as stack:
        server, task, url = await stack.enter_async_context(uvicorn_server(settings))
        client = await attendee_client(url)
        stack.push_async_callback(client.aclose)
        stream = await stack.enter_async_context(open_stream(client))
        assert await stream.until_ready() == []
        started = time.monotonic()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 4
        # The stream ended cleanly, so the browser's EventSource simply reconnects later.
        with pytest.raises(EOFError):
            await stream.next(timeout_s=2)


async def test_zip_streams_my_photos_with_unique_names(scene, settings, make_user) -> None:
    organiser, me, event = scene["organiser"], scene["me"], scene["event"]
    big = jpeg(7, (1200, 900), noisy=True)
    assert len(big) > 3 * 256 * 1024  # several storage chunks
    same_name = await upload(organiser, event["id"], ("a.jpg", jpeg(8)), ("a.JPG", big))
    mine = [scene["photos"][0], scene["photos"][1], *same_name]
    await add_matches(settings, user_id=me.user["id"], event_id=event["id"], photo_ids=mine)

    async with me.stream("GET", f"/api/events/{event['id']}/my-photos.zip") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        assert "my photos.zip" in response.headers["content-disposition"]
        chunks = [chunk async for chunk in response.aiter_raw()]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert archive.namelist() == ["a.jpg", "b.jpg", "a (2).jpg", "a (3).JPG"]
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    originals = {}
    for photo_id in mine:
        response = await me.get(f"/api/photo/{photo_id}")
        originals[photo_id] = response.content
    assert [archive.read(name) for name in archive.namelist()] == [originals[p] for p in mine]
    assert archive.read("a (3).JPG") == big

    # Only members get a zip, and only of their own photos.
    stranger = await make_user("attendee")
    refused = await stranger.get(f"/api/events/{event['id']}/my-photos.zip")
    assert refused.status_code == 404
    assert refused.json()["detail"] == "There is no event with this id."
    nothing = await scene["other"].get(f"/api/events/{event['id']}/my-photos.zip")
    assert nothing.status_code == 404
    assert "no photo" in nothing.json()["detail"]
    assert (await me.get("/api/events/999999/my-photos.zip")).status_code == 404


async def test_qr_code_encodes_the_join_link_for_members_only(scene, make_user, server) -> None:
    organiser, me, event = scene["organiser"], scene["me"], scene["event"]
    path = f"/api/events/{event['id']}/qr.svg"
    response = await organiser.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    expected = io.BytesIO()
    segno.make(f"{server.url}/join/{event['code']}", error="m", micro=False).save(
        expected, kind="svg", scale=8, border=2, dark="#111827", light="#ffffff"
    )
    assert response.content == expected.getvalue()
    assert b"<svg" in response.content
    assert (await me.get(path)).status_code == 200
    download = await me.get(path, params={"download": "1"})
    assert download.headers["content-disposition"].startswith("attachment;")

    stranger = await make_user("attendee")
    assert (await stranger.get(path)).status_code == 404
    async with server.client() as nobody:
        assert (await nobody.get(path)).status_code == 401
    assert (await organiser.get("/api/events/999999/qr.svg")).status_code == 404


async def test_matches_in_the_database_are_what_the_stream_sends(scene, settings) -> None:
    """The stream reads the face_matches rows: a "not me" row is gone from a fresh stream."""
    me, event, photos = scene["me"], scene["event"], scene["photos"]
    await add_matches(settings, user_id=me.user["id"], event_id=event["id"], photo_ids=photos)
    assert (await me.post(f"/api/photo/{photos[1]}/not-me")).status_code == 204
    async with open_stream(me, event_id=event["id"]) as stream:
        sent = [m["data"]["id"] for m in await stream.until_ready()]
    assert sent == [photos[0], photos[2]]
    db = Database(settings)
    try:
        async with db.sessions() as session:
            rows = await session.scalars(
                select(FaceMatch.photo_id).where(FaceMatch.user_id == me.user["id"])
            )
            assert sorted(rows) == [photos[0], photos[2]]
    finally:
        await db.aclose()
