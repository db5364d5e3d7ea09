"""Upload speed against the disk's and the storage's limits, the server's memory while
uploading, and image bytes.

    .venv/bin/python -m bench.uploads [--photos 100]

100 photos (~250 MB, 3000x2000 JPEGs with distinct bytes, cached in bench/.cache) are sent to a
real `findme serve` (workers off: this measures the upload path alone) in one multipart request,
then to another event in 10 parallel requests. Two limits are timed in the same run: reading the
same bytes with `cat` into `sha256sum` (the disk), and writing them with a bare loop into the
same storage, a bytea insert per photo through asyncpg into the same PostgreSQL database, one
writer for the single request and ten for the ten, each after a CHECKPOINT. The server's
resident memory is sampled every 20 ms, and its CPU time read before and after (a cost that
other work on a busy machine leaves as is). Then the photos' jobs are run (`findme process
--burst`: the jobs make the thumbnails) and a 100-photo grid is loaded the way a browser does:
thumbnails, then a second visit with If-None-Match.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bench.harness import (
    Server,
    derived_photos,
    fresh_database,
    grainy,
    photographer,
    server,
    sign_in,
)

SIZE = (3000, 2000)


def upload_photos(count: int) -> list[Path]:
    """6 MP JPEGs of ~2.5 MB."""
    return derived_photos("upload", count, grainy(SIZE, 6), quality=95)


class PeakMemory:
    """Samples a process's resident memory in a thread; `growth_mb` is peak minus start."""

    def __init__(self, srv: Server) -> None:
        self._srv = srv
        self._stop = threading.Event()
        self.start_kb = srv.rss_kb()
        self.peak_kb = self.start_kb
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self._srv.rss_kb())
            time.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak_kb - self.start_kb) / 1024


def disk_limit(paths: list[Path]) -> float:
    started = time.perf_counter()
    subprocess.run(
        f"cat {' '.join(str(path) for path in paths)} | sha256sum",
        shell=True,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


async def storage_limit(
    database_url: str, paths: list[Path], writers: int, *, storage: str = "EXTERNAL"
) -> tuple[float, float]:
    """Seconds for a bare loop to insert the same bytes as bytea, one transaction per photo,
    `writers` connections at once: what the storage itself takes, with no app around it; and
    the CPU seconds the database's backends spent on it (nan when it runs on another machine).

    `storage` EXTERNAL is how FindMe stores photos (migration 0011); EXTENDED is PostgreSQL's
    default, which tries to compress every value first."""
    connections = [await asyncpg.connect(_dsn(database_url)) for _ in range(writers)]
    try:
        await connections[0].execute(
            "CREATE TABLE bare_bytes (id bigserial PRIMARY KEY, data bytea)"
        )
        await connections[0].execute(
            f"ALTER TABLE bare_bytes ALTER COLUMN data SET STORAGE {storage}"
        )
        await connections[0].execute("CHECKPOINT")  # earlier writes are not flushed on its time
        # The backends' CPU is read from /proc: only when the database runs on this machine.
        local = make_url(database_url).host in {None, "", "localhost", "127.0.0.1", "::1"}
        backends = [connection.get_server_pid() for connection in connections] if local else []
        waiting = list(paths)

        async def write(connection: asyncpg.Connection) -> None:
            while waiting:
                data = waiting.pop(0).read_bytes()
                await connection.execute("INSERT INTO bare_bytes (data) VALUES ($1)", data)

        cpu_before = sum(cpu_s(pid) for pid in backends)
        started = time.perf_counter()
        await asyncio.gather(*(write(connection) for connection in connections))
        elapsed = time.perf_counter() - started
        cpu = sum(cpu_s(pid) for pid in backends) - cpu_before
        await connections[0].execute("DROP TABLE bare_bytes")
    finally:
        for connection in connections:
            await connection.close()
    return elapsed, cpu if local else float("nan")


async def checkpoint(database_url: str) -> None:
    """Flush what earlier writes left in PostgreSQL's WAL, so a timed run does not pay for it."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


async def send(client, event_id: int, batch: list[Path]) -> None:
    with ExitStack() as files:
        parts = [
            ("files", (path.name, files.enter_context(path.open("rb")), "image/jpeg"))
            for path in batch
        ]
        response = await client.post(
            f"/api/photographer/events/{event_id}/upload-photos", files=parts
        )
    response.raise_for_status()
    statuses = {result["status"] for result in response.json()["results"]}
    assert statuses == {"created"}, statuses


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used: a cost that other work on a busy machine leaves as is."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> dict[int, float]:
    """CPU seconds of each PostgreSQL process on this machine (backends, WAL writer,
    checkpointer ...), by pid: the database's share of a run is the growth between two reads."""
    used: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as comm:
                if comm.read().strip() == "postgres":
                    used[int(entry.name)] = cpu_s(int(entry.name))
        except OSError:
            continue  # gone meanwhile
    return used


def cpu_growth(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two reads of `postgres_cpu_s` (by processes still there)."""
    return sum(used - before.get(pid, 0.0) for pid, used in after.items())


async def timed_upload(
    srv: Server, client, event_id: int, paths: list[Path], requests: int
) -> tuple[float, float, float]:
    """Seconds to the last response, peak RSS growth (MB), and server CPU seconds."""
    per_request = -(-len(paths) // requests)
    batches = [paths[i : i + per_request] for i in range(0, len(paths), per_request)]
    cpu_before = cpu_s(srv.process.pid)
    with PeakMemory(srv) as memory:
        started = time.perf_counter()
        await asyncio.gather(*(send(client, event_id, batch) for batch in batches))
        elapsed = time.perf_counter() - started
    return elapsed, memory.growth_mb, cpu_s(srv.process.pid) - cpu_before


async def grid(client, event_id: int) -> None:
    items = (
        await client.get("/api/all-photos", params={"event_id": event_id, "limit": 100})
    ).json()["items"]
    thumbs = [await client.get(item["thumb_url"]) for item in items]
    thumb_bytes = sum(len(response.content) for response in thumbs)
    originals = sum(
        item_size for item_size in [len((await client.get(i["image_url"])).content) for i in items]
    )
    again = [
        await client.get(item["thumb_url"], headers={"if-none-match": response.headers["etag"]})
        for item, response in zip(items, thumbs, strict=True)
    ]
    not_modified = sum(response.status_code == 304 for response in again)
    second_bytes = sum(len(response.content) for response in again)
    print(
        f"grid of {len(items)} photos: thumbnails {thumb_bytes / 1e6:.1f} MB vs originals "
        f"{originals / 1e6:.1f} MB ({thumb_bytes / originals:.1%})"
    )
    print(
        f"second visit: {not_modified}/{len(again)} answered 304 Not Modified, "
        f"{second_bytes} body bytes"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    args = parser.parse_args()
    paths = upload_photos(args.photos)
    total_mb = sum(path.stat().st_size for path in paths) / 1e6
    print(f"{len(paths)} photos, {total_mb:.0f} MB")
    disk_s = disk_limit(paths)
    print(f"cat | sha256sum (the disk's limit): {disk_s:.2f} s ({total_mb / disk_s:.0f} MB/s)")
    async with fresh_database() as url:
        with server(url, FINDME_RUN_WORKERS="false") as srv:
            client = await sign_in(srv.url, photographer(srv))
            events = {}
            default_s, default_cpu = await storage_limit(url, paths, writers=1, storage="EXTENDED")
            print(
                f"bytea inserts by a bare loop, 1 writer, PostgreSQL's default storage (EXTENDED, "
                f"compression tried): {default_s:.2f} s, database CPU "
                f"{default_cpu * 1000 / len(paths):.0f} ms per photo"
            )
            for requests in (1, 10):
                store_s, store_cpu = await storage_limit(url, paths, writers=requests)
                print(
                    f"bytea inserts by a bare loop, {requests} writer(s) (the storage's limit): "
                    f"{store_s:.2f} s ({total_mb / store_s:.0f} MB/s), database CPU "
                    f"{store_cpu * 1000 / len(paths):.0f} ms per photo"
                )
                created = await client.post("/api/events", json={"name": f"{requests} requests"})
                events[requests] = created.json()["id"]
                await checkpoint(url)
                elapsed, growth, cpu = await timed_upload(
                    srv, client, events[requests], paths, requests
                )
                print(
                    f"{requests:>2} request(s): last response after {elapsed:.2f} s "
                    f"({total_mb / elapsed:.0f} MB/s, {elapsed / disk_s:.1f}x the disk's limit); "
                    f"server RSS grew {growth:.0f} MB at peak; "
                    f"server CPU {cpu * 1000 / len(paths):.0f} ms per photo"
                )
                print(
                    f"uploads / storage limit: {store_s / elapsed:.0%} "
                    f"({requests} request{'s' if requests > 1 else ''})"
                )
            # The thumbnails are the jobs': run those of one event, then load its grid.
            await client.delete(f"/api/events/{events[1]}")
            srv.findme("process", "--burst")
            await grid(client, events[10])
            await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
