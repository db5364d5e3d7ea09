"""Thousands of live "my photos" pages on one process: idle cost, latency, a burst, a restart.

    .venv/bin/python -m bench.live [--pages 4000] [--burst 2000]

One `findme serve` process (PostgreSQL, workers off: matches are written here as another
instance's worker writes them, rows then NOTIFY) and one event whose members each keep a page
open. Each page is a raw-socket EventSource that behaves like static/js/photos.js: it resumes
after the last match it received, and after any failure waits a jittered, doubling delay
(1 s first, 8 s at most). Members, sessions and photos are written straight to the database
(signing 4,000 people in through argon2 would take minutes and measure nothing here).

Printed: memory and CPU of the server with the pages open, idle and while one member polls
"my photos" 5 times a second; match → page latency; a burst matching `--burst` members at once
(arrival p50/p95/max, and "my photos" latency for a member polling meanwhile); and a restart
(SIGTERM, a new process on the same port) with a match made for every member while it was
down: how long until every page has it, responses of 500 or more, and /healthz meanwhile
(probed by a process of its own, bench/health_probe.py, not by this busy one).
The pages and the server share this machine's cores. Figures in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import resource
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from sqlalchemy import insert

from bench.harness import free_port, fresh_database, percentile, server
from findme.auth import Authenticator, hash_password
from findme.cache import Caches
from findme.db import (
    BrowserSession,
    Database,
    Event,
    EventMember,
    FaceMatch,
    Photo,
    PhotoStatus,
    Role,
    User,
    utcnow,
)
from findme.live import MatchFeed
from findme.settings import Settings
from tests.scenes import jpeg

SECRET = secrets.token_urlsafe(32)
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 8.0


@dataclass
class Page:
    """One member's open "my photos" page."""

    user_id: int
    cookie: str
    port: int
    event_id: int
    last_id: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: dict[int, float] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: int = 0
    answered_at: float = 0.0
    waiters: dict[int, asyncio.Future[float]] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            try:
                await self._stream()
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            self.ready.clear()
            ceiling = min(RETRY_MAX_S, RETRY_FIRST_S * 2**self.failures)
            self.failures += 1
            await asyncio.sleep(ceiling / 2 + random.random() * ceiling / 2)

    def when(self, match_id: int) -> asyncio.Future[float]:
        """Resolved with the arrival time of this match."""
        future = asyncio.get_running_loop().create_future()
        if match_id in self.arrived:
            future.set_result(self.arrived[match_id])
        else:
            self.waiters[match_id] = future
        return future

    async def _stream(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(
                # As the page asks: its event's matches only (a membership read at each set-up).
                f"GET /api/my-photos/stream?event_id={self.event_id}&after={self.last_id} "
                "HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nCookie: findme_session={self.cookie}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            status = int((await reader.readline()).split()[1])
            self.statuses[status] += 1
            self.answered_at = time.perf_counter()
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # headers
            if status != 200:
                return
            await self._events(reader)
        finally:
            writer.close()

    async def _events(self, reader: asyncio.StreamReader) -> None:
        """Server-Sent Events out of a chunked body."""
        pending = b""
        kind, match_id = "message", None
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                return
            pending += await reader.readexactly(size + 2)
            *lines, pending = pending.replace(b"\r\n", b"\n").split(b"\n")
            for line in lines:
                if line.startswith(b"event:"):
                    kind = line[6:].strip().decode()
                elif line.startswith(b"id:"):
                    match_id = int(line[3:].strip())
                elif not line:
                    if kind == "ready":
                        self.failures = 0
                        self.ready.set()
                    elif match_id is not None:
                        self._arrived(match_id)
                    kind, match_id = "message", None

    def _arrived(self, match_id: int) -> None:
        now = time.perf_counter()
        self.last_id = max(self.last_id, match_id)
        self.arrived[match_id] = now
        waiter = self.waiters.pop(match_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)


async def seed(database_url: str, members: int) -> tuple[int, list[int], list[str], list[int]]:
    """An event, its members with a session each, and 20 photos; (event, users, cookies,
    photos)."""
    settings = Settings.from_environ(
        {"FINDME_DATABASE_URL": database_url, "FINDME_SECRET_KEY": SECRET}
    )
    db = Database(settings)
    caches = Caches.create(my_photos_s=0, events_s=0, users_s=0)
    auth = Authenticator(
        db=db,
        secret_key=SECRET,
        session_max_age_s=settings.session_max_age_s,
        users=caches.users,
        sessions=caches.sessions,
    )
    password = await hash_password("bench password")
    try:
        async with db.transaction() as session:
            rows = [
                {
                    "email": f"member-{i}@example.com",
                    "name": f"Member {i}",
                    "password_hash": password,
                    "role": Role.attendee,
                }
                for i in range(members + 1)
            ]
            users = list(
                await session.scalars(
                    insert(User).returning(User.id, sort_by_parameter_order=True), rows
                )
            )
            organiser = users.pop()
            event = await session.scalar(
                insert(Event)
                .values(name="Live bench", code="LIVEBENCH", organiser_id=organiser)
                .returning(Event.id)
            )
            assert event is not None
            await session.execute(
                insert(EventMember), [{"event_id": event, "user_id": u} for u in users]
            )
            browsers = [
                BrowserSession(
                    id=secrets.token_urlsafe(32),
                    user_id=u,
                    csrf_token=secrets.token_urlsafe(32),
                    expires_at=utcnow().replace(year=utcnow().year + 1),
                )
                for u in users
            ]
            session.add_all(browsers)
            photos = []
            for i in range(20):
                data = jpeg(i)
                photos.append(
                    await session.scalar(
                        insert(Photo)
                        .values(
                            event_id=event,
                            uploader_id=organiser,
                            filename=f"photo-{i}.jpg",
                            sha256=hashlib.sha256(data).hexdigest(),
                            content_type="image/jpeg",
                            size_bytes=len(data),
                            width=320,
                            height=240,
                            status=PhotoStatus.done,
                            original=data,
                            thumbnail=data,
                        )
                        .returning(Photo.id)
                    )
                )
        cookies = [auth.cookie_value(b) for b in browsers]
        return event, users, cookies, [p for p in photos if p is not None]
    finally:
        await db.aclose()


class Matcher:
    """Writes matches as a worker of another instance would: rows, then NOTIFY."""

    def __init__(self, database_url: str, event_id: int) -> None:
        settings = Settings.from_environ(
            {"FINDME_DATABASE_URL": database_url, "FINDME_SECRET_KEY": SECRET}
        )
        self.db = Database(settings)
        self.event_id = event_id
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.feed = MatchFeed(postgres_dsn=dsn)

    async def match(self, photo_id: int, user_ids: list[int], *, notify: bool = True) -> dict:
        """Match ids by user."""
        async with self.db.transaction() as session:
            rows = await session.execute(
                insert(FaceMatch).returning(
                    FaceMatch.user_id, FaceMatch.id, sort_by_parameter_order=True
                ),
                [
                    {"photo_id": photo_id, "user_id": u, "event_id": self.event_id, "distance": 0.3}
                    for u in user_ids
                ],
            )
            ids = {user_id: match_id for user_id, match_id in rows.all()}
        if notify:
            await self.feed.publish(set(user_ids))
        return ids


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


async def server_cpu(pid: int, seconds: float) -> float:
    """Share of one core the process used over `seconds`."""
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


async def poll(client: httpx.AsyncClient, per_s: float, stop: asyncio.Event) -> list[float]:
    """'My photos' `per_s` times a second until stopped; latencies in ms, and every status."""
    latencies: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get("/api/my-photos")
        assert response.status_code == 200, response.text
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(max(0.0, 1 / per_s - (time.perf_counter() - started)))
    return latencies


@contextlib.contextmanager
def more_open_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def ms(seconds: list[float], fraction: float) -> str:
    return f"{percentile(seconds, fraction) * 1000:.0f} ms"


async def open_pages(pages: list[Page]) -> list[asyncio.Task[None]]:
    tasks = []
    for i, page in enumerate(pages):
        tasks.append(asyncio.create_task(page.run()))
        if i % 200 == 199:
            await asyncio.sleep(0.2)  # phones arrive over a few seconds, not in one instant
    try:
        await asyncio.wait_for(asyncio.gather(*(p.ready.wait() for p in pages)), 300)
    except TimeoutError:
        ready = sum(p.ready.is_set() for p in pages)
        statuses = sum((p.statuses for p in pages), Counter())
        raise SystemExit(
            f"only {ready} of {len(pages)} pages were ready after 300 s; "
            f"stream answers {dict(statuses)}"
        ) from None
    return tasks


async def main(args: argparse.Namespace) -> None:
    async with fresh_database() as database_url:
        port = free_port()
        env = {
            "FINDME_SECRET_KEY": SECRET,
            "FINDME_DEVELOPMENT": "false",
            "FINDME_RUN_WORKERS": "false",
            "FINDME_LOG_LEVEL": "warning",
        }
        with server(database_url, port=port, **env) as srv:
            event, users, cookies, photos = await seed(database_url, args.pages)
            matcher = Matcher(database_url, event)
            async with matcher.feed:
                await measure(srv, matcher, users, cookies, photos, port, args, database_url, env)


async def measure(srv, matcher, users, cookies, photos, port, args, database_url, env) -> None:
    rss_before = srv.rss_kb()
    pages = [Page(u, c, port, matcher.event_id) for u, c in zip(users, cookies, strict=True)]
    started = time.perf_counter()
    tasks = await open_pages(pages)
    print(f"{len(pages)} pages open and ready in {time.perf_counter() - started:.1f} s")
    await asyncio.sleep(5)
    print(f"server memory: +{(srv.rss_kb() - rss_before) / 1024:.0f} MB for the open pages")
    # A minute: two keep-alive pings per page and the stream hub's one look at every page.
    idle = await server_cpu(srv.process.pid, 60)
    print(f"server CPU, pages idle (60 s): {idle * 100:.1f} % of a core")

    poller = httpx.AsyncClient(base_url=srv.url, cookies={"findme_session": cookies[0]}, timeout=30)
    stop = asyncio.Event()
    polling = asyncio.create_task(poll(poller, 5, stop))
    busy = await server_cpu(srv.process.pid, 60)
    stop.set()
    await polling
    print(f"server CPU, + one member polling my photos 5/s (60 s): {busy * 100:.1f} % of a core")

    # One match at a time, each for another member chosen at random.
    latencies = []
    for page in random.sample(pages, args.singles):
        sent = time.perf_counter()
        (match_id,) = (await matcher.match(photos[0], [page.user_id])).values()
        latencies.append(await asyncio.wait_for(page.when(match_id), 30) - sent)
    print(
        f"match -> page, {args.singles} single matches: p50 {ms(latencies, 0.5)}, "
        f"p95 {ms(latencies, 0.95)}, max {ms(latencies, 1.0)}"
    )

    # A burst: one photo matches many members at once, while a member in it polls my photos.
    woken = random.sample(pages, args.burst)
    stop = asyncio.Event()
    polling = asyncio.create_task(poll(poller, 20, stop))
    await asyncio.sleep(1)
    sent = time.perf_counter()
    ids = await matcher.match(photos[-1], [p.user_id for p in woken])
    arrivals = await asyncio.wait_for(asyncio.gather(*(p.when(ids[p.user_id]) for p in woken)), 120)
    await asyncio.sleep(1)
    stop.set()
    during = await polling
    waits = [t - sent for t in arrivals]
    print(
        f"burst waking {len(woken)} pages: p50 {ms(waits, 0.5)}, p95 {ms(waits, 0.95)}, "
        f"max {ms(waits, 1.0)}; my photos meanwhile p50 {percentile(during, 0.5):.0f} ms, "
        f"p99 {percentile(during, 0.99):.0f} ms ({len(during)} requests)"
    )
    await poller.aclose()

    await restart(srv, matcher, pages, photos, database_url, env, port)
    for task in tasks:
        task.cancel()


async def restart(srv, matcher, pages, photos, database_url, env, port) -> None:
    """SIGTERM, a match for every member while down, a new process on the same port."""
    for page in pages:
        page.statuses.clear()
    srv.process.terminate()
    srv.process.wait(timeout=60)
    ids = await matcher.match(photos[1], [p.user_id for p in pages], notify=False)
    with server(database_url, port=port, **env) as again:
        back = time.perf_counter()
        probe = subprocess.Popen(
            [sys.executable, "-m", "bench.health_probe", again.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        missing = {p.user_id: p for p in pages}
        while missing and time.perf_counter() - back < 180:
            for user_id, page in list(missing.items()):
                if ids[user_id] in page.arrived:
                    del missing[user_id]
            await asyncio.sleep(0.1)
        probed, _ = probe.communicate(timeout=60)
        health = [float(line) for line in probed.split() if line != "failed"]
        health_errors = probed.split().count("failed")
        arrivals = [p.arrived[ids[p.user_id]] for p in pages if ids[p.user_id] in p.arrived]
        answered = [p.answered_at - back for p in pages]
        if missing:
            print(f"restart: {len(missing)} pages not caught up after 180 s")
        statuses = sum((p.statuses for p in pages), Counter())
        server_errors = sum(n for status, n in statuses.items() if status >= 500 and status != 503)
        print(
            f"restart: every page back and caught up {max(arrivals) - back:.1f} s after the new "
            f"process answered (p50 {percentile([a - back for a in arrivals], 0.5):.1f} s; "
            f"their streams answered after p50 {percentile(answered, 0.5):.1f} s, max "
            f"{max(answered):.1f} s); "
            f"stream answers {dict(sorted(statuses.items()))}, {server_errors} errors >= 500 "
            f"(503 excepted, it says when to come back); /healthz p50 "
            f"{percentile(health, 0.5):.0f} ms, p99 {percentile(health, 0.99):.0f} ms, "
            f"{health_errors} failed"
        )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=4000, help="open live pages")
    parser.add_argument("--burst", type=int, default=2000, help="pages one photo wakes")
    parser.add_argument("--singles", type=int, default=50, help="one-member matches timed")
    return parser.parse_args()


if __name__ == "__main__":
    with more_open_files():
        asyncio.run(main(arguments()))
