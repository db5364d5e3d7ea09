"""The `findme` command: serve, migrate, create-user, process."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import sys
from collections import Counter
from typing import TYPE_CHECKING

from findme.capacity import raise_open_files_limit
from findme.db import Database, Role
from findme.doctor import add_doctor_command
from findme.errors import FindMeError
from findme.logs import configure_logging
from findme.migrations import migrate
from findme.settings import Settings
from findme.watcher import add_watch_command

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import uvicorn


# FINDME_MAX_HEADER_BYTES bounds the request line and headers together: h11 stops buffering an
# incomplete request past it (400) and EdgeLimits refuses a complete one (431). httptools,
# uvicorn's default when installed, buffers without limit, so `findme serve` runs h11.


_KEEP_ALIVE_S = 90

# A collection pauses the process for as long as it takes to scan its generation, and thousands
# of open live pages are millions of objects: with Python's default thresholds a reconnect
# storm of 4,000 pages ran a dozen full collections of 0.1-1 s each, one after the other, and
# no request was answered meanwhile (docs/BENCHMARKS.md, "Live pages"). Young objects are
# collected every 50,000 allocations instead of 700, survivors leave the middle generation
# after 3 of those, and a full collection comes after 100 middle ones (and only once the old
# generation has grown by a quarter, as always): fewer, shorter pauses, the same collector.
_GC_THRESHOLDS = (50_000, 3, 100)


def server_config(
    settings: Settings, *, port: int | None = None, body_timeout_s: float | None = None
) -> uvicorn.Config:
    """How `findme serve` runs the app: bounded headers, slow bodies timed out."""
    import uvicorn

    from findme.app import create_app
    from findme.edge import EdgeLimits
    from findme.pacing import PacedH11Protocol

    app = EdgeLimits(
        create_app(settings),
        max_header_bytes=settings.max_header_bytes,
        body_timeout_s=settings.body_timeout_s if body_timeout_s is None else body_timeout_s,
        body_min_bytes_s=settings.body_min_rate_bytes_s,
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port if port is None else port,
        # h11, its new connections read a few per turn of the loop (findme/pacing.py).
        http=PacedH11Protocol,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # Client addresses (rate limits, logs) come from X-Forwarded-For only when the peer is
        # a trusted proxy (FORWARDED_ALLOW_IPS, default 127.0.0.1). Nothing grants access by
        # address: /metrics wants an admin or its scrape token.
        proxy_headers=True,
        # Longer than a proxy's or a phone's idle keep-alive (nginx: 75 s), so a client never
        # reuses a connection the server is closing at that moment (uvicorn's default is 5 s).
        timeout_keep_alive=_KEEP_ALIVE_S,
        log_config=None,
        access_log=False,
    )


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    migrate(settings)
    limit = raise_open_files_limit()
    logger.info(limit.sentence(), extra={"action": "open_files_limit"})
    server = uvicorn.Server(server_config(settings))
    _spread_garbage_collection()
    server.run()
    return 0 if server.started else 3


def _spread_garbage_collection() -> None:
    """Objects made before serving (modules, the app) are frozen out of every collection; the
    thresholds above apply to the rest."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    migrate(settings)
    _say("The database schema is up to date.")
    return 0


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    from findme.domain.accounts import check_password, create_user

    password = args.password or os.environ.get("FINDME_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise FindMeError("Give the password with --password, FINDME_PASSWORD or a terminal.")
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat it: "):
            raise FindMeError("The two passwords differ. Run the command again.")
    check_password(password)

    async def create() -> str:
        db = Database(settings)
        try:
            async with db.transaction() as session:
                user = await create_user(
                    session,
                    email=args.email,
                    password=password,
                    name=args.name,
                    role=Role(args.role),
                )
                return f"Created {user.role.value} {user.email} (id {user.id})."
        finally:
            await db.aclose()

    _say(asyncio.run(create()))
    return 0


def _process(settings: Settings, args: argparse.Namespace) -> int:
    """Run the workers without the web server: until stopped, or until the queue is empty."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from findme.services import build_notifier, build_pipeline, open_services

    async def work() -> int:
        async with open_services(settings, run_workers=False) as state:
            pipeline = build_pipeline(state)
            if not args.burst:
                async with build_notifier(state):
                    await pipeline.start()
                    try:
                        await asyncio.Event().wait()
                    finally:
                        await pipeline.stop()
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                "{task.fields[summary]}",
                transient=False,
            ) as progress:
                task = progress.add_task("Processing jobs", total=None, summary="")

                def update(outcomes: Counter[str], pending: int) -> None:
                    finished = outcomes["done"] + outcomes["failed"]
                    progress.update(
                        task,
                        completed=finished,
                        total=finished + pending,
                        summary=f"{outcomes['done']} done, {outcomes['failed']} failed, "
                        f"{outcomes['retried']} to retry, {pending} left",
                    )

                outcomes = await pipeline.run_burst(update)
            _say(f"Queue drained: {outcomes['done']} jobs done, {outcomes['failed']} failed.")
            return 1 if outcomes["failed"] else 0

    return asyncio.run(work())


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="findme", description="FindMe: attendees find the event photos they appear in."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="migrate, then serve HTTP").set_defaults(run=_serve)
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        run=_migrate
    )
    create = commands.add_parser("create-user", help="create an account")
    create.add_argument("--email", required=True)
    create.add_argument("--password", help="or FINDME_PASSWORD, or asked at a prompt")
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=[role.value for role in Role], default="attendee")
    create.set_defaults(run=_create_user)
    process = commands.add_parser("process", help="run the photo workers without the web server")
    process.add_argument(
        "--burst", action="store_true", help="drain the queue, show progress, then exit"
    )
    process.set_defaults(run=_process)
    add_watch_command(commands)
    add_doctor_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_environ()
        code: int = args.run(settings, args)
        return code
    except FindMeError as error:
        sys.stderr.write(f"findme: {error.detail}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
