"""What the benchmarks share: a fresh PostgreSQL database, a real server process, users."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import numpy as np
from PIL import Image, ImageOps

from tests.shared_faces import faces_dir, manifest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
PASSWORD = "benchmark password"
PG = os.environ.get("FINDME_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new empty database for one run; dropped afterwards. Yields its SQLAlchemy URL."""
    name = f"findme_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{PG}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def findme(self, *args: str) -> str:
        """Run a `findme` command against the same database."""
        done = subprocess.run(
            [sys.executable, "-m", "findme.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def rss_kb(self) -> int:
        """Resident memory of the server process (not its engine processes)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


@contextlib.contextmanager
def server(database_url: str, *, port: int | None = None, **settings: str) -> Iterator[Server]:
    """`findme serve` as a real process on `port` (a free one by default), with default
    settings unless given."""
    port = port or free_port()
    data_dir = tempfile.mkdtemp(prefix="findme-bench-")
    env = {
        **os.environ,
        "FINDME_DATABASE_URL": database_url,
        "FINDME_DATA_DIR": data_dir,
        "FINDME_PORT": str(port),
        **settings,
    }
    log = open(Path(data_dir) / "server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "findme.cli", "serve"], env=env, stdout=log, stderr=log, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the server stopped; see {log.name}")
            time.sleep(0.2)
        yield Server(url=url, env=env, process=process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


async def sign_in(url: str, email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=300)
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    response.raise_for_status()
    client.headers["x-csrf-token"] = response.json()["csrf_token"]
    return client


async def sign_up(url: str, name: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=300)
    body = {
        "email": f"{name}-{uuid.uuid4().hex[:6]}@example.com",
        "password": PASSWORD,
        "name": name,
    }
    (await client.post("/api/auth/register", json=body)).raise_for_status()
    response = await client.post("/api/auth/login", json=body)
    client.headers["x-csrf-token"] = response.json()["csrf_token"]
    return client


def photographer(srv: Server) -> str:
    """A photographer account made with `findme create-user`; returns its email."""
    email = f"photographer-{uuid.uuid4().hex[:6]}@example.com"
    srv.findme(
        "create-user",
        "--email",
        email,
        "--password",
        PASSWORD,
        "--name",
        "Bench",
        "--role",
        "photographer",
    )
    return email


def derived_photos(
    kind: str, count: int, make: Callable[[Image.Image, int], Image.Image], *, quality: int
) -> list[Path]:
    """`count` JPEGs made from the shared event photos in turn, cached in bench/.cache/<kind>.

    Names are `<index>-<shared photo>.jpg`, so a result can be traced to who is in it.
    """
    folder = CACHE / kind
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(manifest()["event"])
    paths = []
    for index in range(count):
        base = names[index % len(names)]
        path = folder / f"{index:04d}-{Path(base).stem}.jpg"
        if not path.exists():
            shared = Image.open(faces_dir() / "event" / base)
            upright = ImageOps.exif_transpose(shared).convert("RGB")
            make(upright, index).save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def grainy(size: tuple[int, int], sigma: float) -> Callable[[Image.Image, int], Image.Image]:
    """Scaled to fit `size` whole (bordered, never cropped: every face stays in the picture),
    with sensor-like grain of its own so no two share bytes."""

    def make(image: Image.Image, index: int) -> Image.Image:
        framed = ImageOps.pad(image, size, Image.Resampling.BICUBIC, color=(118, 112, 104))
        pixels = np.asarray(framed, dtype=np.int16)
        grain = np.random.default_rng(index).normal(0, sigma, (*pixels.shape[:2], 1))
        return Image.fromarray(np.clip(pixels + grain.astype(np.int16), 0, 255).astype(np.uint8))

    return make


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]
