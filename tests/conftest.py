"""Fixtures: a throw-away PostgreSQL database per test, the real app behind real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
import uvicorn

from findme.cli import server_config
from findme.migrations import migrate
from findme.settings import Settings

if TYPE_CHECKING:
    from playwright.async_api import Browser

    from tests.browser import Contexts

PG_HOST = os.environ.get("FINDME_TEST_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FINDME_TEST_PGPORT", "5432"))
PG_USER = os.environ.get("FINDME_TEST_PGUSER", "postgres")
RUN_ID = uuid.uuid4().hex[:8]
TEMPLATE_DB = f"findme_tpl_{RUN_ID}"
PASSWORD = "correct horse battery"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow or browser tests run first. `make test` hands each worker a file at a
    time: a slow file handed out last keeps one worker busy while the others have finished."""
    long_files = {
        item.path
        for item in items
        if item.get_closest_marker("slow") or item.get_closest_marker("browser")
    }
    items.sort(key=lambda item: item.path not in long_files)


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def _admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    except (OSError, asyncpg.PostgresError) as error:
        pytest.fail(
            f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) does not answer: {error}. "
            "Run the tests with `make test`, which starts the local cluster, or set "
            "FINDME_TEST_PGHOST / FINDME_TEST_PGPORT."
        )


@pytest.fixture(scope="session")
async def template_database() -> AsyncIterator[str]:
    """One migrated database per run; each test copies it (CREATE DATABASE ... TEMPLATE)."""
    connection = await _admin_connection()
    try:
        await connection.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        settings = Settings.from_environ({"FINDME_DATABASE_URL": pg_url(TEMPLATE_DB)})
        await asyncio.to_thread(migrate, settings)
        yield TEMPLATE_DB
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await connection.close()


@pytest.fixture
async def database_url(template_database: str) -> AsyncIterator[str]:
    name = f"findme_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    connection = await _admin_connection()
    try:
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield pg_url(name)
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings.from_environ(
        {
            "FINDME_DATABASE_URL": database_url,
            "FINDME_DATA_DIR": str(tmp_path / "var"),
            "FINDME_RUN_WORKERS": "false",
        }
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(
    settings: Settings,
    *,
    port: int | None = None,
    wrap: Callable[[Any], Any] | None = None,
    body_timeout_s: float | None = None,
) -> AsyncIterator[str]:
    """The real app under uvicorn, configured as `findme serve` runs it, on a local port (a free
    one by default), in this event loop.

    `wrap` puts test-only ASGI middleware around the app (to count requests, say).
    """
    port = port or free_port()
    config = server_config(settings, port=port, body_timeout_s=body_timeout_s)
    config.host = "127.0.0.1"
    config.log_level = "warning"
    if wrap is not None:
        config.app = wrap(config.app)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            pytest.fail("The server stopped while starting.")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Server:
    url: str
    settings: Settings

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60, **kwargs)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    async with serve(settings) as url:
        yield Server(url=url, settings=settings)


@pytest.fixture
async def anon(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


MakeUser = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_user(server: Server) -> AsyncIterator[MakeUser]:
    """Sign up (or create, for other roles) a user; returns a signed-in browser-like client."""
    clients: list[httpx.AsyncClient] = []
    admin: list[httpx.AsyncClient] = []

    async def make(role: str = "attendee", *, name: str | None = None) -> httpx.AsyncClient:
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        body = {"email": email, "password": PASSWORD, "name": name or role.title()}
        # With email configured, a sign-up waits for its emailed link: an admin makes the
        # account at once instead.
        by_admin = role != "attendee" or bool(server.settings.smtp_host)
        if by_admin:
            if not admin:
                admin.append(await _bootstrap_admin(server))
            response = await admin[0].post("/api/auth/register", json=body | {"role": role})
            assert response.status_code == 201, response.text
        client = server.client()
        clients.append(client)
        if not by_admin:
            response = await client.post("/api/auth/register", json=body)
            assert response.status_code == 201, response.text
        response = await client.post("/api/auth/login", json=body)
        assert response.status_code == 200, response.text
        client.headers["x-csrf-token"] = response.json()["csrf_token"]
        client.user = response.json()["user"]  # type: ignore[attr-defined]
        return client

    yield make
    for client in clients + admin:
        await client.aclose()


async def _bootstrap_admin(server: Server) -> httpx.AsyncClient:
    from findme.db import Database, Role
    from findme.domain.accounts import create_user

    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    db = Database(server.settings)
    try:
        async with db.transaction() as session:
            await create_user(
                session, email=email, password=PASSWORD, name="Admin", role=Role.admin
            )
    finally:
        await db.aclose()
    client = server.client()
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.headers["x-csrf-token"] = response.json()["csrf_token"]
    client.user = response.json()["user"]  # type: ignore[attr-defined]
    return client


@pytest.fixture
def make_event() -> Callable[..., Awaitable[dict[str, Any]]]:
    async def make(organiser: httpx.AsyncClient, name: str = "Summer gala") -> dict[str, Any]:
        response = await organiser.post("/api/events", json={"name": name, "date": "2026-06-30"})
        assert response.status_code == 201, response.text
        event: dict[str, Any] = response.json()
        return event

    return make


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    # Imported here, so that only a run with browser tests loads Playwright.
    from playwright.async_api import async_playwright, expect

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    expect.set_options(timeout=15_000)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def contexts(browser: Browser) -> AsyncIterator[Contexts]:
    from tests.browser import Contexts

    opened = Contexts(browser)
    yield opened
    await opened.close()
