"""Metadata caches: single-flight loads, invalidation, stats and clearing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from findme.cache import AsyncCache
from tests.conftest import serve
from tests.scenes import add_matches, drain, join, jpeg, upload


async def test_concurrent_misses_run_one_load() -> None:
    cache: AsyncCache[int] = AsyncCache("t", maxsize=10, ttl_s=30)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return 42

    results = await asyncio.gather(*(cache.get((1, "page"), load) for _ in range(20)))
    assert results == [42] * 20
    assert loads == 1
    assert await cache.get((1, "page"), load) == 42
    assert loads == 1
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 20


async def test_a_failed_load_is_not_cached_and_reaches_every_waiter() -> None:
    cache: AsyncCache[int] = AsyncCache("t", maxsize=10, ttl_s=30)

    async def broken() -> int:
        await asyncio.sleep(0.01)
        raise RuntimeError("database down")

    outcomes = await asyncio.gather(
        *(cache.get((1,), broken) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)

    async def fine() -> int:
        return 7

    assert await cache.get((1,), fine) == 7


async def test_invalidation_drops_entries_and_stale_loads() -> None:
    cache: AsyncCache[str] = AsyncCache("t", maxsize=10, ttl_s=30)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_old_value() -> str:
        started.set()
        await release.wait()
        return "old"

    pending = asyncio.create_task(cache.get((5, "a"), slow_old_value))
    await started.wait()
    cache.invalidate({5})  # matches changed while the old page was being read
    release.set()
    assert await pending == "old"

    async def new_value() -> str:
        return "new"

    assert await cache.get((5, "a"), new_value) == "new"
    await cache.get((6, "a"), new_value)
    cache.invalidate({5})
    assert cache.stats()["size"] == 1


@pytest.mark.parametrize("ttl_s", [0.05])
async def test_entries_expire(ttl_s) -> None:
    cache: AsyncCache[int] = AsyncCache("t", maxsize=10, ttl_s=ttl_s)
    values = iter([1, 2])

    async def load() -> int:
        return next(values)

    assert await cache.get((1,), load) == 1
    await asyncio.sleep(ttl_s * 2)
    assert await cache.get((1,), load) == 2


async def test_admin_sees_cache_figures_and_clears_them(make_user, make_event) -> None:
    admin = await make_user("admin")
    attendee = await make_user()
    organiser = await make_user("photographer")
    event = await make_event(organiser)
    await attendee.post("/api/events/join", json={"code": event["code"]})
    for _ in range(3):
        page = await attendee.get("/api/my-photos", params={"event_id": event["id"]})
        assert page.status_code == 200
    stats = (await admin.get("/api/admin/queue/stats")).json()
    my_photos = stats["cache"]["my_photos"]
    assert (my_photos["hits"], my_photos["misses"], my_photos["size"]) == (2, 1, 1)
    assert my_photos["hit_rate"] == pytest.approx(2 / 3, abs=0.001)
    assert set(stats["cache"]) == {
        "my_photos",
        "all_photos",
        "events",
        "users",
        "sessions",
        "gallery_access",
    }
    assert set(stats["queue"]) >= {
        "total_enqueued",
        "total_processed",
        "total_failed",
        "current_queue_size",
        "workers_active",
    }
    cleared = await admin.post("/api/admin/cache/clear")
    assert cleared.status_code == 200
    assert (await admin.get("/api/admin/queue/stats")).json()["cache"]["my_photos"]["size"] == 0
    assert (await attendee.post("/api/admin/cache/clear")).status_code == 403


async def test_sign_out_on_one_instance_ends_the_session_on_every_instance(settings) -> None:
    from tests.conftest import PASSWORD

    async with serve(settings) as first_url, serve(settings) as second_url:
        async with httpx.AsyncClient(base_url=first_url) as first:
            body = {"email": "two@example.com", "password": PASSWORD, "name": "Two"}
            await first.post("/api/auth/register", json=body)
            login = await first.post("/api/auth/login", json=body)
            first.headers["x-csrf-token"] = login.json()["csrf_token"]
            cookie = first.cookies["findme_session"]
            async with httpx.AsyncClient(
                base_url=second_url, cookies={"findme_session": cookie}
            ) as second:
                assert (await second.get("/api/me")).status_code == 200  # now cached there
                assert (await first.post("/api/auth/logout")).status_code == 204
                for _ in range(50):  # NOTIFY reaches the other instance within moments
                    if (await second.get("/api/me")).status_code == 401:
                        break
                    await asyncio.sleep(0.05)
                assert (await second.get("/api/me")).status_code == 401


async def test_a_zero_time_to_live_turns_a_cache_off() -> None:
    cache: AsyncCache[int] = AsyncCache("off", maxsize=10, ttl_s=0)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    assert [await cache.get((1,), load) for _ in range(3)] == [1, 2, 3]
    assert cache.stats()["size"] == 0


async def gallery(client, event_id: int) -> dict[int, str]:
    """The event's gallery as the client sees it: photo id -> status."""
    response = await client.get("/api/all-photos", params={"event_id": event_id, "limit": 200})
    assert response.status_code == 200, response.text
    return {item["id"]: item["status"] for item in response.json()["items"]}


async def gallery_cache(admin) -> dict:
    return (await admin.get("/api/admin/queue/stats")).json()["cache"]["all_photos"]


async def eventually(check, *, attempts: int = 100) -> bool:
    """Whether `check()` comes true within moments: news from another instance travels by
    NOTIFY. The pages live 30 s, far longer than this waits, so only the news can do it."""
    for _ in range(attempts):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_an_event_gallery_is_cached_until_its_photos_change(
    make_user, make_event, server
) -> None:
    admin, organiser = await make_user("admin"), await make_user("photographer")
    event = await make_event(organiser)
    first, second = await upload(organiser, event["id"], ("a.jpg", jpeg(1)), ("b.jpg", jpeg(2)))
    assert await gallery(organiser, event["id"]) == {first: "queued", second: "queued"}
    before = await gallery_cache(admin)
    # Served from the cache, and one page for everyone who sees every photo (admins too).
    assert await gallery(organiser, event["id"]) == {first: "queued", second: "queued"}
    assert await gallery(admin, event["id"]) == {first: "queued", second: "queued"}
    after = await gallery_cache(admin)
    assert (after["hits"], after["misses"]) == (before["hits"] + 2, before["misses"])

    (third,) = await upload(organiser, event["id"], ("c.jpg", jpeg(3)))
    assert set(await gallery(organiser, event["id"])) == {first, second, third}
    assert (await organiser.delete(f"/api/photo/{first}")).status_code == 204
    assert set(await gallery(organiser, event["id"])) == {second, third}

    # Processed by the workers of another instance: their news crosses over.
    assert (await drain(server.settings))["done"] == 2

    async def processed() -> bool:
        return await gallery(organiser, event["id"]) == {second: "no_faces", third: "no_faces"}

    assert await eventually(processed)

    assert (await organiser.delete(f"/api/events/{event['id']}")).status_code == 204
    assert (await gallery_cache(admin))["size"] == 0


@contextlib.asynccontextmanager
async def another_instance(settings, *clients) -> AsyncIterator[dict]:
    """A second instance on the same database, and each client signed in there too."""
    async with serve(settings) as other_url:
        there = {
            client: httpx.AsyncClient(
                base_url=other_url, cookies=client.cookies, headers=dict(client.headers)
            )
            for client in clients
        }
        try:
            yield there
        finally:
            for client in there.values():
                await client.aclose()


async def test_galleries_on_two_instances_hear_of_each_others_changes(
    make_user, make_event, server, settings
) -> None:
    organiser, member = await make_user("photographer"), await make_user()
    event = await make_event(organiser)
    await join(member, event)
    (first,) = await upload(organiser, event["id"], ("a.jpg", jpeg(1)))
    async with another_instance(settings, organiser, member) as there:
        for _ in range(2):  # cached there
            assert await gallery(there[organiser], event["id"]) == {first: "queued"}
            assert await gallery(there[member], event["id"]) == {}

        (second,) = await upload(organiser, event["id"], ("b.jpg", jpeg(2)))

        async def added() -> bool:
            return set(await gallery(there[organiser], event["id"])) == {first, second}

        assert await eventually(added)
        assert (await organiser.delete(f"/api/photo/{first}")).status_code == 204

        async def deleted() -> bool:
            return set(await gallery(there[organiser], event["id"])) == {second}

        assert await eventually(deleted)

        # A member who sees only their own photos hears of their matches, as in "my photos".
        await add_matches(
            settings, user_id=member.user["id"], event_id=event["id"], photo_ids=[second]
        )

        async def matched() -> bool:
            return set(await gallery(there[member], event["id"])) == {second}

        assert await eventually(matched)
        assert (await organiser.delete(f"/api/events/{event['id']}")).status_code == 204

        async def gone() -> bool:
            response = await there[organiser].get(
                "/api/all-photos", params={"event_id": event["id"]}
            )
            return response.status_code == 404 or response.json()["items"] == []

        assert await eventually(gone)


async def test_who_may_see_a_gallery_is_heard_of_on_every_instance(
    make_user, make_event, settings
) -> None:
    organiser, member, newcomer = (
        await make_user("photographer"),
        await make_user(),
        await make_user(),
    )
    event = await make_event(organiser)
    await join(member, event)
    first, second = await upload(organiser, event["id"], ("a.jpg", jpeg(1)), ("b.jpg", jpeg(2)))
    await add_matches(settings, user_id=member.user["id"], event_id=event["id"], photo_ids=[first])
    async with another_instance(settings, member, newcomer) as there:
        for _ in range(2):  # the member's access and page are now cached there
            assert set(await gallery(there[member], event["id"])) == {first}

        # The organiser opens the gallery to all, then closes it, on this instance.
        for setting, seen in (("all", {first, second}), ("own", {first})):
            changed = await organiser.patch(f"/api/events/{event['id']}", json={"gallery": setting})
            assert changed.status_code == 200, changed.text

            async def shown(seen: set[int] = seen) -> bool:
                return set(await gallery(there[member], event["id"])) == seen

            assert await eventually(shown)

        # A refusal is not remembered: joining here lets the newcomer in there at once.
        refused = await there[newcomer].get("/api/all-photos", params={"event_id": event["id"]})
        assert refused.status_code == 404
        await join(newcomer, event)
        assert await gallery(there[newcomer], event["id"]) == {}

        assert (await organiser.delete(f"/api/events/{event['id']}")).status_code == 204

        async def gone() -> bool:
            response = await there[member].get("/api/all-photos", params={"event_id": event["id"]})
            return response.status_code == 404

        assert await eventually(gone)
