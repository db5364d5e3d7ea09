"""Rekognition calls for one event, counted: 50 members and 100 photos of two faces each.

    .venv/bin/python -m bench.aws_calls [--members 50] [--photos 100] [--workers 8]
                                        [--concurrency 10] [--call-ms 20]

The real pipeline (durable jobs, the Rekognition job handlers, a fresh PostgreSQL database) runs
against Rekognition faked by tests/fakes/rekognition.py's FakeRekognition: every request and
answer passes AioStubber, which checks it against the service model, and each call lasts
`--call-ms`. The members join before the photos arrive, as at a real event. Prints the calls per
kind and in total next to 1 + U + P + F and the old deployment's 960 for the same event, the peak
of calls in flight, then what a restart and a late joiner cost.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import time
from collections import Counter
from pathlib import Path

from PIL import Image
from sqlalchemy import update

from bench.harness import free_port, fresh_database
from findme import jobs
from findme.db import Event, EventMember, Job, JobStatus, Photo, Role, Selfie, User
from findme.migrations import migrate
from findme.services import AppState, build_pipeline, open_services
from findme.settings import Settings
from tests.fakes.rekognition import FakeRekognition, client_for, engine_with

# The v14 deployment's Rekognition calls for this event (issue 5): it re-created and re-indexed
# as its in-memory "already indexed" set raced and restarts forgot it.
OLD_DEPLOYMENT_CALLS = 960


def image(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (seed % 256, seed // 256 % 256, 77)).save(
        out, "JPEG", comment=f"bench image {seed}".encode()
    )
    return out.getvalue()


async def event_with_members(state: AppState, fake: FakeRekognition, members: int) -> int:
    async with state.db.transaction() as session:
        organiser = User(
            email="organiser@bench.test",
            name="Organiser",
            password_hash="-",
            role=Role.photographer,
        )
        session.add(organiser)
        await session.flush()
        event = Event(name="Bench gala", code="BENCHAWS", organiser_id=organiser.id)
        session.add(event)
        await session.flush()
        for index in range(members):
            user = User(
                email=f"member{index}@bench.test",
                name=f"Member {index}",
                password_hash="-",
                role=Role.attendee,
            )
            session.add(user)
            await session.flush()
            await enrol(session, user.id, fake.shows(image(10_000 + index), f"person{index}"))
            await join(session, event.id, user.id)
        return event.id


async def enrol(session, user_id: int, selfie: bytes) -> None:
    """A selfie as the selfie page stores it (its descriptor unused by the cloud engine)."""
    session.add(Selfie(user_id=user_id, image=selfie, descriptor=b"\x00" * 512))
    await session.flush()


async def join(session, event_id: int, user_id: int) -> None:
    session.add(EventMember(event_id=event_id, user_id=user_id))
    await session.flush()
    await jobs.enqueue_member_match(session, event_id=event_id, user_id=user_id)


async def add_photos(state: AppState, fake: FakeRekognition, event_id: int, args) -> None:
    async with state.db.transaction() as session:
        for index in range(args.photos):
            # Two members per photo, every member in about the same number of photos.
            people = [
                f"person{(2 * index) % args.members}",
                f"person{(2 * index + 1) % args.members}",
            ]
            data = fake.shows(image(index), *people)
            row = Photo(
                event_id=event_id,
                filename=f"{index:04d}.jpg",
                sha256=hashlib.sha256(data).hexdigest(),
                content_type="image/jpeg",
                size_bytes=len(data),
                width=320,
                height=240,
            )
            session.add(row)
            await state.storage.save(session, row, data)
            await session.flush()
            await jobs.enqueue_photo(session, photo_id=row.id, event_id=event_id)


def kinds(calls: list[tuple[str, dict]]) -> Counter[str]:
    return Counter(operation.title().replace("_", "") for operation, _ in calls)


async def main(args: argparse.Namespace) -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_EC2_METADATA_DISABLED="true",
        # Nobody listens here: a call the fake does not answer fails instead of reaching AWS.
        AWS_ENDPOINT_URL_REKOGNITION=f"http://127.0.0.1:{free_port()}",
    )
    async with fresh_database() as database_url:
        settings = Settings.from_environ(
            {
                "FINDME_DATABASE_URL": database_url,
                "FINDME_DATA_DIR": str(Path(__file__).resolve().parent / ".cache" / "aws"),
                "FINDME_RUN_WORKERS": "false",
                "FINDME_RECOGNIZER": "rekognition",
                "FINDME_ENGINE_PROCESSES": "1",
                "FINDME_WORKERS": str(args.workers),
                "FINDME_AWS_CONCURRENCY": str(args.concurrency),
            }
        )
        await asyncio.to_thread(migrate, settings)
        async with open_services(settings, run_workers=False) as state:
            fake = FakeRekognition(state.engine.client.aws, delay_s=args.call_ms / 1000)
            state.engine = engine_with(state, client_for(fake, settings))
            event_id = await event_with_members(state, fake, args.members)
            await add_photos(state, fake, event_id, args)

            started = time.perf_counter()
            outcomes = await build_pipeline(state).run_burst()
            elapsed = time.perf_counter() - started
            counted = kinds(fake.calls)
            faces = 2 * args.photos
            expected = 1 + args.members + args.photos + faces
            print(f"Event: {args.members} members, {args.photos} photos, {faces} faces")
            print(f"Jobs: {outcomes['done']} done, {outcomes['failed']} failed in {elapsed:.1f} s")
            for kind, count in sorted(counted.items()):
                print(f"  {kind:<18} {count:>5}")
            total = sum(counted.values())
            print(f"  {'total':<18} {total:>5}   (1 + U + P + F = {expected})")
            ratio = OLD_DEPLOYMENT_CALLS / total
            print(f"  {'old deployment':<18} {OLD_DEPLOYMENT_CALLS:>5}   ({ratio:.1f}x as many)")
            print(
                f"Peak calls in flight: {fake.peak} (limit {args.concurrency}, "
                f"{args.workers} workers, {args.call_ms} ms per call)"
            )

            # A restart: every job handed back to the queue as if the process had died.
            async with state.db.transaction() as session:
                await session.execute(
                    update(Job).values(status=JobStatus.queued, attempts=0, finished_at=None)
                )
            before = len(fake.calls)
            await build_pipeline(state).run_burst()
            print(f"After a restart that re-queues every job: {len(fake.calls) - before} calls")

            # A late joiner.
            before = len(fake.calls)
            async with state.db.transaction() as session:
                late = User(
                    email="late@bench.test", name="Late", password_hash="-", role=Role.attendee
                )
                session.add(late)
                await session.flush()
                await enrol(session, late.id, fake.shows(image(99_999), "person0"))
                await join(session, event_id, late.id)
            await build_pipeline(state).run_burst()
            late_calls = kinds(fake.calls[before:])
            print(f"A late joiner: {dict(late_calls)}")
            fake.close()
            if total != expected:
                raise SystemExit(f"expected {expected} calls, made {total}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--call-ms", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
