"""The durable queue and its workers, on real PostgreSQL, with handlers of our own making."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import subprocess
import sys

import pytest
from sqlalchemy import select, update

from findme import jobs
from findme.db import Database, Event, Face, FaceMatch, Job, JobKind, JobStatus, Photo, User, utcnow
from findme.engines.base import purge_expired_faces
from findme.pipeline import Pipeline
from findme.settings import Settings
from tests.conftest import with_settings


@pytest.fixture
async def db(settings):
    database = Database(settings)
    yield database
    await database.aclose()


async def seed_event(db: Database) -> tuple[int, int]:
    async with db.transaction() as session:
        user = User(email="o@example.com", name="O", password_hash="x", role="photographer")
        session.add(user)
        await session.flush()
        event = Event(name="E", code="ABCDEFGH", organiser_id=user.id)
        session.add(event)
        await session.flush()
        return event.id, user.id


async def add_photos(db: Database, event_id: int, count: int) -> list[int]:
    ids = []
    async with db.transaction() as session:
        for index in range(count):
            photo = Photo(
                event_id=event_id,
                filename=f"{index}.jpg",
                sha256=f"{index:064d}",
                content_type="image/jpeg",
                size_bytes=1,
                width=1,
                height=1,
            )
            session.add(photo)
            await session.flush()
            await jobs.enqueue_photo(session, photo_id=photo.id, event_id=event_id)
            ids.append(photo.id)
    return ids


def pipeline(db: Database, handler, **options) -> Pipeline:
    defaults = {"workers": 2, "lease_s": 30, "timeout_s": 30, "grace_s": 5, "retry_base_s": 0.01}
    return Pipeline(
        db=db,
        handlers={JobKind.process_photo: handler, JobKind.match_member: handler},
        **(defaults | options),
        poll_s=0.05,
    )


async def statuses(db: Database) -> dict[int, tuple[JobStatus, int]]:
    async with db.sessions() as session:
        rows = await session.execute(select(Job.id, Job.status, Job.attempts))
        return {row.id: (row.status, row.attempts) for row in rows}


async def test_a_newcomers_match_runs_before_a_mass_upload(db) -> None:
    event_id, user_id = await seed_event(db)
    await add_photos(db, event_id, 5)
    async with db.transaction() as session:
        member_job = await jobs.enqueue_member_match(session, event_id=event_id, user_id=user_id)
    claimed = await jobs.claim(db, token_prefix="t", limit=1, lease_s=30)
    assert [job.id for job in claimed] == [member_job.id]


async def test_a_job_whose_lease_expired_is_claimed_again_and_the_old_owner_is_fenced(db) -> None:
    event_id, _ = await seed_event(db)
    await add_photos(db, event_id, 1)
    (first,) = await jobs.claim(db, token_prefix="dead", limit=1, lease_s=30)
    assert await jobs.claim(db, token_prefix="other", limit=1, lease_s=30) == []
    async with db.transaction() as session:  # the first owner's process died long ago
        expired = utcnow() - dt.timedelta(seconds=1)
        await session.execute(update(Job).values(lease_expires_at=expired))
    (second,) = await jobs.claim(db, token_prefix="other", limit=1, lease_s=30)
    assert second.id == first.id and second.attempts == 2
    assert await jobs.finish(db, first) is False  # fenced: not the owner any more
    assert await jobs.fail(db, first, "late", retry_base_s=1) is None
    assert await jobs.finish(db, second) is True
    assert (await statuses(db))[first.id] == (JobStatus.done, 2)


async def test_the_heartbeat_keeps_a_long_job_leased(db) -> None:
    event_id, _ = await seed_event(db)
    await add_photos(db, event_id, 1)
    steal_attempts: list[int] = []

    async def slow(job) -> None:
        for _ in range(6):
            await asyncio.sleep(0.5)
            stolen = await jobs.claim(db, token_prefix="thief", limit=1, lease_s=30)
            steal_attempts.append(len(stolen))

    await pipeline(db, slow, lease_s=1.2).run_burst()
    assert steal_attempts == [0] * 6  # 3 s of work on a 1.2 s lease, never reclaimable
    assert {status for status, _ in (await statuses(db)).values()} == {JobStatus.done}


async def test_failures_retry_with_backoff_then_stay_failed(db) -> None:
    event_id, _ = await seed_event(db)
    await add_photos(db, event_id, 1)
    attempts: list[float] = []

    async def broken(job) -> None:
        attempts.append(asyncio.get_running_loop().time())
        raise RuntimeError("the engine fell over")

    outcomes = await pipeline(db, broken, retry_base_s=0.2).run_burst()
    assert (outcomes["retried"], outcomes["failed"]) == (2, 1)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # 0.2 s, then 0.4 s
    async with db.sessions() as session:
        job = (await session.scalars(select(Job))).one()
        photo = (await session.scalars(select(Photo))).one()
    assert job.status == JobStatus.failed and job.attempts == 3
    assert "RuntimeError: the engine fell over" in job.error
    assert [entry["attempt"] for entry in job.error_history] == [1, 2, 3]
    assert photo.status == "failed"


@pytest.mark.parametrize("max_attempts", [5, 1])
async def test_job_max_attempts_decides_how_often_a_job_is_tried(
    database_url, tmp_path, max_attempts
) -> None:
    settings = Settings.from_environ(
        {
            "FINDME_DATABASE_URL": database_url,
            "FINDME_DATA_DIR": str(tmp_path),
            "FINDME_JOB_MAX_ATTEMPTS": str(max_attempts),
        }
    )
    db = Database(settings)
    try:
        event_id, _ = await seed_event(db)
        await add_photos(db, event_id, 1)
        tries: list[int] = []

        async def broken(job) -> None:
            tries.append(job.attempts)
            raise RuntimeError("the engine fell over")

        outcomes = await pipeline(db, broken).run_burst()
        assert (outcomes["retried"], outcomes["failed"]) == (max_attempts - 1, 1)
        assert tries == list(range(1, max_attempts + 1))
        (job_id,) = (await statuses(db)).keys()
        assert (await statuses(db))[job_id] == (JobStatus.failed, max_attempts)
    finally:
        await db.aclose()
    # An admin's retry gives the attempts configured at the time of the retry.
    later = Database(with_settings(settings, job_max_attempts=max_attempts + 1))
    try:
        async with later.transaction() as session:
            assert await jobs.retry(session, job_id)
        async with later.sessions() as session:
            assert await session.scalar(select(Job.max_attempts)) == max_attempts + 1
    finally:
        await later.aclose()


async def test_a_job_over_its_time_limit_fails(db) -> None:
    event_id, _ = await seed_event(db)
    await add_photos(db, event_id, 1)

    async def stuck(job) -> None:
        await asyncio.sleep(60)

    outcomes = await pipeline(db, stuck, timeout_s=0.2, retry_base_s=0.01).run_burst()
    assert outcomes["failed"] == 1
    async with db.sessions() as session:
        assert "timed out" in (await session.scalars(select(Job.error))).one()


async def test_shutdown_returns_unfinished_jobs_without_counting_a_try(db) -> None:
    event_id, _ = await seed_event(db)
    await add_photos(db, event_id, 4)
    started = asyncio.Event()

    async def endless(job) -> None:
        started.set()
        await asyncio.sleep(60)

    workers = pipeline(db, endless, grace_s=0.2)
    await workers.start()
    await started.wait()
    await workers.stop()
    assert set((await statuses(db)).values()) == {(JobStatus.queued, 0)}
    done: list[int] = []

    async def quick(job) -> None:
        done.append(job.id)

    await pipeline(db, quick).run_burst()
    assert len(done) == 4


async def test_retention_purges_face_data_but_keeps_matches(db) -> None:
    event_id, user_id = await seed_event(db)
    (photo_id,) = await add_photos(db, event_id, 1)
    async with db.transaction() as session:
        face = Face(photo_id=photo_id, event_id=event_id, box=[0, 0, 1, 1], descriptor=bytes(512))
        session.add(face)
        await session.flush()
        session.add(
            FaceMatch(
                photo_id=photo_id, user_id=user_id, event_id=event_id, face_id=face.id, distance=0.3
            )
        )
    assert await purge_expired_faces(db, retention_days=365) == 0
    async with db.transaction() as session:
        await session.execute(update(Event).values(date=dt.date.today() - dt.timedelta(days=400)))
    assert await purge_expired_faces(db, retention_days=365) == 1
    async with db.sessions() as session:
        assert (await session.scalars(select(Face))).all() == []
        match = (await session.scalars(select(FaceMatch))).one()
    assert match.face_id is None


async def test_the_jobs_of_a_killed_process_on_this_host_are_taken_over_at_once(
    db, settings
) -> None:
    event_id, _ = await seed_event(db)
    await add_photos(db, event_id, 1)
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.job_holder", settings.database_url, str(settings.data_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = int(await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 60))
    finally:
        holder.kill()  # SIGKILL: no shutdown code runs, the job stays running under its lease
        holder.communicate()
    async with db.sessions() as session:
        dead = await session.get(Job, job_id)
    assert dead.status == JobStatus.running
    assert dead.locked_by.split(":")[1] == str(holder.pid)
    taken: list[jobs.ClaimedJob] = []

    async def record(job) -> None:
        taken.append(job)

    await pipeline(db, record, lease_s=60).run_burst()
    async with db.sessions() as session:
        done = await session.get(Job, job_id)
    assert [(job.id, job.attempts) for job in taken] == [(job_id, 2)]
    assert done.status == JobStatus.done
    # Taken over while the dead process's lease still had most of its minute to run.
    assert done.started_at < dead.lease_expires_at - dt.timedelta(seconds=30)


async def test_only_jobs_of_processes_proven_dead_are_taken_over(db) -> None:
    event_id, _ = await seed_event(db)
    await add_photos(db, event_id, 4)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    reclaimer = pipeline(db, None)
    host, pid, namespace_and_nonce = reclaimer.instance.split(":")
    namespace = namespace_and_nonce.split(".")[0]
    assert str(gone.pid) != pid
    holders = [
        reclaimer.instance,  # this very process: alive
        f"elsewhere-{host}:{gone.pid}:{namespace}.0000",  # another machine: cannot tell
        f"{host}:{gone.pid}:{namespace}0.0000",  # another container's pids: cannot tell
        f"{host}:{gone.pid}:{namespace}.0000",  # a process of this host that is gone
    ]
    claimed = [
        (await jobs.claim(db, token_prefix=holder, limit=1, lease_s=60))[0].id for holder in holders
    ]
    taken: list[jobs.ClaimedJob] = []

    async def record(job) -> None:
        taken.append(job)

    reclaimer = pipeline(db, record)
    await reclaimer.start()
    try:
        while not taken:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # more claim rounds (poll_s=0.05) take nothing else
    finally:
        await reclaimer.stop()
    assert [job.id for job in taken] == claimed[3:]
    states = await statuses(db)
    assert [states[job_id][0] for job_id in claimed[:3]] == [JobStatus.running] * 3


async def test_a_job_whose_worker_died_on_its_last_attempt_stays_failed(db) -> None:
    event_id, _ = await seed_event(db)
    (photo_id,) = await add_photos(db, event_id, 1)
    async with db.transaction() as session:  # its workers died holding it, every time
        await session.execute(
            update(Job).values(
                status=JobStatus.running,
                attempts=Job.max_attempts,
                locked_by="gone:1:x.0000:1:0",
                lease_expires_at=utcnow() - dt.timedelta(seconds=1),
            )
        )
    assert await jobs.claim(db, token_prefix="next", limit=1, lease_s=30) == []
    async with db.sessions() as session:
        job = await session.scalar(select(Job))
        photo = await session.get(Photo, photo_id)
    assert (job.status, job.locked_by) == (JobStatus.failed, None)
    assert "stopped" in job.error
    assert photo.status == "failed"
