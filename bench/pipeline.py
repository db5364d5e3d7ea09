"""Photos in, "my photos" out, timed through the real server against the engine's own limit.

    .venv/bin/python -m bench.pipeline [--photos 100] [--late-event-photos 1000]

1. Makes camera-like photos from the shared set (6000x4000, ~8 MB JPEGs, distinct bytes; cached
   in bench/.cache between runs).
2. The engine's limit: the same engine calls on the same files in a bare process-per-core pool,
   before and after the pipeline (their mean is the limit: a shared machine's speed drifts).
3. The pipeline: a real `findme serve` with default settings and a fresh PostgreSQL database,
   the six attendees signed up and joined; the photos are uploaded over HTTP (one per request,
   three at a time) and the run ends when every photo is processed. Prints photos/s, the ratio
   to the engine's limit, the time from the first upload's answer to the first match on an
   attendee's live my-photos page (its stream, open before the uploads: polling would load the
   server being measured) while the rest of the batch still pours in, how long a newcomer's
   selfie takes to be enrolled meanwhile, and the web process's CPU time per photo (which other
   work on a busy machine leaves as is).
4. A late joiner: an event of small photos is processed, then an attendee with a selfie joins;
   prints the time until their my-photos is complete, and checks no face detection reran
   (`--late-event-photos 0` leaves it out).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.harness import (
    CACHE,
    derived_photos,
    fresh_database,
    grainy,
    photographer,
    server,
    sign_in,
    sign_up,
)
from bench.uploads import cpu_growth, cpu_s, postgres_cpu_s
from findme.engines.local.pool import LocalRecognizer
from tests.shared_faces import faces_dir, manifest

CAMERA_SIZE = (6000, 4000)
# A newcomer enrols a selfie once this many photos of the batch have been answered.
NEWCOMER_AFTER_PHOTOS = 10


def camera_photos(count: int) -> list[Path]:
    """24 MP JPEGs of ~8 MB, like a camera's."""
    return derived_photos("camera", count, grainy(CAMERA_SIZE, 5), quality=95)


def small_photos(count: int) -> list[Path]:
    """Web-sized variants of the shared photos (crop, size and exposure vary) for a big event."""

    def vary(image: Image.Image, index: int) -> Image.Image:
        rng = np.random.default_rng(10_000 + index)
        width, height = image.size
        keep = rng.uniform(0.9, 1.0)
        left = int(rng.uniform(0, 1 - keep) * width)
        top = int(rng.uniform(0, 1 - keep) * height)
        image = image.crop((left, top, left + int(width * keep), top + int(height * keep)))
        image.thumbnail((int(rng.uniform(700, 1000)),) * 2)
        gain = rng.uniform(0.9, 1.1)
        return image.point([min(255, int(value * gain)) for value in range(256)] * 3)

    return derived_photos("small", count, vary, quality=88)


async def engine_limit(paths: list[Path], processes: int) -> float:
    """Photos per second of the bare engine: one process per core, no HTTP, no database."""
    async with LocalRecognizer(processes=processes, min_face_px=120) as engine:
        await engine.warm_up()
        started = time.perf_counter()
        semaphore = asyncio.Semaphore(processes * 2)

        async def one(path: Path) -> None:
            async with semaphore:
                await engine.analyse_photo(path.read_bytes())

        await asyncio.gather(*(one(path) for path in paths))
        return len(paths) / (time.perf_counter() - started)


async def upload_all(
    client,
    event_id: int,
    paths: list[Path],
    *,
    per_request: int,
    parallel: int,
    answered: list[tuple[float, list[int]]] | None = None,
):
    """Send the photos in order; `answered` collects when each request was answered, with the
    ids of the jobs it queued."""
    semaphore = asyncio.Semaphore(parallel)

    async def send(batch: list[Path]) -> None:
        async with semaphore:
            files = [("files", (path.name, path.read_bytes(), "image/jpeg")) for path in batch]
            response = await client.post(
                f"/api/photographer/events/{event_id}/upload-photos", files=files
            )
            response.raise_for_status()
            if answered is not None:
                results = response.json()["results"]
                answered.append((time.perf_counter(), [r["job_id"] for r in results]))

    batches = [paths[i : i + per_request] for i in range(0, len(paths), per_request)]
    await asyncio.gather(*(send(batch) for batch in batches))


async def wait_processed(client, event_id: int, total: int) -> None:
    while True:
        progress = (await client.get(f"/api/events/{event_id}/progress")).json()
        if progress["done"] + progress["failed"] >= total and progress["photos"] >= total:
            return
        await asyncio.sleep(0.2)


async def first_match_on_page(client, event_id: int, ready: asyncio.Event) -> float:
    """When the attendee's live my-photos stream (what their page listens to) first brings a
    photo of them; `ready` is set once the stream is open."""
    async with client.stream(
        "GET",
        "/api/my-photos/stream",
        params={"event_id": event_id},
        headers={"accept": "text/event-stream"},
    ) as response:
        response.raise_for_status()
        kind, is_match = "message", False
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("id:"):
                # A match's event carries its face_matches row id.
                is_match = True
            elif not line:
                if kind == "ready":
                    ready.set()
                elif is_match:
                    return time.perf_counter()
                kind, is_match = "message", False
    raise RuntimeError("the live stream ended before a match arrived")


async def my_photo_names(client, event_id: int) -> list[str]:
    names, cursor = [], None
    while True:
        params = {"event_id": event_id, "limit": 200} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/my-photos", params=params)).json()
        names += [item["filename"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return names


async def pipeline_run(paths: list[Path], database_url: str) -> dict[str, float]:
    selfies = manifest()["selfies"]
    with server(database_url) as srv:
        organiser = await sign_in(srv.url, photographer(srv))
        event = (await organiser.post("/api/events", json={"name": "Bench gala"})).json()
        attendees = {}
        for person, selfie in selfies.items():
            client = await sign_up(srv.url, person)
            response = await client.put(
                "/api/me/selfie",
                files={"file": (Path(selfie).name, (faces_dir() / selfie).read_bytes())},
                data={"consent": "true"},
            )
            response.raise_for_status()
            await client.post("/api/events/join", json={"code": event["code"]})
            attendees[person] = client
        await wait_processed(organiser, event["id"], 0)  # the joins' match jobs
        # Each attendee's live my-photos page, open before the first upload, as a phone has it.
        pages_ready = [asyncio.Event() for _ in attendees]
        pages = [
            asyncio.create_task(first_match_on_page(client, event["id"], ready))
            for client, ready in zip(attendees.values(), pages_ready, strict=True)
        ]
        await asyncio.gather(*(ready.wait() for ready in pages_ready))
        started = time.perf_counter()
        web_cpu = cpu_s(srv.process.pid)
        database_cpu = postgres_cpu_s()

        answered: list[tuple[float, list[int]]] = []
        upload = asyncio.create_task(
            upload_all(organiser, event["id"], paths, per_request=1, parallel=3, answered=answered)
        )
        newcomer: asyncio.Task[float] | None = None
        while not upload.done():
            if newcomer is None and len(answered) >= NEWCOMER_AFTER_PHOTOS:
                newcomer = asyncio.create_task(enrol_newcomer(srv.url))
            await asyncio.sleep(0.05)
        await upload
        uploaded_s = time.perf_counter() - started
        await wait_processed(organiser, event["id"], len(paths))
        seen = [page.result() for page in pages if page.done()]
        for page in pages:
            page.cancel()
        elapsed = time.perf_counter() - started
        web_cpu = cpu_s(srv.process.pid) - web_cpu
        database_cpu_s = cpu_growth(database_cpu, postgres_cpu_s())
        people_in = {Path(name).stem: info["people"] for name, info in manifest()["event"].items()}
        uploaded = [_base(path.name) for path in paths]
        wrong = 0
        for person, client in attendees.items():
            got = sorted(_base(name) for name in await my_photo_names(client, event["id"]))
            want = sorted(base for base in uploaded if person in people_in[base])
            if got != want:
                wrong += 1
                missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
                print(f"  {person}: missing {missing}, unexpected {extra}")
        progress = (await organiser.get(f"/api/events/{event['id']}/progress")).json()
        # The first answered photo's job, on the bench's clock: when it was claimed and done.
        first_job = (await organiser.get(f"/api/jobs/{answered[0][1][0]}")).json()
        on_bench_clock = time.perf_counter() - time.time()
        job_claimed_s, job_done_s = (
            dt.datetime.fromisoformat(first_job[field]).timestamp() + on_bench_clock - started
            for field in ("started_at", "finished_at")
        )
        return {
            "selfie_s": await newcomer if newcomer is not None else float("nan"),
            "photos_per_s": len(paths) / elapsed,
            "web_cpu_ms": web_cpu * 1000 / len(paths),
            "database_cpu_ms": database_cpu_s * 1000 / len(paths),
            "elapsed_s": elapsed,
            "uploaded_s": uploaded_s,
            "first_match_s": min(seen) - started if seen else float("nan"),
            "first_answer_s": answered[0][0] - started,
            "first_job_claimed_s": job_claimed_s,
            "first_job_done_s": job_done_s,
            "failed": progress["failed"],
            "attendees_wrong": wrong,
        }


async def enrol_newcomer(url: str) -> float:
    """Seconds a newcomer's selfie takes to be enrolled (its faces found and described)."""
    client = await sign_up(url, "newcomer")
    selfie = faces_dir() / manifest()["selfies"]["obama"]
    started = time.perf_counter()
    response = await client.put(
        "/api/me/selfie",
        files={"file": ("me.jpg", selfie.read_bytes())},
        data={"consent": "true"},
    )
    response.raise_for_status()
    return time.perf_counter() - started


def _base(filename: str) -> str:
    """`0017-e03.jpg` was made from e03."""
    return Path(filename).stem.split("-", 1)[1]


async def late_joiner(paths: list[Path], database_url: str) -> dict[str, float]:
    with server(database_url) as srv:
        organiser = await sign_in(srv.url, photographer(srv))
        event = (await organiser.post("/api/events", json={"name": "Big event"})).json()
        started = time.perf_counter()
        await upload_all(organiser, event["id"], paths, per_request=50, parallel=2)
        await wait_processed(organiser, event["id"], len(paths))
        built_s = time.perf_counter() - started
        progress = (await organiser.get(f"/api/events/{event['id']}/progress")).json()
        joiner = await sign_up(srv.url, "obama")
        selfie = manifest()["selfies"]["obama"]
        await joiner.put(
            "/api/me/selfie",
            files={"file": ("me.jpg", (faces_dir() / selfie).read_bytes())},
            data={"consent": "true"},
        )
        joined = time.perf_counter()
        await joiner.post("/api/events/join", json={"code": event["code"]})
        while True:
            now = (await organiser.get(f"/api/events/{event['id']}/progress")).json()
            if now["matches"] > progress["matches"] and now["queued"] == now["running"] == 0:
                break
            await asyncio.sleep(0.01)
        names = await my_photo_names(joiner, event["id"])
        complete_s = time.perf_counter() - joined
        after = (await organiser.get(f"/api/events/{event['id']}/progress")).json()
        return {
            "photos": len(paths),
            "faces": progress["faces"],
            "build_s": built_s,
            "late_joiner_s": complete_s,
            "matched_photos": len(names),
            "faces_detected_again": after["faces"] - progress["faces"],
            "photo_jobs_after_join": after["done"] - progress["done"],
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--late-event-photos", type=int, default=1000)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"Preparing {args.photos} camera photos (cached in {CACHE}) ...", flush=True)
    paths = camera_photos(args.photos)
    megabytes = sum(path.stat().st_size for path in paths) / 1e6
    print(f"{len(paths)} photos, {megabytes:.0f} MB, {cores} cores\n", flush=True)

    # Measured before and after the pipeline, which is compared with their mean: a shared
    # machine's speed drifts within minutes.
    before = await engine_limit(paths, cores)
    print(f"engine limit (bare pool of {cores} processes): {before:.2f} photos/s", flush=True)
    async with fresh_database() as url:
        run = await pipeline_run(paths, url)
    after = await engine_limit(paths, cores)
    limit = (before + after) / 2
    print(f"engine limit again after the pipeline: {after:.2f} photos/s (mean {limit:.2f})")
    print(
        f"pipeline (HTTP upload + workers): {run['photos_per_s']:.2f} photos/s, "
        f"{len(paths)} photos in {run['elapsed_s']:.1f} s "
        f"(uploads done at {run['uploaded_s']:.1f} s)"
    )
    print(f"pipeline / engine limit: {run['photos_per_s'] / limit:.0%}")
    print(
        f"first match: {run['first_match_s'] - run['first_answer_s']:.2f} s after the first "
        f"upload was answered ({run['first_match_s']:.2f} s after it was sent), "
        "on an attendee's live my-photos stream"
    )
    queued_s = run["first_job_claimed_s"] - run["first_answer_s"]
    ran_s = run["first_job_done_s"] - run["first_job_claimed_s"]
    print(
        f"  the first answered photo's job: claimed {queued_s:.2f} s after the answer, done "
        f"{ran_s:.2f} s later; its match seen {run['first_match_s'] - run['first_job_done_s']:.2f} "
        "s after that"
    )
    print(
        f"web process CPU: {run['web_cpu_ms']:.0f} ms per photo (receiving, storing, the "
        "jobs' database work, this bench's progress polling; not the engine)"
    )
    print(
        f"database CPU: {run['database_cpu_ms']:.0f} ms per photo (every PostgreSQL process "
        "on this machine: storing, the jobs' reads and writes, the bench's polling)"
    )
    print(
        f"a newcomer's selfie, enrolled after {NEWCOMER_AFTER_PHOTOS} photos of the batch were "
        f"answered: {run['selfie_s']:.2f} s (PUT /api/me/selfie)"
    )
    print(f"failed photos: {run['failed']:.0f}; wrong my-photos: {run['attendees_wrong']:.0f}\n")

    if not args.late_event_photos:
        return
    print(
        f"Preparing {args.late_event_photos} small photos for the late-joiner event ...", flush=True
    )
    small = small_photos(args.late_event_photos)
    async with fresh_database() as url:
        late = await late_joiner(small, url)
    print(
        f"late joiner: event of {late['photos']:.0f} photos / {late['faces']:.0f} faces "
        f"(built in {late['build_s']:.0f} s); my-photos complete "
        f"{late['late_joiner_s'] * 1000:.0f} ms "
        f"after joining, {late['matched_photos']:.0f} photos; faces detected again: "
        f"{late['faces_detected_again']:.0f}, photo jobs run: {late['photo_jobs_after_join']:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
