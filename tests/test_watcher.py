"""`findme watch` end to end: the real server, the real watcher process, real files."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from findme.settings import Settings
from tests.conftest import free_port, serve, with_settings
from tests.shared_faces import faces_dir

logger = logging.getLogger(__name__)

MANIFEST = ".findme-manifest.json"


@dataclass
class Counts:
    """Upload requests seen by the server, and the most in flight at once."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


def counting(app, counts: Counts):
    """ASGI wrapper (test only) around the real app: counts concurrent upload requests."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/upload-photos"):
            await app(scope, receive, send)
            return
        counts.requests += 1
        counts.in_flight += 1
        counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
        try:
            await app(scope, receive, send)
        finally:
            counts.in_flight -= 1

    return wrapped


def counted_server(settings: Settings, counts: Counts, *, port: int):
    """conftest's serve(), with the upload counter around the app."""
    return serve(settings, port=port, wrap=lambda app: counting(app, counts))


@dataclass
class Photographer:
    client: httpx.AsyncClient
    event_id: int
    token: str


@pytest.fixture
async def photographer(make_user, make_event) -> Photographer:
    client = await make_user("photographer")
    event = await make_event(client)
    response = await client.post("/api/auth/tokens", json={"name": "watch folder"})
    assert response.status_code == 201, response.text
    return Photographer(client=client, event_id=event["id"], token=response.json()["token"])


class Watcher:
    """The watcher as a child process, its output going to files."""

    def __init__(self, process: asyncio.subprocess.Process, out: Path, err: Path) -> None:
        self.process = process
        self.out = out
        self.err = err

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    async def wait_for_output(self, text: str, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.stdout:
            if time.monotonic() > deadline or self.process.returncode is not None:
                pytest.fail(
                    f"The watcher did not print {text!r}. It printed:\n{self.stdout}{self.stderr}"
                )
            await asyncio.sleep(0.1)

    async def interrupt(self, timeout_s: float = 20) -> int:
        self.process.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_watcher(
    tmp_path: Path,
    folder: Path,
    url: str,
    *args: str,
    event_id: int,
    token: str | None,
    env_token: str | None = None,
) -> Watcher:
    runs = len(list(tmp_path.glob("watcher-*.out")))
    out, err = tmp_path / f"watcher-{runs}.out", tmp_path / f"watcher-{runs}.err"
    env = {key: value for key, value in os.environ.items() if key != "FINDME_TOKEN"}
    env |= {"FINDME_SECRET_KEY": "s" * 32, "PYTHONUNBUFFERED": "1"}
    if env_token is not None:
        env["FINDME_TOKEN"] = env_token
    command = [sys.executable, "-m", "findme.cli", "watch", str(folder), "--server", url]
    command += ["--event", str(event_id), *args]
    if token is not None:
        command += ["--token", token]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=stdout, stderr=stderr, cwd=tmp_path, env=env
        )
    return Watcher(process, out, err)


@contextlib.asynccontextmanager
async def watching(tmp_path, folder, url, *args, event_id, token) -> AsyncIterator[Watcher]:
    watcher = await start_watcher(tmp_path, folder, url, *args, event_id=event_id, token=token)
    try:
        yield watcher
    finally:
        await watcher.kill()


async def run_once(
    tmp_path, folder, url, *args, event_id, token, env_token=None, timeout_s=60
) -> Watcher:
    watcher = await start_watcher(
        tmp_path, folder, url, "--once", *args, event_id=event_id, token=token, env_token=env_token
    )
    try:
        await asyncio.wait_for(watcher.process.wait(), timeout_s)
    finally:
        await watcher.kill()
    return watcher


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]], timeout_s: float, *, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout_s} s waiting for {what}.")
        await asyncio.sleep(0.1)


async def gallery(client: httpx.AsyncClient, event_id: int) -> list[dict]:
    items: list[dict] = []
    cursor = ""
    while True:
        response = await client.get(
            "/api/all-photos", params={"event_id": event_id, "limit": 200, "cursor": cursor}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if not page["next_cursor"]:
            return items
        cursor = page["next_cursor"]


async def photo_count(client: httpx.AsyncClient, event_id: int, expected: int) -> bool:
    return len(await gallery(client, event_id)) >= expected


async def assert_each_photo_once(client, event_id: int, sources: dict[str, bytes]) -> None:
    """The event holds exactly these files, once each, with the bytes that were on disk."""
    items = await gallery(client, event_id)
    assert sorted(item["filename"] for item in items) == sorted(sources)
    for item in items:
        response = await client.get(f"/api/photo/{item['id']}")
        assert response.status_code == 200
        original = sources[item["filename"]]
        # The ETag is the SHA-256 of the bytes the server received.
        assert response.headers["etag"] == f'"{hashlib.sha256(original).hexdigest()}"'
        if item["filename"] != "e07.jpg":  # e07 carries GPS data, which the server blanks
            assert response.content == original, item["filename"]
        else:
            assert len(response.content) == len(original)


def shared_photos() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((faces_dir() / "event").iterdir())}


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def photos_recorded(folder: Path, event_id: int) -> dict[str, dict]:
    (target,) = [
        target
        for target in read_manifest(folder)["targets"].values()
        if target["event_id"] == event_id
    ]
    return target["photos"]


def reencoded(data: bytes, *, width: int, seed: int) -> bytes:
    """Another JPEG of the same picture: small, and with bytes no other call produces."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((width, max(1, round(image.height * width / image.width))))
    image.putpixel((seed % width, 0), (seed % 256, (seed // 256) % 256, 7))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80 + seed % 10)
    return out.getvalue()


async def test_slow_copies_are_sent_once_complete_and_never_twice(
    settings, photographer, tmp_path
) -> None:
    counts = Counts()
    folder = tmp_path / "incoming"
    folder.mkdir()
    sources = shared_photos()
    async with counted_server(settings, counts, port=free_port()) as url:
        async with watching(
            tmp_path,
            folder,
            url,
            "--settle-s",
            "1.5",
            event_id=photographer.event_id,
            token=photographer.token,
        ) as watcher:
            await watcher.wait_for_output("Watching")
            # Copy every photo as a slow card reader would: a chunk, a pause longer than a
            # file-system event but shorter than the settle time, the next chunk...
            handles = {name: (folder / name).open("wb") for name in sources}
            for part in range(4):
                for name, data in sources.items():
                    step = -(-len(data) // 4)
                    handles[name].write(data[part * step : (part + 1) * step])
                    handles[name].flush()
                await asyncio.sleep(0.3)
                assert counts.requests == 0, "a photo was sent before it was completely written"
            for handle in handles.values():
                handle.close()
            await wait_until(
                lambda: photo_count(photographer.client, photographer.event_id, len(sources)),
                30,
                what="every photo on the server",
            )
            await wait_until(lambda: MANIFEST in os.listdir(folder), 5, what="the manifest")
            await assert_each_photo_once(photographer.client, photographer.event_id, sources)
            sent_requests = counts.requests

            # Touches, a rewrite with the same bytes, a rename into a new folder and a copy
            # under another name: nothing new to send.
            for _ in range(5):
                for name in ("e05.jpg", "e06.jpg", "e08.png"):
                    os.utime(folder / name)
                await asyncio.sleep(0.05)
            (folder / "e02.jpg").write_bytes(sources["e02.jpg"])
            (folder / "renamed").mkdir()
            os.rename(folder / "e03.jpg", folder / "renamed" / "e03-renamed.jpg")
            shutil.copyfile(folder / "e04.jpg", folder / "copy-of-e04.jpg")
            recorded = hashlib.sha256(sources["e04.jpg"]).hexdigest()
            renamed = hashlib.sha256(sources["e03.jpg"]).hexdigest()

            def seen_new_paths() -> bool:
                photos = photos_recorded(folder, photographer.event_id)
                return (
                    "copy-of-e04.jpg" in photos[recorded]["paths"]
                    and "renamed/e03-renamed.jpg" in photos[renamed]["paths"]
                )

            await wait_until(seen_new_paths, 15, what="the copy and the rename in the manifest")
            await asyncio.sleep(2)  # longer than the settle time: the touched files were looked at
            assert counts.requests == sent_requests
            assert len(await gallery(photographer.client, photographer.event_id)) == len(sources)

            # Different bytes under an old name are a new photo.
            changed = reencoded(sources["e01.jpg"], width=300, seed=1)
            (folder / "e01.jpg").write_bytes(changed)
            await wait_until(
                lambda: photo_count(photographer.client, photographer.event_id, len(sources) + 1),
                15,
                what="the changed photo on the server",
            )
            assert counts.requests == sent_requests + 1

            assert await watcher.interrupt() == 0
            # 15 copied + the copy and the renamed file; 16 uploads; nothing sent twice.
            assert "Stopped. 17 files seen: 16 sent, 2 already sent." in watcher.stdout
            assert "already on the server" not in watcher.stdout
            recorded_photos = photos_recorded(folder, photographer.event_id)
            assert len(recorded_photos) == len(sources) + 1
            assert {entry["status"] for entry in recorded_photos.values()} == {"created"}

        # A restarted watcher finds everything in its manifest and sends nothing.
        async with watching(
            tmp_path,
            folder,
            url,
            "--settle-s",
            "0.5",
            event_id=photographer.event_id,
            token=photographer.token,
        ) as again:
            await again.wait_for_output("Watching")
            total = len(sources) + 1
            await again.wait_for_output(f"{total} files in the folder: {total} sent earlier, 0 to")
            await asyncio.sleep(1.5)
            assert await again.interrupt() == 0
            assert f"Stopped. {total} files seen: 0 sent, {total} already sent." in again.stdout
        assert counts.requests == sent_requests + 1
        assert "Traceback" not in watcher.stderr + again.stderr


async def test_server_outage_then_the_watcher_finishes_everything(
    settings, photographer, tmp_path
) -> None:
    counts = Counts()
    port = free_port()
    folder = tmp_path / "incoming"
    folder.mkdir()
    sources = shared_photos()
    names = sorted(sources)
    first, rest = names[:5], names[5:]
    ids = {"event_id": photographer.event_id, "token": photographer.token}
    watcher = None
    try:
        async with counted_server(settings, counts, port=port) as url:
            watcher = await start_watcher(tmp_path, folder, url, "--settle-s", "0.5", **ids)
            await watcher.wait_for_output("Watching")
            for name in first:
                (folder / name).write_bytes(sources[name])
            await wait_until(
                lambda: photo_count(photographer.client, photographer.event_id, len(first)),
                20,
                what="the first photos on the server",
            )
        # The server is down while more photos arrive; then it comes back on the same port.
        for name in rest:
            (folder / name).write_bytes(sources[name])
        await watcher.wait_for_output("connection refused")
        assert len(await gallery(photographer.client, photographer.event_id)) == len(first)
        async with counted_server(settings, counts, port=port):
            await wait_until(
                lambda: photo_count(photographer.client, photographer.event_id, len(sources)),
                40,
                what="every photo once the server is back",
            )
            await watcher.wait_for_output("The server answers again")
            await assert_each_photo_once(photographer.client, photographer.event_id, sources)
            assert await watcher.interrupt() == 0
        assert "15 files seen: 15 sent." in watcher.stdout
        assert "Traceback" not in watcher.stderr
    finally:
        if watcher is not None:
            await watcher.kill()


async def test_rejected_file_is_reported_recorded_and_not_retried(
    settings, photographer, make_event, tmp_path
) -> None:
    counts = Counts()
    folder = tmp_path / "card"
    folder.mkdir()
    sources = shared_photos()
    (folder / "e01.jpg").write_bytes(sources["e01.jpg"])
    (folder / "e02.jpg").write_bytes(sources["e02.jpg"])
    (folder / "notes.jpg").write_text("Shot list: speeches at 8, cake at 9.\n")
    # Ignored: hidden, temporary and non-image files.
    (folder / ".hidden.jpg").write_bytes(sources["e03.jpg"])
    (folder / "e04.jpg.part").write_bytes(sources["e04.jpg"])
    (folder / "readme.txt").write_text("not a photo")
    ids = {"event_id": photographer.event_id, "token": photographer.token}
    async with counted_server(settings, counts, port=free_port()) as url:
        first = await run_once(
            tmp_path, folder, url, "--settle-s", "0.3", "--batch-files", "1", **ids
        )
        assert first.process.returncode == 1, first.stdout + first.stderr
        assert "notes.jpg was rejected: This file is not a photo FindMe can read" in first.stdout
        assert "1 rejected" in first.stdout
        recorded = photos_recorded(folder, photographer.event_id)
        notes = recorded[hashlib.sha256((folder / "notes.jpg").read_bytes()).hexdigest()]
        assert notes["status"] == "rejected"
        assert notes["error"] == "unsupported_media_type"
        assert notes["paths"] == ["notes.jpg"]
        assert len(recorded) == 3
        assert counts.requests == 3
        items = await gallery(photographer.client, photographer.event_id)
        assert sorted(item["filename"] for item in items) == ["e01.jpg", "e02.jpg"]

        # Run again: the rejection is shown again, but the file is not sent again.
        second = await run_once(tmp_path, folder, url, "--settle-s", "0.3", **ids)
        assert second.process.returncode == 1
        assert "notes.jpg was rejected earlier" in second.stdout
        assert counts.requests == 3

        # Once its bytes change, it is sent (the token from FINDME_TOKEN this time).
        (folder / "notes.jpg").write_bytes(sources["e05.jpg"])
        third = await run_once(
            tmp_path,
            folder,
            url,
            "--settle-s",
            "0.3",
            event_id=photographer.event_id,
            token=None,
            env_token=photographer.token,
        )
        assert third.process.returncode == 0, third.stdout + third.stderr
        assert counts.requests == 4
        assert len(await gallery(photographer.client, photographer.event_id)) == 3

        # The manifest is per event: the same folder sent to another event sends everything.
        other = await make_event(photographer.client, "After party")
        fourth = await run_once(
            tmp_path, folder, url, "--settle-s", "0.3", event_id=other["id"], token=ids["token"]
        )
        assert fourth.process.returncode == 0, fourth.stdout + fourth.stderr
        assert "3 files seen: 3 sent." in fourth.stdout
        assert len(await gallery(photographer.client, other["id"])) == 3
        assert len(photos_recorded(folder, photographer.event_id)) == 4  # still all there


async def test_setup_mistakes_stop_with_a_sentence(server, photographer, tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "e01.jpg").write_bytes((faces_dir() / "event" / "e01.jpg").read_bytes())
    closed = f"http://127.0.0.1:{free_port()}"
    tries = [
        (folder, server.url, [], photographer.event_id, "fm_wrong"),
        (folder, server.url, [], 987654, photographer.token),
        (tmp_path / "missing", server.url, [], photographer.event_id, photographer.token),
        (folder, server.url, [], photographer.event_id, None),
        (folder, f"{server.url}/not-findme", [], photographer.event_id, photographer.token),
        (folder, "photos.example.com", [], photographer.event_id, photographer.token),
        (folder, closed, ["--give-up-after-s", "1"], photographer.event_id, photographer.token),
    ]
    # Run side by side, each with its own manifest (one folder takes one watcher at a time).
    runs = await asyncio.gather(
        *(
            run_once(
                tmp_path,
                where,
                url,
                "--manifest",
                str(tmp_path / f"manifest-{index}.json"),
                *extra,
                event_id=event_id,
                token=token,
            )
            for index, (where, url, extra, event_id, token) in enumerate(tries)
        )
    )
    wrong_token, no_event, no_folder, no_token, wrong_path, no_scheme, unreachable = runs
    for run in runs[:-1]:
        assert run.process.returncode == 2, run.stdout + run.stderr
        assert run.stderr.startswith("findme: "), run.stderr
        assert "Traceback" not in run.stderr
    assert "refused the API token" in wrong_token.stderr
    assert "--token" in wrong_token.stderr
    assert "There is no event 987654" in no_event.stderr
    assert "does not exist" in no_folder.stderr
    assert "No API token" in no_token.stderr
    assert "does not look like a FindMe server" in wrong_path.stderr
    assert "--server must be the address" in no_scheme.stderr
    assert unreachable.process.returncode == 1
    assert "Gave up" in unreachable.stderr
    assert "connection refused" in unreachable.stderr
    assert len(await gallery(photographer.client, photographer.event_id)) == 0


async def test_rate_limited_uploads_wait_and_finish(settings, photographer, tmp_path) -> None:
    counts = Counts()
    folder = tmp_path / "burst"
    folder.mkdir()
    sources = dict(list(shared_photos().items())[:8])
    for name, data in sources.items():
        (folder / name).write_bytes(data)
    limited = with_settings(settings, rate_upload="2/second")
    async with counted_server(limited, counts, port=free_port()) as url:
        run = await run_once(
            tmp_path,
            folder,
            url,
            "--settle-s",
            "0.2",
            "--batch-files",
            "1",
            event_id=photographer.event_id,
            token=photographer.token,
        )
    assert run.process.returncode == 0, run.stdout + run.stderr
    assert "HTTP 429" in run.stdout
    assert counts.requests > len(sources)
    await assert_each_photo_once(photographer.client, photographer.event_id, sources)


@pytest.mark.slow
async def test_500_files_at_once_arrive_with_bounded_parallelism(
    settings, photographer, tmp_path
) -> None:
    counts = Counts()
    folder = tmp_path / "dump"
    rng = random.Random(7)
    small = {}
    for name, data in shared_photos().items():
        image = Image.open(io.BytesIO(data)).convert("RGB")
        image.thumbnail((400, 400))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=95)
        small[name] = out.getvalue()
    names = sorted(small)
    sources = {}
    for index in range(500):
        source = names[index % len(names)]
        name = f"IMG_{index:04d}.jpg"
        sources[name] = reencoded(small[source], width=rng.randint(200, 400), seed=index)
    assert len(set(sources.values())) == 500
    for index, (name, data) in enumerate(sources.items()):
        (folder / f"roll{index % 3}").mkdir(parents=True, exist_ok=True)
        (folder / f"roll{index % 3}" / name).write_bytes(data)
    async with counted_server(settings, counts, port=free_port()) as url:
        started = time.monotonic()
        run = await run_once(
            tmp_path,
            folder,
            url,
            "--settle-s",
            "0.5",
            "--parallel",
            "4",
            "--batch-files",
            "10",
            event_id=photographer.event_id,
            token=photographer.token,
            timeout_s=90,
        )
        elapsed_s = time.monotonic() - started
    assert run.process.returncode == 0, run.stdout + run.stderr
    items = await gallery(photographer.client, photographer.event_id)
    assert sorted(item["filename"] for item in items) == sorted(sources)
    assert 2 <= counts.max_in_flight <= 4
    assert 50 <= counts.requests <= 100  # batched: about 10 photos per request
    assert "500 files seen: 500 sent." in run.stdout
    logger.info(
        "500 files: %.1f s, %d requests, at most %d in flight",
        elapsed_s,
        counts.requests,
        counts.max_in_flight,
    )


async def test_the_event_can_be_named_by_its_join_code(server, photographer, tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "e01.jpg").write_bytes((faces_dir() / "event" / "e01.jpg").read_bytes())
    event = (await photographer.client.get(f"/api/events/{photographer.event_id}")).json()
    typed = f"{event['code'][:4].lower()}-{event['code'][4:].lower()}"  # as read off a poster
    unknown = await run_once(
        tmp_path,
        folder,
        server.url,
        "--manifest",
        str(tmp_path / "manifest-unknown.json"),
        event_id="ZZZZ-ZZZZ",  # type: ignore[arg-type]
        token=photographer.token,
    )
    assert unknown.process.returncode == 2, unknown.stdout + unknown.stderr
    assert "None of your events" in unknown.stderr
    assert "ZZZZZZZZ" in unknown.stderr
    assert len(await gallery(photographer.client, photographer.event_id)) == 0

    sent = await run_once(
        tmp_path,
        folder,
        server.url,
        event_id=typed,
        token=photographer.token,  # type: ignore[arg-type]
    )
    assert sent.process.returncode == 0, sent.stdout + sent.stderr
    assert len(await gallery(photographer.client, photographer.event_id)) == 1
    recorded = photos_recorded(folder, photographer.event_id)
    # Recorded under the event's number, the code resolved to.
    assert [entry["paths"] for entry in recorded.values()] == [["e01.jpg"]], read_manifest(folder)
