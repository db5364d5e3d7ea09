"""Worker coroutines over the durable jobs table.

A feeder claims due jobs (most urgent first) into an `asyncio.Queue`; N workers run them under
a timeout; a heartbeat renews the leases of every job this instance holds. Stopping stops the
claims, gives running jobs a grace period, and hands everything unfinished back to the queue.

A process killed outright (`kill -9`, the OOM killer, a crash) leaves its jobs running under
leases nobody renews. Each pipeline names itself `<host>:<pid>:<pid namespace>.<nonce>` in its
claim tokens, and when it starts, then every RECLAIM_INTERVAL_S, it ends at once the leases of
holders it can prove dead: same host, same pid namespace, and no such process any more. Holders
on other machines or in other containers cannot be proven dead from here; their jobs wait out
the lease (`FINDME_JOB_LEASE_S`, 60 s), which stays long so that a pause (a database failover, a
stalled machine) does not turn into the same job run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import socket
import statistics
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from findme import jobs
from findme.db import Database, JobKind
from findme.errors import FindMeError

logger = logging.getLogger(__name__)

Handler = Callable[[jobs.ClaimedJob], Awaitable[None]]
JobEnded = Callable[[jobs.ClaimedJob], Awaitable[None]]
JobObserver = Callable[[str, str, float], None]
ProgressCallback = Callable[[Counter[str], int], None]
TIMINGS_KEPT = 1000
RECLAIM_INTERVAL_S = 5.0
# Host names longer than this are shortened (with a hash): claim tokens must fit jobs.locked_by.
MAX_HOST_CHARS = 20


class Pipeline:
    def __init__(
        self,
        *,
        db: Database,
        handlers: Mapping[JobKind, Handler],
        workers: int,
        lease_s: float,
        timeout_s: float,
        grace_s: float,
        retry_base_s: float,
        housekeeping: Callable[[], Awaitable[None]] | None = None,
        housekeeping_interval_s: float = 3600.0,
        on_job_ended: JobEnded | None = None,
        poll_s: float = 1.0,
        reclaim_interval_s: float = RECLAIM_INTERVAL_S,
    ) -> None:
        self._db = db
        self._handlers = handlers
        self._workers = workers
        self._lease_s = lease_s
        self._timeout_s = timeout_s
        self._grace_s = grace_s
        self._poll_s = poll_s
        self._retry_base_s = retry_base_s
        self._housekeeping = housekeeping
        self._housekeeping_interval_s = housekeeping_interval_s
        self._reclaim_interval_s = reclaim_interval_s
        # Told of every job that ran here, done or failed: what it changed may be news.
        self._on_job_ended = on_job_ended
        self.instance = f"{process_name()}.{uuid.uuid4().hex[:4]}"
        self._queue: asyncio.Queue[jobs.ClaimedJob] = asyncio.Queue()
        self._held: dict[str, jobs.ClaimedJob] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._job_done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.active = 0
        # Called with (kind, outcome, seconds) after every job: metrics hook in here.
        self.job_observers: list[JobObserver] = []
        self.outcomes: Counter[str] = Counter()
        self.timings: dict[str, deque[float]] = {
            kind.value: deque(maxlen=TIMINGS_KEPT) for kind in JobKind
        }

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._stopping.is_set()

    def notify(self) -> None:
        """New jobs were written: claim now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._feed(), name="pipeline-feeder"),
            asyncio.create_task(self._heartbeat(), name="pipeline-heartbeat"),
            asyncio.create_task(self._housekeep(), name="pipeline-housekeeping"),
            *(
                asyncio.create_task(self._work(), name=f"pipeline-worker-{index}")
                for index in range(self._workers)
            ),
        ]
        logger.info(
            "pipeline started with %d workers",
            self._workers,
            extra={"action": "pipeline_start", "instance": self.instance},
        )

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish for the grace period, release the rest."""
        if not self._tasks:
            return
        self._stopping.set()
        self._wake.set()
        waiting: list[jobs.ClaimedJob] = []
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            self._held.pop(job.token, None)
        deadline = time.monotonic() + self._grace_s
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Taken before cancelling: a cancelled worker drops its job from `_held` on the way out.
        # A job that finishes meanwhile is not released: its token no longer matches.
        unfinished = waiting + list(self._held.values())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._held.clear()
        await jobs.release(self._db, unfinished)
        logger.info(
            "pipeline stopped; %d unfinished jobs returned to the queue",
            len(unfinished),
            extra={"action": "pipeline_stop", "instance": self.instance},
        )

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run_burst(self, on_progress: ProgressCallback | None = None) -> Counter[str]:
        """Work until no job is queued or running anywhere, then stop (tests, the CLI)."""
        await self.start()
        try:
            while True:
                pending = await jobs.pending_count(self._db)
                if on_progress is not None:
                    on_progress(self.outcomes, pending)
                if pending == 0:
                    break
                self._job_done.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._job_done.wait(), self._poll_s)
        finally:
            await self.stop()
        return self.outcomes

    async def _feed(self) -> None:
        next_reclaim = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_reclaim:
                next_reclaim = time.monotonic() + self._reclaim_interval_s
                await self._reclaim()
            free = self._workers - self._queue.qsize() - self.active
            claimed: list[jobs.ClaimedJob] = []
            if free > 0:
                try:
                    claimed = await jobs.claim(
                        self._db, token_prefix=self.instance, limit=free, lease_s=self._lease_s
                    )
                except Exception:
                    logger.exception("claiming jobs failed", extra={"action": "claim_error"})
            for job in claimed:
                self._held[job.token] = job
                self._queue.put_nowait(job)
            if len(claimed) < free or free <= 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def _reclaim(self) -> None:
        """End the leases of jobs held by processes of this host that are gone."""
        try:
            host_prefix = self.instance.split(":", 1)[0] + ":"
            dead = [
                token
                for token in await jobs.holders(self._db, prefix=host_prefix)
                if holder_is_dead(token)
            ]
            ended = await jobs.end_leases(self._db, dead)
        except Exception:
            logger.exception("reclaiming jobs failed", extra={"action": "reclaim_error"})
            return
        if ended:
            logger.warning(
                "took over %d jobs of processes that died: %s",
                ended,
                ", ".join(sorted({token.rsplit(":", 2)[0] for token in dead})),
                extra={"action": "jobs_reclaimed", "instance": self.instance},
            )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                await jobs.renew(self._db, list(self._held), lease_s=self._lease_s)
            except Exception:
                logger.exception("renewing leases failed", extra={"action": "heartbeat_error"})

    async def _housekeep(self) -> None:
        while self._housekeeping is not None:
            try:
                await self._housekeeping()
            except Exception:
                logger.exception("housekeeping failed", extra={"action": "housekeeping_error"})
            await asyncio.sleep(self._housekeeping_interval_s)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self.active += 1
            try:
                await self._run(job)
                if self._on_job_ended is not None:
                    await self._on_job_ended(job)
            finally:
                self.active -= 1
                self._held.pop(job.token, None)
                self._job_done.set()
                self._wake.set()

    async def _run(self, job: jobs.ClaimedJob) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._handlers[job.kind](job)
        except TimeoutError:
            await self._record_failure(job, f"timed out after {self._timeout_s:.0f} s", started)
        except asyncio.CancelledError:
            raise  # shutdown: the job is released, not failed
        except Exception as error:
            logger.warning(
                "job %d (%s) failed: %s",
                job.id,
                job.kind.value,
                error,
                exc_info=not isinstance(error, FindMeError),
                extra={"action": "job_error", "job_id": job.id},
            )
            await self._record_failure(job, _describe(error), started)
        else:
            # Shielded: a shutdown arriving now must not leave a finished job marked running.
            owned = await asyncio.shield(jobs.finish(self._db, job))
            elapsed = time.perf_counter() - started
            self._observe(job, "done" if owned else "lost_lease", elapsed)
            self.timings[job.kind.value].append(elapsed)
            logger.info(
                "job %d %s done in %.2f s",
                job.id,
                job.kind.value,
                elapsed,
                extra={"action": "job_done", "job_id": job.id, "duration_s": round(elapsed, 3)},
            )

    async def _record_failure(self, job: jobs.ClaimedJob, error: str, started: float) -> None:
        status = await asyncio.shield(
            jobs.fail(self._db, job, error, retry_base_s=self._retry_base_s)
        )
        self._observe(
            job, "failed" if status == "failed" else "retried", time.perf_counter() - started
        )
        logger.info(
            "job %d %s: %s after %.2f s",
            job.id,
            job.kind.value,
            "failed for good" if status == "failed" else "will retry",
            time.perf_counter() - started,
            extra={"action": "job_failed", "job_id": job.id},
        )

    def _observe(self, job: jobs.ClaimedJob, outcome: str, seconds: float) -> None:
        self.outcomes[outcome] += 1
        for observer in self.job_observers:
            observer(job.kind.value, outcome, seconds)

    def timing_stats(self) -> dict[str, dict[str, Any]]:
        summary: dict[str, dict[str, Any]] = {}
        for kind, values in self.timings.items():
            ordered = sorted(values)
            summary[kind] = {
                "count": len(ordered),
                "avg_s": round(statistics.fmean(ordered), 3) if ordered else None,
                "p50_s": round(ordered[len(ordered) // 2], 3) if ordered else None,
                "p95_s": round(ordered[int(len(ordered) * 0.95)], 3) if ordered else None,
            }
        return summary


def process_name() -> str:
    """`<host>:<pid>:<pid namespace>`: enough to tell later, from this host, that it is gone.

    The namespace tells containers apart that share a host name (`--network host`), whose
    pids are different processes; it is empty where it cannot be read, and then nothing is
    ever proven dead.
    """
    return f"{_host()}:{os.getpid()}:{_pid_namespace()}"


def holder_is_dead(token: str) -> bool:
    """Whether the process named by a claim token is provably gone: it ran on this host, in
    this pid namespace, and that pid is no process any more (or only a zombie)."""
    host, _, rest = token.partition(":")
    pid_text, _, rest = rest.partition(":")
    namespace = rest.partition(".")[0]
    here = _pid_namespace()
    if host != _host() or not here or namespace != here:
        return False
    if not pid_text.isascii() or not pid_text.isdigit() or int(pid_text) <= 0:
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    # Killed but not yet reaped by its parent: still listed, but it runs nothing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    state = stat.rpartition(b")")[2].split()[:1]
    return state not in ([b"Z"], [b"X"])


@functools.cache
def _host() -> str:
    name = socket.gethostname().replace(":", "_")
    if len(name) <= MAX_HOST_CHARS:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_HOST_CHARS - 9]}~{digest}"


@functools.cache
def _pid_namespace() -> str:
    try:
        inode = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return jobs.base36(inode)


def _describe(error: Exception) -> str:
    if isinstance(error, FindMeError):
        return error.detail
    return f"{type(error).__name__}: {error}"[:2000]
