"""List latency and throughput with wrk, cached and uncached, beside the framework's limit;
then the same reads during a storm of uploads being processed.

    .venv/bin/python -m bench.lists [--seconds 8]

An event of 1,000 processed photos (2,000 faces) and 200 members, each matched to 50 photos, is
written straight into a fresh PostgreSQL database (the list routes read exactly these rows);
then `findme serve` (default settings, read rate limit lifted) is measured with wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from PIL import Image

from bench.harness import (
    PASSWORD,
    ROOT,
    free_port,
    fresh_database,
    photographer,
    server,
    sign_in,
)
from bench.pipeline import small_photos, upload_all, wait_processed
from findme.auth import hash_password

PHOTOS = 1000
MEMBERS = 200
MATCHES_PER_MEMBER = 50
UNLIMITED = {"FINDME_RATE_API_READ": "100000000/minute"}


@dataclass
class WrkResult:
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    errors: int

    def row(self, label: str) -> str:
        return (
            f"{label:<34} p50 {self.p50_ms:7.2f} ms   p99 {self.p99_ms:7.2f} ms   "
            f"{self.requests_per_s:8.0f} req/s   errors {self.errors}"
        )


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> WrkResult:
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if not (p50 and p99 and rate):
        raise RuntimeError(f"wrk said:\n{output}")
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return WrkResult(_ms(p50.group(1)), _ms(p99.group(1)), float(rate.group(1)), errors)


def wrk_command(url: str, cookie: str, seconds: float) -> list[str]:
    return [
        "wrk",
        "-t1",
        "-c8",
        f"-d{int(seconds)}s",
        "--latency",
        "-H",
        f"Cookie: findme_session={cookie}",
        url,
    ]


def wrk(url: str, cookie: str, seconds: float) -> WrkResult:
    done = subprocess.run(wrk_command(url, cookie, seconds), capture_output=True, text=True)
    return parse_wrk(done.stdout)


async def seed(database_url: str, event_id: int) -> list[int]:
    """1,000 processed photos with faces, 200 members with 50 matches each."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    thumb = io.BytesIO()
    Image.new("RGB", (480, 320), "gray").save(thumb, "JPEG")
    rows = [
        (event_id, f"IMG_{i:04d}.jpg", hashlib.sha256(b"%d" % i).hexdigest(), thumb.getvalue())
        for i in range(PHOTOS)
    ]
    photo_ids = [
        record["id"]
        for record in await connection.fetch(
            """INSERT INTO photos (event_id, filename, sha256, content_type, size_bytes, width,
                   height, status, uploaded_at, processed_at, original, thumbnail)
               SELECT e, f, s, 'image/jpeg', length(t), 480, 320, 'done', now(), now(), t, t
               FROM unnest($1::int[], $2::text[], $3::text[], $4::bytea[]) AS r(e, f, s, t)
               RETURNING id""",
            *map(list, zip(*rows, strict=True)),
        )
    ]
    descriptor = bytes(512)
    await connection.executemany(
        "INSERT INTO faces (photo_id, event_id, box, descriptor) "
        "VALUES ($1, $2, '[0,0,10,10]', $3)",
        [(photo_id, event_id, descriptor) for photo_id in photo_ids for _ in range(2)],
    )
    password_hash = hash_password(PASSWORD)
    user_ids = [
        record["id"]
        for record in await connection.fetch(
            """INSERT INTO users (email, name, password_hash, role, created_at)
               SELECT 'member' || n || '@example.com', 'Member ' || n, $1, 'attendee', now()
               FROM generate_series(1, $2) AS n RETURNING id""",
            password_hash,
            MEMBERS,
        )
    ]
    await connection.executemany(
        "INSERT INTO event_members (event_id, user_id, joined_at) VALUES ($1, $2, now())",
        [(event_id, user_id) for user_id in user_ids],
    )
    chooser = random.Random(7)
    matches = [
        (photo_id, user_id, event_id)
        for user_id in user_ids
        for photo_id in chooser.sample(photo_ids, MATCHES_PER_MEMBER)
    ]
    await connection.executemany(
        """INSERT INTO face_matches (photo_id, user_id, event_id, distance, matched_at)
           VALUES ($1, $2, $3, 0.3, now())""",
        matches,
    )
    await connection.execute("ANALYZE")
    await connection.close()
    return user_ids


async def member_cookie(url: str) -> tuple[httpx.AsyncClient, str]:
    client = await sign_in(url, "member1@example.com")
    return client, client.cookies["findme_session"]


def bare_limit(body: bytes, seconds: float) -> WrkResult:
    body_file = Path("/tmp") / f"findme-bare-{os.getpid()}.json"
    body_file.write_bytes(body)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare:create_app",
            "--factory",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env={**os.environ, "BARE_BODY_FILE": str(body_file)},
        cwd=ROOT,
    )
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        return wrk(f"http://127.0.0.1:{port}/api/my-photos", "x", seconds)
    finally:
        process.terminate()
        process.wait()
        body_file.unlink()


async def measure(database_url: str, event_id: int, seconds: float, **settings: str) -> dict:
    with server(database_url, **UNLIMITED, **settings) as srv:
        client, cookie = await member_cookie(srv.url)
        results = {}
        for name in ("my-photos", "all-photos"):
            url = f"{srv.url}/api/{name}?event_id={event_id}&limit=50"
            response = await client.get(url)
            response.raise_for_status()
            results[name] = (wrk(url, cookie, seconds), response.content)
        await client.aclose()
        return results


async def storm(database_url: str, event_id: int, photos: int) -> WrkResult:
    """my-photos under wrk while photos are uploaded and processed by the same server."""
    with server(database_url, **UNLIMITED) as srv:
        client, cookie = await member_cookie(srv.url)
        organiser = await sign_in(srv.url, photographer(srv))
        storm_event = (await organiser.post("/api/events", json={"name": "Storm"})).json()
        url = f"{srv.url}/api/my-photos?event_id={event_id}&limit=50"
        reader = subprocess.Popen(
            wrk_command(url, cookie, 600), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started = time.perf_counter()
        paths = small_photos(photos)
        await upload_all(organiser, storm_event["id"], paths, per_request=10, parallel=2)
        await wait_processed(organiser, storm_event["id"], len(paths))
        elapsed = time.perf_counter() - started
        reader.send_signal(signal.SIGINT)
        output, _ = reader.communicate()
        print(f"storm: {photos} photos uploaded and processed in {elapsed:.1f} s during the reads")
        await client.aclose()
        await organiser.aclose()
        return parse_wrk(output)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--storm-photos", type=int, default=100)
    args = parser.parse_args()
    async with fresh_database() as database_url:
        with server(database_url, **UNLIMITED) as srv:
            organiser = await sign_in(srv.url, photographer(srv))
            event_id = (await organiser.post("/api/events", json={"name": "Lists"})).json()["id"]
            await organiser.aclose()
        await seed(database_url, event_id)
        print(
            f"event of {PHOTOS} photos, {MEMBERS} members, {MATCHES_PER_MEMBER} matches each; "
            f"wrk: 1 thread, 8 connections, {args.seconds:.0f} s per figure, 50 items a page\n"
        )
        cached = await measure(database_url, event_id, args.seconds)
        uncached = await measure(database_url, event_id, args.seconds, FINDME_CACHE_MY_PHOTOS_S="0")
        bare = bare_limit(cached["my-photos"][1], args.seconds)
        for name in ("my-photos", "all-photos"):
            print(cached[name][0].row(f"/api/{name} cached"))
            print(uncached[name][0].row(f"/api/{name} uncached"))
        print(bare.row("bare Starlette route, same bytes"))
        for name in ("my-photos", "all-photos"):
            ratio = cached[name][0].requests_per_s / bare.requests_per_s
            print(f"/api/{name} cached throughput / bare route: {ratio:.0%}")
        print()
        during = await storm(database_url, event_id, args.storm_photos)
        print(during.row("/api/my-photos during the storm"))


if __name__ == "__main__":
    asyncio.run(main())
