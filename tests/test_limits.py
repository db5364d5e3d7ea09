"""Rate limits: 429 with Retry-After and a sentence; sign-in resists guessing."""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from findme.errors import RateLimited
from findme.ratelimit import RateLimiter
from tests.conftest import PASSWORD, serve, with_settings


async def test_password_guessing_is_capped_per_account_and_per_ip(settings, make_user) -> None:
    strict = with_settings(settings, rate_login_account="3/minute", rate_login_ip="8/minute")
    async with serve(strict) as url, httpx.AsyncClient(base_url=url) as client:
        victim = {"email": "victim@example.com", "password": PASSWORD, "name": "Victim"}
        assert (await client.post("/api/auth/register", json=victim)).status_code == 201
        client.cookies.clear()  # a stranger's browser, not the victim's (which is never refused)
        for attempt in range(3):
            wrong = await client.post(
                "/api/auth/login", json={"email": victim["email"], "password": f"guess{attempt}xx"}
            )
            assert wrong.status_code == 401
        blocked = await client.post(
            "/api/auth/login", json={"email": victim["email"], "password": PASSWORD}
        )
        assert blocked.status_code == 429
        assert blocked.json()["error"] == "rate_limited"
        assert "Try again in" in blocked.json()["detail"]
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        # Another account from the same address is not locked by the victim's failures...
        other = {"email": "other@example.com", "password": PASSWORD, "name": "Other"}
        client.cookies.clear()
        assert (await client.post("/api/auth/register", json=other)).status_code == 201
        assert (await client.post("/api/auth/login", json=other)).status_code == 200
        # ...but the address's failures, on any account, are capped too.
        for attempt in range(5):
            client.cookies.clear()
            response = await client.post(
                "/api/auth/login", json={"email": f"n{attempt}@example.com", "password": "guess"}
            )
            assert response.status_code == 401
        client.cookies.clear()
        assert (await client.post("/api/auth/login", json=other)).status_code == 429


async def test_uploads_and_reads_are_limited(settings) -> None:
    strict = with_settings(settings, rate_api_read="5/minute")
    async with serve(strict) as url, httpx.AsyncClient(base_url=url) as client:
        body = {"email": "reader@example.com", "password": PASSWORD, "name": "Reader"}
        await client.post("/api/auth/register", json=body)
        statuses = [(await client.get("/api/events")).status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]


async def test_limits_can_live_in_redis_for_several_instances() -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError:
        pytest.fail("Redis on 127.0.0.1:6379 does not answer; `make test` starts it if installed.")
    rules = {"upload": ("2/minute", "Too many upload requests.")}
    first = RateLimiter(storage_url="redis://127.0.0.1:6379/0", rules=rules)
    second = RateLimiter(storage_url="redis://127.0.0.1:6379/0", rules=rules)
    user = uuid.uuid4().hex
    await first.hit("upload", user)
    await second.hit("upload", user)
    with pytest.raises(RateLimited) as refused:
        await first.hit("upload", user)
    assert refused.value.extra["retry_after_s"] >= 1
    await first.aclose()
    await second.aclose()


async def _calls_during(
    limiter: RateLimiter, name: str, identifier: str, *, test_began_with: set[asyncio.Task[Any]]
) -> int:
    """Function calls (ours, the library's, builtins) made while one hit is counted, including
    any task it leaves behind (a sweep)."""
    calls = 0

    def count(_frame, event, _arg) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    await _settle(test_began_with)  # what the test's earlier hits left behind
    before = asyncio.all_tasks()
    sys.setprofile(count)
    try:
        await limiter.hit(name, identifier)
        await _settle(before)
    finally:
        sys.setprofile(None)
    return calls


async def _settle(before: set[asyncio.Task[Any]]) -> None:
    """Wait for the tasks a hit started to finish (not the loop's others: the event loop is
    shared with other test files' servers, whose tasks run until the session ends)."""
    while started := asyncio.all_tasks() - before:
        await asyncio.wait(started)


async def test_a_hit_costs_the_same_however_many_members_are_counted() -> None:
    rules = {"api_read": ("1200/minute", "Too many requests.")}
    began_with = asyncio.all_tasks()
    few, many = (RateLimiter(storage_url="memory://", rules=rules) for _ in range(2))
    for member in range(10):
        await few.hit("api_read", f"m{member}")
    for member in range(3000):
        await many.hit("api_read", f"m{member}")
    # Warm both (first calls of a code path import and cache), then measure a member's next hit.
    await _calls_during(few, "api_read", "m1", test_began_with=began_with)
    await _calls_during(many, "api_read", "m1", test_began_with=began_with)
    with_few = await _calls_during(few, "api_read", "m2", test_began_with=began_with)
    with_many = await _calls_during(many, "api_read", "m2", test_began_with=began_with)
    assert with_many <= with_few + 20, (with_few, with_many)


async def test_the_sliding_window_refuses_past_the_limit_and_clears() -> None:
    limiter = RateLimiter(storage_url="memory://", rules={"selfie": ("3/hour", "Too many.")})
    for _ in range(3):
        await limiter.hit("selfie", "7")
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("selfie", "7")
    assert 1 <= refused.value.extra["retry_after_s"] <= 3600
    await limiter.hit("selfie", "8")  # another member is not affected
    await limiter.check("selfie", "8")
    await limiter.clear("selfie", "7")
    await limiter.hit("selfie", "7")


async def test_hits_just_before_a_new_window_still_count_just_after_it() -> None:
    limiter = RateLimiter(storage_url="memory://", rules={"login_ip": ("3/second", "Too many.")})
    # Start just after a window begins, so all three hits fall in it.
    await asyncio.sleep(math.ceil(time.time()) - time.time() + 0.01)
    for _ in range(3):
        await limiter.hit("login_ip", "127.0.0.5")
    # Just after the next window begins, those hits still weigh almost fully.
    await asyncio.sleep(math.ceil(time.time()) - time.time() + 0.001)
    with pytest.raises(RateLimited):
        await limiter.hit("login_ip", "127.0.0.5")
