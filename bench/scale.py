"""The list pages and a late joiner as an event grows from 1,000 to 10,000 photos.

    .venv/bin/python -m bench.scale [--seconds 5]

An event of 1,000 members and 1,000 processed photos (two faces each) is written straight into a
fresh PostgreSQL database, then grown to 10,000 photos. The rows are what the pipeline would
have left: every member has a selfie descriptor, every face a descriptor, and the stored matches
are exactly what the matching rule gives for them (a member's face is their selfie's descriptor
moved 0.2-0.4 away; strangers are random unit vectors, ~1.4 from everyone), so a member who
joins changes nobody else's photos. At each size:

- wrk (as bench/lists.py, my-photos cache off so every request queries; after 5 s of warm-up
  not counted) on the first page and a deep page (by cursor, the last full one) of
  `/api/my-photos` and `/api/all-photos` as a member who is in every tenth photo, and of
  `/api/all-photos` as the organiser; the first page of both as a member in few photos (about
  20 of the 10,000);
- two late joiners, one after the other: accounts with a real selfie from ../shared/faces
  (analysed by the server) whose faces are in 50 of the photos each join; the time from the
  join request until `/api/me/status` says done and `/api/my-photos` lists exactly those 50,
  and the job's own timestamps. The first is the first join since the server started: its job
  reads the event's faces into the worker's face index; the second finds them there, as every
  join of a running event does.

Then EXPLAIN (ANALYZE, BUFFERS) of the statements the app runs for these lists and for the late
joiner (their job, run again in this process, and their status), captured from the domain and
engine functions themselves: the database's time of each at both sizes, the plans at 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import numpy as np
from PIL import Image
from sqlalchemy import event

from bench.harness import PASSWORD, fresh_database, photographer, server, sign_in, sign_up
from bench.lists import UNLIMITED, WrkResult, wrk
from bench.pipeline import my_photo_names
from findme.auth import Principal, hash_password
from findme.db import JobKind, User
from findme.domain import photos
from findme.domain.access import gallery_member
from findme.domain.events import my_matching
from findme.engines.local.faces import DESCRIPTOR_BYTES
from findme.jobs import ClaimedJob, claim
from findme.services import open_services
from findme.settings import Settings
from tests.shared_faces import faces_dir, manifest

SIZES = (1_000, 10_000)
MEMBERS = 1_000
FACES_PER_PHOTO = 2
# The member whose lists are read is in every tenth photo.
MEASURED_EVERY = 10
# Of the other faces, this share are members (each a random one), the rest strangers.
MEMBER_SHARE = 0.75
JOINER_PHOTOS = 50
# Two late joiners per size (the first after a restart, then the next), each a different
# person of the shared set.
JOINERS = (("obama", "alex_lacamoire"), ("biden", "kit_harington"))
PAGE = 50
# The deep page is the last full one: this many of the list lie after its cursor.
DEEP_REMAINDER = 60
WARM_UP_S = 5
POLL_S = 0.02
JOB_RUNS = 7
# One secret for every server of the run: the joiners' sessions outlive a restart.
SETTINGS = {
    **UNLIMITED,
    "FINDME_CACHE_MY_PHOTOS_S": "0",
    "FINDME_SECRET_KEY": "bench-scale-secret-kept-for-the-run",
}
STRANGER = -1
# A late joiner is -2 - their index among the size's joiners.
FIRST_JOINER = -2


@dataclass
class Crowd:
    """What is seeded, and what the measurements need of it."""

    event_id: int
    organiser_id: int
    member_ids: list[int]
    selfies: np.ndarray
    # photo index → photo id, and the photos the measured member is in, in id order
    photo_ids: list[int] = field(default_factory=list)
    measured_photo_ids: list[int] = field(default_factory=list)


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.normal(size=(count, DESCRIPTOR_BYTES // 4))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def moved(rng: np.random.Generator, descriptors: np.ndarray) -> np.ndarray:
    """Each descriptor moved 0.2-0.4 in a random direction: the same person, another photo."""
    distances = rng.uniform(0.2, 0.4, size=(len(descriptors), 1))
    return descriptors + unit_vectors(rng, len(descriptors)) * distances


def as_bytes(descriptors: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in descriptors.astype("<f4")]


async def insert(
    connection: asyncpg.Connection, table: str, columns: dict[str, tuple[str, list[Any]]]
) -> list[int]:
    """One INSERT of many rows from arrays; the new ids (tables with an `id`)."""
    names = ", ".join(columns)
    arrays = ", ".join(f"${n}::{kind}[]" for n, (kind, _) in enumerate(columns.values(), 1))
    returning = " RETURNING id" if table != "event_members" else ""
    rows = await connection.fetch(
        f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}){returning}",
        *(values for _, values in columns.values()),
    )
    return [row["id"] for row in rows]


def _tiny_jpeg() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (48, 32), "gray").save(image, "JPEG")
    return image.getvalue()


async def seed_members(
    connection: asyncpg.Connection, *, event_id: int, organiser_id: int
) -> Crowd:
    """1,000 attendees with a selfie descriptor each, members of the event, matched once."""
    now = dt.datetime.now(dt.UTC)
    count = MEMBERS
    user_ids = await insert(
        connection,
        "users",
        {
            "email": ("text", [f"member{n}@scale.example" for n in range(1, count + 1)]),
            "name": ("text", [f"Member {n}" for n in range(1, count + 1)]),
            "password_hash": ("text", [await hash_password(PASSWORD)] * count),
            "role": ("text", ["attendee"] * count),
            "created_at": ("timestamptz", [now] * count),
            "consent_at": ("timestamptz", [now] * count),
            "selfie_updated_at": ("timestamptz", [now] * count),
        },
    )
    selfies = unit_vectors(np.random.default_rng(0), count)
    await insert(
        connection,
        "selfies",
        {
            "user_id": ("int", user_ids),
            "descriptor": ("bytea", as_bytes(selfies)),
            "created_at": ("timestamptz", [now] * count),
        },
    )
    await insert(
        connection,
        "event_members",
        {
            "event_id": ("int", [event_id] * count),
            "user_id": ("int", user_ids),
            "joined_at": ("timestamptz", [now] * count),
        },
    )
    await insert_done_jobs(connection, JobKind.match_member, event_id, users=user_ids)
    return Crowd(event_id, organiser_id, user_ids, selfies)


async def insert_done_jobs(
    connection: asyncpg.Connection,
    kind: JobKind,
    event_id: int,
    *,
    photos: list[int] | None = None,
    users: list[int] | None = None,
) -> None:
    """The finished jobs that made these rows: the queue's table is as big as it would be."""
    count = len(photos or users or [])
    now = dt.datetime.now(dt.UTC)
    await insert(
        connection,
        "jobs",
        {
            "kind": ("text", [kind.value] * count),
            "status": ("text", ["done"] * count),
            "priority": ("int", [0 if kind is JobKind.match_member else 10] * count),
            "payload": ("json", ["{}"] * count),
            "photo_id": ("int", photos or [None] * count),
            "event_id": ("int", [event_id] * count),
            "user_id": ("int", users or [None] * count),
            "attempts": ("int", [1] * count),
            "max_attempts": ("int", [3] * count),
            "run_after": ("timestamptz", [now] * count),
            "error_history": ("json", ["[]"] * count),
            "created_at": ("timestamptz", [now] * count),
            "started_at": ("timestamptz", [now] * count),
            "finished_at": ("timestamptz", [now] * count),
        },
    )


async def seed_photos(
    connection: asyncpg.Connection,
    crowd: Crowd,
    *,
    start: int,
    stop: int,
    joiners: list[np.ndarray],
) -> list[list[str]]:
    """Processed photos `start`…`stop - 1` of the event with their faces and matches; each
    joiner's face is in 50 of them. Returns the filenames each joiner should see."""
    rng = np.random.default_rng(start)
    count = stop - start
    now = dt.datetime.now(dt.UTC)
    thumb = _tiny_jpeg()
    names = [f"IMG_{i:05d}.jpg" for i in range(start, stop)]
    photo_ids = await insert(
        connection,
        "photos",
        {
            "event_id": ("int", [crowd.event_id] * count),
            "uploader_id": ("int", [crowd.organiser_id] * count),
            "filename": ("text", names),
            "sha256": ("text", [f"{i:064x}" for i in range(start, stop)]),
            "content_type": ("text", ["image/jpeg"] * count),
            "size_bytes": ("bigint", [len(thumb)] * count),
            "width": ("int", [48] * count),
            "height": ("int", [32] * count),
            "status": ("text", ["done"] * count),
            "uploaded_at": ("timestamptz", [now] * count),
            "processed_at": ("timestamptz", [now] * count),
            "original": ("bytea", [thumb] * count),
            "thumbnail": ("bytea", [thumb] * count),
        },
    )
    crowd.photo_ids += photo_ids
    # Who each face is: a member (their index), a stranger or the late joiner.
    who = np.where(
        rng.random((count, FACES_PER_PHOTO)) < MEMBER_SHARE,
        rng.integers(0, MEMBERS, (count, FACES_PER_PHOTO)),
        STRANGER,
    )
    who[(np.arange(start, stop) % MEASURED_EVERY) == 0, 0] = 0
    who[who[:, 1] == who[:, 0], 1] = STRANGER  # nobody twice in one photo
    joiner_rows = rng.choice(count, (len(joiners), JOINER_PHOTOS), replace=False)
    for index, rows in enumerate(joiner_rows):
        who[rows, 1] = FIRST_JOINER - index
    flat = who.ravel()
    descriptors = unit_vectors(rng, len(flat))
    is_member = flat >= 0
    descriptors[is_member] = moved(rng, crowd.selfies[flat[is_member]])
    for index, joiner in enumerate(joiners):
        descriptors[flat == FIRST_JOINER - index] = moved(
            rng, np.repeat(joiner[None, :], JOINER_PHOTOS, axis=0)
        )
    face_photo_ids = np.repeat(photo_ids, FACES_PER_PHOTO).tolist()
    face_ids = await insert(
        connection,
        "faces",
        {
            "photo_id": ("int", face_photo_ids),
            "event_id": ("int", [crowd.event_id] * len(flat)),
            "box": ("json", ["[0, 0, 10, 10]"] * len(flat)),
            "descriptor": ("bytea", as_bytes(descriptors)),
        },
    )
    matched = np.flatnonzero(is_member)
    selfies = crowd.selfies[flat[matched]]
    distances = np.linalg.norm(descriptors[matched] - selfies, axis=1)
    await insert(
        connection,
        "face_matches",
        {
            "photo_id": ("int", [face_photo_ids[i] for i in matched]),
            "user_id": ("int", [crowd.member_ids[flat[i]] for i in matched]),
            "event_id": ("int", [crowd.event_id] * len(matched)),
            "face_id": ("int", [face_ids[i] for i in matched]),
            "distance": ("float8", distances.tolist()),
            "matched_at": ("timestamptz", [now] * len(matched)),
        },
    )
    crowd.measured_photo_ids += [photo_ids[row] for row in np.flatnonzero(who[:, 0] == 0)]
    await insert_done_jobs(connection, JobKind.process_photo, crowd.event_id, photos=photo_ids)
    await connection.execute("ANALYZE")
    return [sorted(names[row] for row in rows) for rows in joiner_rows]


@dataclass(frozen=True)
class Joiner:
    client: httpx.AsyncClient
    user_id: int
    descriptor: np.ndarray


async def enrol_joiners(url: str, connection: asyncpg.Connection) -> list[list[Joiner]]:
    """Accounts with a real selfie each, analysed by the server; not members of the event.
    Grouped as `JOINERS` is: by size."""
    return [[await enrol_joiner(url, connection, person) for person in size] for size in JOINERS]


async def enrol_joiner(url: str, connection: asyncpg.Connection, person: str) -> Joiner:
    client = await sign_up(url, person)
    selfie = (faces_dir() / manifest()["selfies"][person]).read_bytes()
    response = await client.put(
        "/api/me/selfie", files={"file": ("me.jpg", selfie)}, data={"consent": "true"}
    )
    response.raise_for_status()
    user_id = (await client.get("/api/me")).json()["user"]["id"]
    stored = await connection.fetchval("SELECT descriptor FROM selfies WHERE user_id = $1", user_id)
    return Joiner(client, user_id, np.frombuffer(stored, "<f4").astype(np.float64))


@dataclass(frozen=True)
class Page:
    """One list page measured: which list, read by whom, first page or the last full one."""

    label: str
    path: str
    # "member" (in every tenth photo), "few" (a member in few photos) or "organiser"
    whose: str
    deep: bool = False

    def cursor(self, crowd: Crowd) -> int:
        if not self.deep:
            return 0
        listed = crowd.photo_ids if self.whose == "organiser" else crowd.measured_photo_ids
        return listed[-DEEP_REMAINDER - 1]

    def url(self, base: str, crowd: Crowd) -> str:
        query = f"event_id={crowd.event_id}&limit={PAGE}&cursor={self.cursor(crowd)}"
        return f"{base}/api/{self.path}?{query}"


PAGES = (
    Page("my-photos first page", "my-photos", "member"),
    Page("my-photos deep page", "my-photos", "member", deep=True),
    Page("all-photos first page", "all-photos", "member"),
    Page("all-photos deep page", "all-photos", "member", deep=True),
    Page("my-photos, member in few photos", "my-photos", "few"),
    Page("all-photos, member in few photos", "all-photos", "few"),
    Page("all-photos organiser first page", "all-photos", "organiser"),
    Page("all-photos organiser deep page", "all-photos", "organiser", deep=True),
)


async def measure_lists(url: str, crowd: Crowd, organiser: str, seconds: float) -> None:
    clients = {
        "member": await sign_in(url, "member1@scale.example"),
        "few": await sign_in(url, "member2@scale.example"),
        "organiser": await sign_in(url, organiser),
    }
    # Not counted: the server warms its face engine up as it starts, and the caches fill.
    warm_up = PAGES[0].url(url, crowd)
    wrk(warm_up, clients[PAGES[0].whose].cookies["findme_session"], WARM_UP_S)
    for page in PAGES:
        client = clients[page.whose]
        response = await client.get(page.url(url, crowd))
        response.raise_for_status()
        assert page.whose == "few" or len(response.json()["items"]) == PAGE, page.label
        result: WrkResult = wrk(page.url(url, crowd), client.cookies["findme_session"], seconds)
        print(result.row(page.label), flush=True)
    for client in clients.values():
        await client.aclose()


async def late_joiner(
    joiner: Joiner,
    code: str,
    expected: list[str],
    connection: asyncpg.Connection,
    *,
    label: str,
) -> None:
    """Join, then follow /api/me/status until done and read my-photos: the time it all took."""
    started = time.perf_counter()
    response = await joiner.client.post("/api/events/join", json={"code": code})
    response.raise_for_status()
    event_id = response.json()["event"]["id"]
    while True:
        status = (await joiner.client.get("/api/me/status")).json()
        mine = next(item for item in status["events"] if item["event_id"] == event_id)
        if mine["matching"] in {"done", "failed"} and mine["photos_pending"] == 0:
            break
        # As a script would poll, but often: a tighter loop would take the event loop the
        # job runs on (the workers share the server's process).
        await asyncio.sleep(POLL_S)
    names = await my_photo_names(joiner.client, event_id)
    complete_ms = (time.perf_counter() - started) * 1000
    job = await connection.fetchrow(
        "SELECT status, created_at, started_at, finished_at FROM jobs "
        "WHERE kind = 'match_member' AND user_id = $1 ORDER BY id DESC LIMIT 1",
        joiner.user_id,
    )
    print(f"{label} complete: {complete_ms:.0f} ms", flush=True)
    waited = (job["started_at"] - job["created_at"]).total_seconds() * 1000
    ran = (job["finished_at"] - job["started_at"]).total_seconds() * 1000
    print(f"{label} job queued → started: {waited:.0f} ms", flush=True)
    print(f"{label} job started → done: {ran:.0f} ms", flush=True)
    print(f"{label} job queued → done: {waited + ran:.0f} ms", flush=True)
    print(
        f"{label} photos: {len(names)} listed, {len(set(names) & set(expected))} of "
        f"{len(expected)} expected, job {job['status']}",
        flush=True,
    )


@contextlib.contextmanager
def captured_selects(
    sync_engine: Any, into: list[tuple[str, str, Any]]
) -> Iterator[list[str | None]]:
    """Record the SELECTs the engine sends while the block runs, under the label it sets."""
    label: list[str | None] = [None]

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if label[0] and statement.lstrip().upper().startswith("SELECT"):
            into.append((label[0], statement, parameters))

    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield label
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)


async def explain(database_url: str, crowd: Crowd, joiner: Joiner, *, plans: bool) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of what the app runs for the lists and the late joiner: the
    database's time of each statement, and their plans if asked."""
    settings = Settings.from_environ(
        {"FINDME_DATABASE_URL": database_url, "FINDME_DATA_DIR": tempfile.mkdtemp()}
    )
    statements: list[tuple[str, str, Any]] = []
    async with open_services(settings, run_workers=False) as state:
        # The joiner's job alone, run again here (it changes nothing the second time): its
        # own cost, apart from the server's, the queue's and the HTTP requests'.
        match_member = state.engine.handlers()[JobKind.match_member]
        job = ClaimedJob(
            0, JobKind.match_member, "bench", 1, 1, None, crowd.event_id, joiner.user_id
        )
        runs_ms = []
        for _ in range(JOB_RUNS):
            started = time.perf_counter()
            await match_member(job)
            runs_ms.append((time.perf_counter() - started) * 1000)
        print(
            f"late joiner job run again in the bench process ({JOB_RUNS} runs): "
            f"min {min(runs_ms):.0f} ms, median {sorted(runs_ms)[JOB_RUNS // 2]:.0f} ms",
            flush=True,
        )
        with captured_selects(state.db.engine.sync_engine, statements) as label:
            async with state.db.sessions() as session:
                readers = {
                    "member": await session.get(User, crowd.member_ids[0]),
                    "few": await session.get(User, crowd.member_ids[1]),
                    "organiser": await session.get(User, crowd.organiser_id),
                }
            for page in PAGES:
                label[0] = page.label
                reader = readers[page.whose]
                assert reader is not None
                window = {"event_id": crowd.event_id, "cursor": page.cursor(crowd)}
                async with state.db.sessions() as session:
                    if page.path == "my-photos":
                        await photos.my_photo_items(
                            session, user_id=reader.id, **window, limit=PAGE + 1
                        )
                    else:
                        # As the route runs it: whose gallery it is, then that page.
                        member_id = await gallery_member(state, Principal(reader), crowd.event_id)
                        await photos.event_gallery_items(
                            session, member_id=member_id, **window, limit=PAGE + 1
                        )
            label[0] = "late joiner: the workers' claim"
            await claim(state.db, token_prefix="bench", limit=3, lease_s=60)
            label[0] = "late joiner: match_member (run again: changes nothing)"
            await match_member(job)
            label[0] = "late joiner: /api/me/status"
            async with state.db.sessions() as session:
                await my_matching(session, joiner.user_id)
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    executions = []
    for name, statement, parameters in statements:
        plan = await connection.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *(parameters or ())
        )
        executions.append((name, plan[-1][0].removeprefix("Execution Time: ")))
        if plans:
            shown = ", ".join(_short(value) for value in parameters or ())
            print(f"\n-- {name}\n{statement}\n-- parameters: {shown}")
            print("\n".join(row[0] for row in plan), flush=True)
    await connection.close()
    print("\ndatabase time of each statement (EXPLAIN ANALYZE, in order):")
    for name, execution in executions:
        print(f"  {name}: {execution}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    print(
        f"{MEMBERS} members; photos of {FACES_PER_PHOTO} faces; wrk: 1 thread, 8 connections, "
        f"{args.seconds:.0f} s per figure, {PAGE} items a page, my-photos cache off; "
        f"{load()}",
        flush=True,
    )
    async with fresh_database() as database_url:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        with server(database_url, **SETTINGS) as srv:
            organiser_email = photographer(srv)
            organiser = await sign_in(srv.url, organiser_email)
            created = (await organiser.post("/api/events", json={"name": "Scale"})).json()
            organiser_id = (await organiser.get("/api/me")).json()["user"]["id"]
            await organiser.aclose()
            joiners = await enrol_joiners(srv.url, connection)
        crowd = await seed_members(connection, event_id=created["id"], organiser_id=organiser_id)
        start = 0
        for size, pair in zip(SIZES, joiners, strict=True):
            expected = await seed_photos(
                connection,
                crowd,
                start=start,
                stop=size,
                joiners=[joiner.descriptor for joiner in pair],
            )
            start = size
            faces = await connection.fetchval("SELECT count(*) FROM faces")
            matches = await connection.fetchval("SELECT count(*) FROM face_matches")
            print(
                f"\n{size} photos, {faces} faces, {matches} matches; the member read is in "
                f"{len(crowd.measured_photo_ids)} photos; {load()}",
                flush=True,
            )
            with server(database_url, **SETTINGS) as srv:
                await measure_lists(srv.url, crowd, organiser_email, args.seconds)
                labels = ("late joiner, first since the restart,", "next late joiner")
                for joiner, theirs, label in zip(pair, expected, labels, strict=True):
                    joiner.client.base_url = httpx.URL(srv.url)
                    await late_joiner(joiner, created["code"], theirs, connection, label=label)
            after = await connection.fetchval("SELECT count(*) FROM face_matches")
            print(f"matches changed by the joins: {after - matches:+d} (the joiners' 50 each)")
            await explain(database_url, crowd, pair[-1], plans=size == SIZES[-1])
        for joiner in (joiner for pair in joiners for joiner in pair):
            await joiner.client.aclose()
        await connection.close()
    print(f"\n{load()}")


if __name__ == "__main__":
    asyncio.run(main())
