"""Live streams under load: refused past capacity, and no database connection held open."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from tests.conftest import PASSWORD, serve, with_settings
from tests.scenes import open_stream


async def signed_in(client: httpx.AsyncClient, name: str) -> None:
    body = {"email": f"{name}@example.com", "password": PASSWORD, "name": name.title()}
    assert (await client.post("/api/auth/register", json=body)).status_code == 201


async def until_accepted(client: httpx.AsyncClient) -> None:
    for _ in range(100):
        async with client.stream("GET", "/api/my-photos/stream") as response:
            if response.status_code == 200:
                return
        await asyncio.sleep(0.1)
    pytest.fail("the stream was still refused after the others closed")


async def test_streams_past_capacity_get_503_with_retry_after_until_one_closes(settings) -> None:
    small = with_settings(settings, max_streams=2)
    async with (
        serve(small) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as me,
        httpx.AsyncClient(base_url=url, timeout=30) as other,
    ):
        await signed_in(me, "me")
        await signed_in(other, "other")
        async with contextlib.AsyncExitStack() as streams:
            # Kept referenced: a dropped reader closes its connection.
            kept = [
                await streams.enter_async_context(open_stream(client)) for client in (me, other)
            ]
            for stream in kept:
                assert await stream.until_ready() == []
            # (Were it not refused, this would stream until the timeout and fail.)
            refused = await other.get("/api/my-photos/stream", timeout=10)
            assert refused.status_code == 503
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert "Too many live pages" in refused.json()["detail"]
            # Refused before anything else: a signed-out caller learns only to come back later.
            async with httpx.AsyncClient(base_url=url) as nobody:
                assert (await nobody.get("/api/my-photos/stream")).status_code == 503
        # Closed streams give their slots back (once the server has seen the disconnects).
        await until_accepted(me)
        async with open_stream(me) as stream, open_stream(other) as again:
            assert await stream.until_ready() == []
            assert await again.until_ready() == []


async def test_open_streams_hold_no_database_connection(settings) -> None:
    # One pooled connection, no overflow, a short wait: a stream that kept it would starve the
    # next stream's set-up and every ordinary request.
    tight = with_settings(
        settings, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=3, max_streams=10
    )
    async with serve(tight) as url, httpx.AsyncClient(base_url=url, timeout=30) as me:
        await signed_in(me, "me")
        async with contextlib.AsyncExitStack() as streams:
            kept = [await streams.enter_async_context(open_stream(me)) for _ in range(4)]
            for stream in kept:
                assert await stream.until_ready() == []
            assert (await me.get("/api/events")).status_code == 200


async def test_the_admin_sees_how_many_live_pages_are_open_of_how_many(settings, make_user) -> None:
    small = with_settings(settings, max_streams=5)
    async with serve(small) as url, httpx.AsyncClient(base_url=url, timeout=30) as me:
        await signed_in(me, "watcher")
        admin_client = await make_user("admin")
        admin = httpx.AsyncClient(
            base_url=url, timeout=30, headers={"authorization": await _admin_token(admin_client)}
        )
        async with admin:
            idle = (await admin.get("/api/admin/queue/stats")).json()["live_pages"]
            assert idle == {"open": 0, "capacity": 5}
            async with open_stream(me) as stream:
                await stream.until_ready()
                busy = (await admin.get("/api/admin/queue/stats")).json()["live_pages"]
            assert busy == {"open": 1, "capacity": 5}


async def _admin_token(admin: httpx.AsyncClient) -> str:
    created = await admin.post("/api/auth/tokens", json={"name": "stats"})
    assert created.status_code == 201, created.text
    return f"Bearer {created.json()['token']}"
