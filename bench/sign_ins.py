"""Reads while a crowd signs up: does hashing passwords stall the server?

    .venv/bin/python -m bench.sign_ins [--people 30]

A real `findme serve` with a fresh database. A signed-in attendee reads `/api/me` in a loop,
first on a quiet server, then while `--people` newcomers sign up at once and then sign in (each
a password hash of ~150 ms of CPU: argon2id, 64 MB). Prints the reader's latencies in both
phases and how long the crowd took.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import httpx

from bench.harness import PASSWORD, fresh_database, percentile, server, sign_up
from bench.lists import UNLIMITED

QUIET_S = 3.0


async def read_until(client: httpx.AsyncClient, done: asyncio.Event) -> list[float]:
    """Latencies (s) of `/api/me`, one request after the other, until `done` is set."""
    latencies = []
    while not done.is_set():
        started = time.perf_counter()
        (await client.get("/api/me")).raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


async def newcomer(client: httpx.AsyncClient) -> None:
    """Sign up, then sign in: two password hashes on the server."""
    body = {
        "email": f"guest-{uuid.uuid4().hex[:8]}@example.com",
        "password": PASSWORD,
        "name": "Guest",
    }
    (await client.post("/api/auth/register", json=body)).raise_for_status()
    (await client.post("/api/auth/login", json=body)).raise_for_status()


def describe(latencies: list[float]) -> str:
    return (
        f"{len(latencies)} reads, p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, longest {max(latencies) * 1000:.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=30)
    args = parser.parse_args()
    async with fresh_database() as url:
        # The limits per address and account are lifted: the whole crowd comes from this
        # machine, and the reader reads as fast as it is answered.
        limits = {"FINDME_RATE_SIGNUP_IP": f"{args.people * 10}/hour", **UNLIMITED}
        with server(url, **limits) as srv:
            reader = await sign_up(srv.url, "reader")
            done = asyncio.Event()
            reading = asyncio.create_task(read_until(reader, done))
            await asyncio.sleep(QUIET_S)
            done.set()
            quiet = await reading

            # Made beforehand: making a client costs this process ~20 ms (its TLS context),
            # which would stall the reader's own loop and be taken for the server's.
            crowd = [httpx.AsyncClient(base_url=srv.url, timeout=300) for _ in range(args.people)]
            done = asyncio.Event()
            reading = asyncio.create_task(read_until(reader, done))
            started = time.perf_counter()
            await asyncio.gather(*(newcomer(client) for client in crowd))
            crowd_s = time.perf_counter() - started
            done.set()
            busy = await reading
            for client in [reader, *crowd]:
                await client.aclose()
    print(f"quiet server: {describe(quiet)}")
    print(f"while {args.people} people sign up and sign in: {describe(busy)}")
    print(f"the crowd signed up and in within {crowd_s:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
