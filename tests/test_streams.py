"""Live streams under load: refused past capacity, no database connection held open, and a
burst of news served with one read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from findme.db import Database, Event, FaceMatch, Photo, Role, User
from findme.domain.photos import matches_after_of_many
from findme.migrations import migrate
from findme.settings import Settings
from tests.conftest import PASSWORD, serve, with_settings
from tests.scenes import join, jpeg, notify, open_stream, upload


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


@contextlib.contextmanager
def statements_seen() -> Iterator[list[str]]:
    """Every SQL statement this process sends while the block runs (the server runs here)."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


@pytest.fixture
def settings(settings):
    """Room for a crowd of sign-ups from one address (the tests')."""
    return with_settings(settings, rate_signup_ip="100/hour")


async def test_a_burst_of_matches_wakes_every_stream_with_one_read(
    settings, make_user, make_event
) -> None:
    organiser = await make_user("photographer")
    party = await make_event(organiser)
    (photo,) = await upload(organiser, party["id"], ("crowd.jpg", jpeg(7)))
    members = [await make_user() for _ in range(24)]
    for member in members:
        await join(member, party)
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(open_stream(m)) for m in members]
        for stream in streams:
            assert await stream.until_ready() == []
        # One photo of the crowd matches every member, as one worker's commit and one NOTIFY.
        db = Database(settings)
        try:
            async with db.transaction() as session:
                for member in members:
                    session.add(
                        FaceMatch(
                            photo_id=photo,
                            user_id=member.user["id"],
                            event_id=party["id"],
                            distance=0.3,
                        )
                    )
        finally:
            await db.aclose()
        with statements_seen() as seen:
            await notify(settings, {m.user["id"] for m in members})
            arrived = [await stream.next() for stream in streams]
    assert [a["data"]["id"] for a in arrived] == [photo] * len(members)
    # Each stream got its own match, and only its own.
    assert len({a["id"] for a in arrived}) == len(members)
    reads = [s for s in seen if "face_matches" in s and s.lstrip().upper().startswith("SELECT")]
    checks = [s for s in seen if "browser_sessions" in s]
    # One read of the new matches and one look at the sessions for the whole burst; a stream
    # that read for itself would make 24 of each.
    assert 1 <= len(reads) <= 2, reads
    assert 1 <= len(checks) <= 2, checks


async def _matched(db: Database, members: int) -> tuple[list[int], dict[int, list[int]]]:
    """Members of one event, each matched to the event's three photos; (members, match ids)."""
    async with db.transaction() as session:
        users = [
            User(email=f"m{i}@example.com", name=f"M{i}", password_hash="x", role=Role.attendee)
            for i in range(members)
        ]
        session.add_all(users)
        await session.flush()
        event = Event(name="Party", code="PARTY1", organiser_id=users[0].id)
        session.add(event)
        await session.flush()
        photos = [
            Photo(
                event_id=event.id,
                filename=f"p{i}.jpg",
                sha256=f"{i:064d}",
                content_type="image/jpeg",
                size_bytes=3,
                width=4,
                height=3,
            )
            for i in range(3)
        ]
        session.add_all(photos)
        await session.flush()
        matches: dict[int, list[int]] = {}
        for photo in photos:
            for user in users:
                match = FaceMatch(
                    photo_id=photo.id, user_id=user.id, event_id=event.id, distance=0.3
                )
                session.add(match)
                await session.flush()
                matches.setdefault(user.id, []).append(match.id)
    return [u.id for u in users], matches


async def test_the_hub_reads_the_same_matches_on_postgresql_and_sqlite(settings, tmp_path) -> None:
    lite = Settings.from_environ({"FINDME_DATA_DIR": str(tmp_path), "FINDME_RUN_WORKERS": "0"})
    await asyncio.to_thread(migrate, lite)
    found = []
    for each in (settings, lite):
        db = Database(each)
        try:
            users, matches = await _matched(db, 4)
            # Cursors: one member has seen nothing, one the first match, one all but the last,
            # one everything.
            after = {users[0]: 0, users[1]: matches[users[1]][0], users[2]: matches[users[2]][1]}
            after[users[3]] = matches[users[3]][2]
            async with db.sessions() as session:
                rows = await matches_after_of_many(session, after)
            found.append(
                {
                    users.index(user): [(items.index(m), e) for m, e, _ in rows[user]]
                    for user, items in matches.items()
                    if user in rows
                }
            )
        finally:
            await db.aclose()
    postgresql, sqlite = found
    assert postgresql == sqlite
    assert {member: [i for i, _ in rows] for member, rows in postgresql.items()} == {
        0: [0, 1, 2],
        1: [1, 2],
        2: [2],
    }


async def test_a_request_that_finds_no_free_database_connection_gets_503_not_500(
    settings,
) -> None:
    # One pooled connection, held here: every request that needs the database then waits its
    # second and must be told to come back, as in a reconnect storm of thousands of pages.
    tight = with_settings(settings, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=1)
    states = []

    def keep_state(app):
        async def remember(scope, receive, send):
            if scope["type"] == "http":
                states.append(scope["state"]["findme"])
            await app(scope, receive, send)

        return remember

    async with serve(tight, wrap=keep_state) as url, httpx.AsyncClient(base_url=url) as me:
        await signed_in(me, "me")
        body = {"email": "me@example.com", "password": PASSWORD}
        async with states[-1].db.engine.connect():
            busy = await me.post("/api/auth/login", json=body)
        assert busy.status_code == 503
        assert 5 <= int(busy.headers["retry-after"]) <= 10
        assert busy.json()["error"] == "busy"
        assert "Try again in a few seconds" in busy.json()["detail"]
        # Freed, the same request succeeds: nothing was left half done.
        assert (await me.post("/api/auth/login", json=body)).status_code == 200


async def test_pages_reconnecting_together_have_their_sessions_read_together(
    settings, make_user, make_event
) -> None:
    """After a restart every cache is cold: 24 pages of an event coming back at once are signed
    in, and found to be members, by a few batched reads, not by two queries each."""
    organiser = await make_user("photographer")
    party = await make_event(organiser)
    members = [await make_user() for _ in range(24)]
    for member in members:
        await join(member, party)
    async with serve(settings) as url:  # a new process's worth of empty caches
        clients = [httpx.AsyncClient(base_url=url, cookies=m.cookies) for m in members]
        try:
            with statements_seen() as seen:
                async with contextlib.AsyncExitStack() as stack:
                    responses = await asyncio.gather(
                        *(
                            stack.enter_async_context(
                                client.stream(
                                    "GET", "/api/my-photos/stream", params={"event_id": party["id"]}
                                )
                            )
                            for client in clients
                        )
                    )
                    assert [r.status_code for r in responses] == [200] * len(members)
        finally:
            for client in clients:
                await client.aclose()
    signed_in_by = [s for s in seen if "FROM browser_sessions JOIN users" in s]
    assert 1 <= len(signed_in_by) <= 4, len(signed_in_by)
    members_by = [s for s in seen if "FROM event_members" in s]
    assert 1 <= len(members_by) <= 4, len(members_by)
