"""How long a job waits after its worker process is killed outright (`kill -9`).

    .venv/bin/python -m bench.recovery [--rounds 5]

Each round, a real worker process (a Pipeline whose handler holds the job forever) claims a job
under the default 60 s lease and is killed with SIGKILL. The time from the kill to another
pipeline's handler starting the same job is measured in two cases:

- survivor: a pipeline of another process on the same host, already running (it looks for
  dead holders every RECLAIM_INTERVAL_S);
- restart: a pipeline that starts right after the kill (what a supervisor's restart does,
  less the interpreter's start-up).

Before holders were proven dead, both waited out the rest of the lease: up to 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

from bench.harness import fresh_database
from findme import jobs
from findme.db import Database, Event, JobKind, Photo, User
from findme.migrations import migrate
from findme.pipeline import RECLAIM_INTERVAL_S, Pipeline
from findme.settings import Settings

LEASE_S = 60


async def add_job(db: Database, index: int) -> int:
    async with db.transaction() as session:
        user = User(email=f"o{index}@example.com", name="O", password_hash="x", role="photographer")
        session.add(user)
        await session.flush()
        event = Event(name="E", code=f"CODE{index:04d}", organiser_id=user.id)
        session.add(event)
        await session.flush()
        photo = Photo(
            event_id=event.id,
            filename="a.jpg",
            sha256=f"{index:064d}",
            content_type="image/jpeg",
            size_bytes=1,
            width=1,
            height=1,
        )
        session.add(photo)
        await session.flush()
        job = await jobs.enqueue_photo(session, photo_id=photo.id, event_id=event.id)
        return job.id


def pipeline(db: Database, handler: Callable[[jobs.ClaimedJob], Awaitable[None]]) -> Pipeline:
    return Pipeline(
        db=db,
        handlers={kind: handler for kind in JobKind},
        workers=1,
        lease_s=LEASE_S,
        timeout_s=600,
        grace_s=1,
        retry_base_s=1,
    )


async def one_round(db: Database, settings: Settings, index: int, *, survivor: bool) -> float:
    """Seconds from SIGKILL to the job's next start elsewhere."""
    job_id = await add_job(db, index)
    taken = asyncio.Event()
    taken_at = 0.0

    async def record(job: jobs.ClaimedJob) -> None:
        nonlocal taken_at
        if job.id == job_id:
            taken_at = time.monotonic()
            taken.set()

    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.job_holder", settings.database_url, str(settings.data_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    held = int(await asyncio.to_thread(holder.stdout.readline))
    assert held == job_id, (held, job_id)
    other = pipeline(db, record)
    if survivor:
        await other.start()
        # Started before the kill, so its next look is anywhere in the coming interval.
        await asyncio.sleep(RECLAIM_INTERVAL_S * (index % 5) / 5)
    holder.kill()
    killed_at = time.monotonic()
    await asyncio.to_thread(holder.wait)
    if not survivor:
        await other.start()
    try:
        await asyncio.wait_for(taken.wait(), LEASE_S * 2)
    finally:
        await other.stop()
    return taken_at - killed_at


async def main(args: argparse.Namespace) -> None:
    async with fresh_database() as database_url:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings.from_environ(
                {"FINDME_DATABASE_URL": database_url, "FINDME_DATA_DIR": data_dir}
            )
            await asyncio.to_thread(migrate, settings)
            db = Database(settings)
            try:
                index = 0
                for survivor in (True, False):
                    figures = []
                    for _ in range(args.rounds):
                        index += 1
                        figures.append(await one_round(db, settings, index, survivor=survivor))
                    name = "survivor" if survivor else "restart"
                    print(
                        f"{name:<9} kill -9 -> job started again: median "
                        f"{statistics.median(figures):.2f} s, max {max(figures):.2f} s "
                        f"over {len(figures)} rounds (lease {LEASE_S} s, "
                        f"look every {RECLAIM_INTERVAL_S:.0f} s)"
                    )
            finally:
                await db.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
