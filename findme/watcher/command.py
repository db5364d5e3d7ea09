"""The command: `findme watch` arguments, setup and the final report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
from rich.console import Console

from findme.settings import Settings
from findme.watcher.client import EventClient
from findme.watcher.display import Display, plural
from findme.watcher.errors import GaveUp, WatchError
from findme.watcher.files import MB
from findme.watcher.loop import FolderWatcher, Outcome
from findme.watcher.manifest import MANIFEST_NAME, Manifest
from findme.watcher.options import WatchOptions

ONCE_GIVE_UP_S = 600.0


def add_watch_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = commands.add_parser(
        "watch",
        help="upload the photos saved into a folder to an event, as they arrive",
        description="Send each photo saved into DIR (and its subfolders) to an event, once it is "
        "completely written. A manifest in the folder remembers what was sent, so a restart, a "
        "rename or a copy never sends a photo twice.",
    )
    add = watch.add_argument
    add("folder", metavar="DIR", type=Path, help="the folder to watch, with its subfolders")
    add("--server", required=True, metavar="URL", help="the FindMe address, e.g. https://…")
    add(
        "--event",
        required=True,
        type=_event_reference,
        metavar="ID|CODE",
        help="the event's number, or its join code (e.g. ABCD-EFGH)",
    )
    add("--token", help="API token (default: the FINDME_TOKEN environment variable)")
    add(
        "--settle-s",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="how long a file's size and time must stay unchanged before it is sent (2)",
    )
    add("--parallel", type=_positive_int, default=4, metavar="N", help="requests in flight (4)")
    add(
        "--batch-bytes",
        type=_byte_size,
        default=20 * MB,
        metavar="SIZE",
        help="most bytes of small photos per request, e.g. 20MB (the default) or 500KB",
    )
    add("--batch-files", type=_positive_int, default=10, metavar="N", help="most per request (10)")
    add("--once", action="store_true", help="send what is in the folder now, then exit")
    add("--manifest", type=Path, metavar="PATH", help=f"default: DIR/{MANIFEST_NAME}")
    add("--poll", action="store_true", help="poll instead of OS events (for network shares)")
    add(
        "--give-up-after-s",
        type=_seconds,
        metavar="S",
        help="stop retrying an unreachable server after this long "
        f"(default: never when watching, {ONCE_GIVE_UP_S:.0f} s with --once)",
    )
    watch.set_defaults(run=run_watch)


def run_watch(_settings: Settings, args: argparse.Namespace) -> int:
    """`findme watch`; the exit code says how it went.

    0: done, or stopped by Ctrl-C while watching. 1 (--once): a file was rejected or unreadable,
    or the server stayed unreachable. 2: the setup needs fixing (a WatchError, which cli.main
    prints). 130: --once was interrupted.
    """
    options = _options(args)
    if isinstance(args.event, str):
        options = replace(options, event_id=asyncio.run(_event_id_of(options, args.event)))
    for noisy in ("httpx", "httpcore", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")  # a ✓ must never crash a legacy code page
    console = Console(soft_wrap=True, highlight=False)
    try:
        outcome = asyncio.run(_watch(options, console))
    except GaveUp as error:
        sys.stderr.write(f"findme: {error.detail}\n")
        return 1
    if outcome.interrupted and options.once:
        return 130
    return 1 if options.once and (outcome.rejected or outcome.unreadable) else 0


async def _watch(options: WatchOptions, console: Console) -> Outcome:
    with _exclusive(options.manifest):
        manifest, warning = Manifest.load(
            options.manifest, server=options.server, event_id=options.event_id
        )
        try:
            manifest.save_now()
        except OSError as error:
            raise WatchError(
                f"FindMe cannot write its manifest {options.manifest} ({error.strerror}). Make "
                "the folder writable, or keep the manifest elsewhere with --manifest PATH."
            ) from None
        async with httpx.AsyncClient(
            base_url=options.server,
            headers={"Authorization": f"Bearer {options.token}", "User-Agent": "findme-watch"},
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=httpx.Limits(
                max_connections=options.parallel, max_keepalive_connections=options.parallel
            ),
        ) as client:
            display = Display(console)
            with display:
                if warning:
                    display.line(f"! {warning}", style="yellow")
                watcher = FolderWatcher(
                    options,
                    manifest=manifest,
                    client=EventClient(client, server=options.server, event_id=options.event_id),
                    display=display,
                )
                try:
                    outcome = await watcher.run()
                finally:
                    display.refresh(watcher.figures(), pending=watcher.pending())
            if not outcome.scanned:
                display.line("Stopped before the server answered; nothing was sent.")
                return outcome
            verb = "Stopped" if outcome.interrupted else "Done"
            display.line(f"{verb}. {display.summary()}", style="bold")
            if outcome.unsent:
                display.line(
                    f"{plural(outcome.unsent, 'photo')} not sent yet; they will be when the "
                    "watcher runs again."
                )
            if outcome.rejected:
                display.line(
                    f"{plural(outcome.rejected, 'file')} rejected (see above). Fix or remove "
                    "them; a changed file is sent again.",
                    style="red",
                )
            return outcome


def _event_reference(raw: str) -> int | str:
    """An event's number, or its join code as typed or read off a poster ("abcd-efgh").

    Digits alone are a number; a code made of digits only is given with its dash.
    """
    text = raw.strip()
    if text.isdigit():
        return _positive_int(text)
    code = text.upper().replace(" ", "").replace("-", "")
    if not re.fullmatch(r"[A-Z0-9]{4,32}", code):
        raise argparse.ArgumentTypeError(
            f"must be the event's number or its join code (like ABCD-EFGH), not {raw!r}"
        )
    return code


async def _event_id_of(options: WatchOptions, code: str) -> int:
    """The number of the caller's event with this join code (GET /api/events lists the events
    the token's account organises or joined, with their codes)."""
    try:
        async with httpx.AsyncClient(
            base_url=options.server,
            headers={"Authorization": f"Bearer {options.token}", "User-Agent": "findme-watch"},
            timeout=httpx.Timeout(60.0, connect=10.0),
        ) as client:
            response = await client.get("/api/events", headers={"accept": "application/json"})
    except httpx.TransportError as error:
        raise WatchError(
            f"FindMe could not reach {options.server} to look up the event code "
            f"{code} ({type(error).__name__}). Check --server and the network."
        ) from None
    if response.status_code == 401:
        raise WatchError(
            "The server refused the API token. Create a new token on your account page (or "
            "with POST /api/auth/tokens) and pass it with --token or FINDME_TOKEN."
        )
    try:
        items = response.json()["items"] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        items = None
    if not isinstance(items, list):
        raise WatchError(
            f"{options.server} did not list your events (HTTP {response.status_code}); is it "
            "a FindMe server? Check --server, or pass the event's number with --event."
        )
    for item in items:
        if isinstance(item, dict) and item.get("code") == code:
            event_id = item.get("id")
            if isinstance(event_id, int):
                return event_id
    raise WatchError(
        f"None of your events on {options.server} has the code {code}. Check the "
        "code, or use a token of the photographer who organises the event."
    )


@contextlib.contextmanager
def _exclusive(manifest: Path) -> Iterator[None]:
    """One watcher per manifest: two would overwrite each other's records."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; trust the photographer
        yield
        return
    lock_path = manifest.with_name(manifest.name + ".lock")
    try:
        handle = lock_path.open("a+")
    except OSError as error:
        raise WatchError(
            f"FindMe cannot write next to its manifest {manifest} ({error.strerror}). Make the "
            "folder writable, or keep the manifest elsewhere with --manifest PATH."
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WatchError(
                f"Another findme watch is already using {manifest}. Stop it first, or give "
                "this one its own --manifest."
            ) from None
        yield


def _options(args: argparse.Namespace) -> WatchOptions:
    token = (args.token or os.environ.get("FINDME_TOKEN") or "").strip()
    if not token:
        raise WatchError(
            "No API token: pass --token or set FINDME_TOKEN. Sign in as the event's "
            'photographer and create one with POST /api/auth/tokens {"name": "watcher"}.'
        )
    folder = _readable_folder(args.folder)
    once = bool(args.once)
    give_up_s = args.give_up_after_s
    if give_up_s is None and once:
        give_up_s = ONCE_GIVE_UP_S
    return WatchOptions(
        folder=folder,
        server=_server_url(args.server),
        # A join code is looked up on the server before anything else (see run_watch).
        event_id=args.event if isinstance(args.event, int) else 0,
        token=token,
        manifest=(args.manifest or folder / MANIFEST_NAME).absolute(),
        settle_s=args.settle_s,
        parallel=args.parallel,
        batch_bytes=args.batch_bytes,
        batch_files=args.batch_files,
        once=once,
        poll=bool(args.poll),
        give_up_after_s=give_up_s,
    )


def _server_url(raw: str) -> str:
    problem = (
        f"--server must be the address of the FindMe server, such as "
        f"https://photos.example.com, not {raw!r}."
    )
    try:
        url = httpx.URL(raw.strip())
    except httpx.InvalidURL:
        raise WatchError(problem) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise WatchError(problem)
    return str(url.copy_with(query=None, fragment=None)).rstrip("/")


def _readable_folder(folder: Path) -> Path:
    try:
        if not folder.exists():
            raise WatchError(
                f"The folder {folder} does not exist. Check the path, or create it first."
            )
        if not folder.is_dir():
            raise WatchError(f"{folder} is a file, not a folder. Give the folder photos land in.")
        with os.scandir(folder) as entries:
            next(entries, None)
    except PermissionError:
        raise WatchError(
            f"FindMe may not read the folder {folder} (permission denied). Fix its permissions "
            "or run the watcher as a user who can read it."
        ) from None
    except OSError as error:
        raise WatchError(f"FindMe cannot read the folder {folder} ({error.strerror}).") from None
    return folder.resolve()


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {raw}")
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


def _byte_size(raw: str) -> int:
    match = _SIZE.match(raw)
    if match is None:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a size such as 20MB or 500KB")
    number, unit = match.groups()
    value = int(float(number) * {"": 1, "k": 1024, "m": MB, "g": 1024 * MB}[unit.lower()])
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, not {raw}")
    return value
