"""`findme watch`: send the photos that land in a folder to an event, each once, when complete.

The pieces, in order: which paths count (`is_candidate`), when a file is complete
(`SettleTracker`), what was sent where (`Manifest`), one request to the server (`EventClient`),
what the photographer sees (`Display`), batches, parallel requests and retries (`Uploader`), and
the loop tying them together (`FolderWatcher`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import functools
import hashlib
import io
import json
import logging
import os
import random
import re
import signal
import socket
import ssl
import stat
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import httpx
import watchfiles
from rich.console import Console
from rich.live import Live
from rich.text import Text

from findme.errors import FindMeError
from findme.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

MB = 1024 * 1024
MANIFEST_NAME = ".findme-manifest.json"
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", "~")
RESCAN_S = 30.0  # a full rescan catches what the OS did not report (network shares, overflows)
GRACE_S = 15.0  # how long Ctrl-C waits for requests already on the wire
ONCE_GIVE_UP_S = 600.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0
MAX_RETRY_AFTER_S = 600.0
HASH_GROUP = 16  # files hashed per worker-thread hop, so the first uploads start early
STATUS_EVERY_S = 10.0  # plain-text progress line interval


class WatchError(FindMeError):
    """The watcher cannot go on."""

    code = "watch_error"


class GaveUp(WatchError):
    """The server stayed unreachable for longer than the watcher was told to wait."""


class ServerTrouble(Exception):
    """The server cannot take the request now (down, overloaded, rate limiting): retry later."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class RequestRefused(Exception):
    """The server refused the request as a whole, without a word on each file (e.g. a 413)."""

    def __init__(self, *, status_code: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail


class _Stopped(Exception):
    """The watcher is stopping; the work in hand is left for the next run."""


# --- Which files, and when they are complete -------------------------------------------------


def is_ignored(relative: PurePosixPath) -> bool:
    """Hidden files and folders (the manifest among them) and temporary files are never sent."""
    return any(part.startswith(".") for part in relative.parts) or relative.name.lower().endswith(
        TEMPORARY_SUFFIXES
    )


def is_candidate(relative: PurePosixPath) -> bool:
    """A photo to send: a supported image extension, neither hidden nor temporary."""
    return not is_ignored(relative) and relative.suffix.lower() in CONTENT_TYPES


@dataclass(frozen=True)
class Signature:
    """What must stay unchanged for a file to count as complete, and its cached hash as valid."""

    size_bytes: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, info: os.stat_result) -> Signature:
        return cls(info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


class SettleTracker:
    """Files not yet complete: one is ready once its signature stayed the same for settle_s."""

    def __init__(self, *, settle_s: float) -> None:
        self._settle_s = settle_s
        self._files: dict[str, tuple[Signature | None, float]] = {}

    def __len__(self) -> int:
        return len(self._files)

    def touch(self, relative: str) -> None:
        self._files.setdefault(relative, (None, 0.0))

    def forget(self, relative: str) -> None:
        self._files.pop(relative, None)

    def forget_under(self, relative: str) -> None:
        """Forget a path and, if it was a folder, everything in it."""
        prefix = relative + "/"
        for name in [name for name in self._files if name == relative or name.startswith(prefix)]:
            del self._files[name]

    def names(self) -> list[str]:
        return list(self._files)

    def observe(self, observed: dict[str, Signature | None], now: float) -> list[Upload]:
        """Take one round of stat results; return the files that have settled (and drop them)."""
        ready: list[Upload] = []
        for relative, signature in observed.items():
            if relative not in self._files:
                continue  # forgotten while the stats were taken
            if signature is None:
                del self._files[relative]
                continue
            previous, since = self._files[relative]
            if signature != previous:
                self._files[relative] = (signature, now)
            elif now - since >= self._settle_s:
                del self._files[relative]
                ready.append(Upload(relative=relative, signature=signature))
        return ready


@dataclass(frozen=True)
class Upload:
    """A complete file: its path in the folder, its signature and (once read) its hash."""

    relative: str
    signature: Signature
    sha256: str = ""

    @property
    def size_bytes(self) -> int:
        return self.signature.size_bytes


@dataclass(frozen=True)
class ScanResult:
    files: dict[str, Signature]
    unreadable: list[str]


def scan_folder(root: Path, below: str = "") -> ScanResult:
    """Every candidate under root/below with its signature; symlinked folders are not followed."""
    files: dict[str, Signature] = {}
    unreadable: list[str] = []
    folders = [below]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(root / folder) as scanned:
                entries = list(scanned)
        except FileNotFoundError:
            continue
        except OSError:
            unreadable.append(folder or ".")
            continue
        for entry in entries:
            relative = f"{folder}/{entry.name}" if folder else entry.name
            path = PurePosixPath(relative)
            if is_ignored(path):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(relative)
                elif is_candidate(path) and entry.is_file():
                    files[relative] = Signature.of(entry.stat())
            except OSError:
                continue
    return ScanResult(files=files, unreadable=unreadable)


def _stat_all(root: Path, names: list[str]) -> dict[str, Signature | None]:
    found: dict[str, Signature | None] = {}
    for name in names:
        try:
            info = (root / name).stat()
        except OSError:
            found[name] = None
            continue
        found[name] = Signature.of(info) if stat.S_ISREG(info.st_mode) else None
    return found


def _hash_all(root: Path, uploads: list[Upload]) -> list[Upload | OSError | None]:
    """Each file's SHA-256; None for one that changed (or vanished) while it was read."""
    hashed: list[Upload | OSError | None] = []
    for upload in uploads:
        path = root / upload.relative
        digest = hashlib.sha256()
        try:
            with path.open("rb") as source:
                while chunk := source.read(MB):
                    digest.update(chunk)
            unchanged = Signature.of(path.stat()) == upload.signature
        except FileNotFoundError:
            hashed.append(None)
            continue
        except OSError as error:
            hashed.append(error)
            continue
        hashed.append(
            Upload(upload.relative, upload.signature, digest.hexdigest()) if unchanged else None
        )
    return hashed


def _read_all(root: Path, uploads: list[Upload]) -> list[bytes | None]:
    """The bytes to send; None where the file is gone or no longer has the hash it was sent for."""
    contents: list[bytes | None] = []
    for upload in uploads:
        try:
            data = (root / upload.relative).read_bytes()
        except OSError:
            contents.append(None)
            continue
        contents.append(data if hashlib.sha256(data).hexdigest() == upload.sha256 else None)
    return contents


# --- The manifest ----------------------------------------------------------------------------


ANSWER_STATUSES = frozenset({"created", "duplicate", "rejected"})


@dataclass(frozen=True)
class Answer:
    """The server's word on one file: created, duplicate or rejected."""

    status: str
    photo_id: int | None = None
    error: str | None = None
    detail: str | None = None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class Manifest:
    """What was sent where: per (server, event), each content hash sent and the server's answer.

    It also keeps each path's hash with the file's signature, so a restart does not re-read
    every photo. Saved atomically; a later save never loses to an earlier one.
    """

    def __init__(
        self, path: Path, *, server: str, event_id: int, data: dict[str, Any] | None = None
    ) -> None:
        self.path = path
        self._data: dict[str, Any] = data or {"version": 1, "files": {}, "targets": {}}
        target = self._data["targets"].setdefault(
            f"{server} event {event_id}", {"server": server, "event_id": event_id, "photos": {}}
        )
        self._photos: dict[str, dict[str, Any]] = target["photos"]
        self._files: dict[str, dict[str, Any]] = self._data["files"]
        self._version = 0
        self._written = -1
        self._write_lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, *, server: str, event_id: int) -> tuple[Manifest, str | None]:
        """The manifest at path (a new one if there is none), and a warning if it was damaged."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path, server=server, event_id=event_id), None
        except OSError as error:
            raise WatchError(
                f"FindMe cannot read its manifest {path} ({error.strerror}). Fix its "
                "permissions, or keep the manifest elsewhere with --manifest PATH."
            ) from None
        try:
            data = json.loads(raw)
            if not (
                data.get("version") == 1
                and isinstance(data.get("files"), dict)
                and isinstance(data.get("targets"), dict)
            ):
                raise ValueError("not a FindMe manifest")
            manifest = cls(path, server=server, event_id=event_id, data=data)
        except (ValueError, TypeError, AttributeError, KeyError):
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            try:
                os.replace(path, aside)
            except OSError as error:
                raise WatchError(
                    f"The manifest {path} is damaged and cannot be moved aside "
                    f"({error.strerror}). Move or delete it, then start again."
                ) from None
            return cls(path, server=server, event_id=event_id), (
                f"The manifest {path} was damaged; it was kept as {aside.name} and a new one "
                "started. Photos the server already has are recognised, not stored twice."
            )
        return manifest, None

    def answer_for(self, sha256: str) -> Answer | None:
        entry = self._photos.get(sha256)
        if not isinstance(entry, dict) or entry.get("status") not in ANSWER_STATUSES:
            return None
        return Answer(
            status=entry["status"],
            photo_id=entry.get("photo_id"),
            error=entry.get("error"),
            detail=entry.get("detail"),
        )

    def record(
        self, sha256: str, answer: Answer, *, paths: Collection[str], size_bytes: int
    ) -> None:
        entry = self._photos.setdefault(sha256, {"paths": []})
        entry.update(
            status=answer.status,
            photo_id=answer.photo_id,
            error=answer.error,
            detail=answer.detail,
            size_bytes=size_bytes,
            answered_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        for relative in paths:
            self.add_path(sha256, relative)
        self._version += 1

    def add_path(self, sha256: str, relative: str) -> None:
        paths = self._photos[sha256].setdefault("paths", [])
        if relative not in paths:
            paths.append(relative)
            self._version += 1

    def known_hash(self, relative: str, signature: Signature) -> str | None:
        entry = self._files.get(relative)
        if isinstance(entry, dict) and entry.get("signature") == _signature_list(signature):
            sha256 = entry.get("sha256")
            return sha256 if isinstance(sha256, str) else None
        return None

    def remember_hash(self, relative: str, signature: Signature, sha256: str) -> None:
        entry = {"sha256": sha256, "signature": _signature_list(signature)}
        if self._files.get(relative) != entry:
            self._files[relative] = entry
            self._version += 1

    def keep_files(self, present: Collection[str]) -> None:
        """Drop cached hashes of paths that are no longer in the folder."""
        for relative in [name for name in self._files if name not in present]:
            del self._files[relative]
            self._version += 1

    @property
    def dirty(self) -> bool:
        return self._version > self._written

    async def save(self) -> None:
        """Write the current state in a worker thread."""
        version, data = self._version, self._dump()
        await asyncio.to_thread(self._write, version, data)

    def save_now(self) -> None:
        self._write(self._version, self._dump())

    def _dump(self) -> bytes:
        return json.dumps(self._data, indent=1, sort_keys=True).encode()

    def _write(self, version: int, data: bytes) -> None:
        with self._write_lock:
            if version > self._written:
                _write_atomic(self.path, data)
                self._written = version


def _signature_list(signature: Signature) -> list[int]:
    return [signature.size_bytes, signature.mtime_ns, signature.ctime_ns, signature.inode]


# --- The server ------------------------------------------------------------------------------


class EventClient:
    """One event on the server, behind a shared httpx client; each call is a single attempt."""

    def __init__(self, client: httpx.AsyncClient, *, server: str, event_id: int) -> None:
        self._client = client
        self._server = server
        self._event_id = event_id

    async def check_event(self) -> str:
        """The event's name, once the token is known to reach it."""
        response = await self._request("GET", f"/api/events/{self._event_id}")
        if response.status_code == 404 and not await self._is_findme():
            raise self._not_findme(response)
        body = self._judge(response)
        if response.status_code != 200 or not isinstance(body, dict) or "name" not in body:
            raise self._not_findme(response)
        if body.get("my_role") not in (None, "organiser", "admin"):
            raise WatchError(
                f"This token's account has joined event {self._event_id} but does not organise "
                "it, so it cannot upload. Use a token of the photographer who created the event."
            )
        return str(body["name"])

    async def send(self, files: Sequence[tuple[str, bytes, str]]) -> list[Answer]:
        """Upload files in one request; the server's answer for each, in order."""
        response = await self._request(
            "POST",
            f"/api/photographer/events/{self._event_id}/upload-photos",
            files=[("files", part) for part in files],
        )
        body = self._judge(response)
        results = body.get("results") if isinstance(body, dict) else None
        if isinstance(results, list):
            if len(results) != len(files):
                raise ServerTrouble("the server's answer did not cover every photo")
            return [self._answer(result) for result in results]
        if 400 <= response.status_code < 500:
            detail = body.get("detail") if isinstance(body, dict) else None
            raise RequestRefused(
                status_code=response.status_code,
                error=str(body.get("error", "refused")) if isinstance(body, dict) else "refused",
                detail=str(
                    detail or f"The server refused the request (HTTP {response.status_code})."
                ),
            )
        raise self._not_findme(response)

    async def _is_findme(self) -> bool:
        response = await self._request("GET", "/healthz")
        try:
            return response.status_code == 200 and response.json().get("status") == "ok"
        except (ValueError, AttributeError):
            return False

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._transport_trouble(error) from error

    def _judge(self, response: httpx.Response) -> Any:
        """The JSON body; raise for the answers that are not about individual files."""
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        detail = body.get("detail") if isinstance(body, dict) else None
        said = f" (HTTP {status}: {detail})" if detail else f" (HTTP {status})"
        if status == 429 or status >= 500 or status in (408, 409, 425):
            raise ServerTrouble(
                f"the server asks to slow down{said}"
                if status == 429
                else f"the server cannot take photos right now{said}",
                retry_after_s=_retry_after_s(response.headers.get("retry-after")),
            )
        if 300 <= status < 400:
            location = response.headers.get("location", "another address")
            raise WatchError(
                f"{self._server} redirects to {location}. Pass that address with --server."
            )
        if status == 401:
            raise WatchError(
                f"The server refused the API token{said}. Create a new token while signed in "
                "as the event's photographer (POST /api/auth/tokens) and pass it with --token "
                "or FINDME_TOKEN."
            )
        if status == 403:
            raise WatchError(
                f"This token may not upload to event {self._event_id}{said}. Use a token of "
                "the photographer who organises the event, or check --event."
            )
        if status == 404:
            if not isinstance(body, dict) or "error" not in body:
                raise self._not_findme(response)
            raise WatchError(
                f"There is no event {self._event_id} on {self._server}{said}. Check --event "
                "(the number in the event's address) and --server."
            )
        return body

    def _answer(self, result: Any) -> Answer:
        if not isinstance(result, dict) or result.get("status") not in ANSWER_STATUSES:
            raise WatchError(
                f"{self._server} answered an upload in a way this watcher does not understand: "
                f"{result!r}. Update FindMe on this computer or check --server."
            )
        photo_id = result.get("photo_id")
        return Answer(
            status=result["status"],
            photo_id=photo_id if isinstance(photo_id, int) else None,
            error=result.get("error"),
            detail=result.get("detail") or result.get("error"),
        )

    def _not_findme(self, response: httpx.Response) -> WatchError:
        return WatchError(
            f"{self._server} does not look like a FindMe server: {response.request.url.path} "
            f"answered HTTP {response.status_code}. Check --server."
        )

    def _transport_trouble(self, error: httpx.TransportError) -> Exception:
        causes: list[BaseException] = []
        cause: BaseException | None = error
        while cause is not None and len(causes) < 8:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        for cause in causes:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return WatchError(
                    f"The HTTPS certificate of {self._server} is not valid "
                    f"({cause.verify_message}). Check --server, or fix the server's certificate."
                )
            if isinstance(cause, socket.gaierror):
                return ServerTrouble(
                    f"the name in {self._server} cannot be found (check --server and the network)"
                )
            if isinstance(cause, ConnectionRefusedError):
                return ServerTrouble(
                    f"nothing answers at {self._server} (connection refused): the server is "
                    "down, or --server is wrong"
                )
        text = str(error) or type(error).__name__
        if isinstance(error, httpx.ConnectTimeout):
            return ServerTrouble(f"{self._server} does not answer (connection timed out)")
        if isinstance(error, httpx.ConnectError):
            return ServerTrouble(f"cannot connect to {self._server} ({text})")
        if isinstance(error, httpx.TimeoutException):
            return ServerTrouble("the server took too long to answer")
        return ServerTrouble(f"the connection to the server was lost ({text})")


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _backoff_s(failures: int) -> float:
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**failures) * random.uniform(0.8, 1.2)


# --- What the photographer sees --------------------------------------------------------------


class Display:
    """A live panel on a terminal; plain timestamped lines when stdout is not one."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal and not console.is_dumb_terminal
        self.seen: set[str] = set()
        self.tally: Counter[str] = Counter()
        self.sent_bytes = 0
        self.pending = 0
        self._title = ""
        self._trouble: str | None = None
        self._trouble_shown_at = 0.0
        self._recent: deque[tuple[float, int]] = deque()
        self._first_send_at: float | None = None
        self._requests = 0
        self._busy_since = 0.0
        self._busy_s = 0.0  # time with at least one request in flight
        self._live: Live | None = None
        self._status_at = time.monotonic()  # the first status line comes after a while
        self._status_shown = ""

    def __enter__(self) -> Display:
        if self.live:
            self._live = Live(self._render(), console=self.console, auto_refresh=False)
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    def title(self, text: str) -> None:
        self._title = text
        if not self.live:  # the live panel shows it
            self.line(text, style="bold")

    def line(self, text: str, *, style: str = "") -> None:
        stamp = time.strftime("%H:%M:%S")
        if self.live:
            self.console.print(Text.assemble((stamp, "dim"), " ", (text, style)))
        else:
            self.console.print(Text(f"{stamp} {text}"))

    def outcome(self, relative: str, answer: Answer, *, kind: str) -> None:
        """One file's fate; kind is sent, duplicate, rejected, already or rejected_earlier."""
        if answer.status == "rejected":
            why = answer.detail or answer.error or "no reason given"
            when = " earlier" if kind == "rejected_earlier" else ""
            self.line(
                f"✗ {relative} was rejected{when}: {why} It is not sent again unless it changes.",
                style="red",
            )
        elif kind == "sent":
            self.line(f"✓ {relative} sent (photo {answer.photo_id})", style="green")
        elif kind == "duplicate":
            self.line(f"= {relative} was already on the server (photo {answer.photo_id})")
        else:
            self.line(f"= {relative} has the same bytes as a photo already sent, not sent again")

    def request_started(self) -> None:
        now = time.monotonic()
        if self._first_send_at is None:
            self._first_send_at = now
        if not self._requests:
            self._busy_since = now
        self._requests += 1

    def request_ended(self, sent_bytes: int) -> None:
        """A request is over; sent_bytes is what it delivered (0 if it failed)."""
        now = time.monotonic()
        self._requests -= 1
        if not self._requests:
            self._busy_s += now - self._busy_since
        if sent_bytes:
            self.sent_bytes += sent_bytes
            self._recent.append((now, sent_bytes))

    def trouble(self, reason: str, retry_in_s: float) -> None:
        now = time.monotonic()
        if reason != self._trouble or now - self._trouble_shown_at >= 30:
            self.line(f"! {reason}; retrying in {retry_in_s:.1f} s", style="yellow")
            self._trouble_shown_at = now
        self._trouble = reason

    def recovered(self) -> None:
        if self._trouble is not None:
            self._trouble = None
            self.line("The server answers again; carrying on.", style="green")

    def rate_mb_s(self) -> float:
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > 5:
            self._recent.popleft()
        if not self._recent or self._first_send_at is None:
            return 0.0
        window = min(5.0, max(now - self._first_send_at, 0.5))
        return sum(size for _, size in self._recent) / window / MB

    def status(self) -> str:
        tally = self.tally
        return (
            f"seen {len(self.seen)} · sent {tally['sent']} · duplicate {tally['duplicate']} · "
            f"already sent {tally['already']} · rejected {tally['rejected']} · "
            f"pending {self.pending} · {self.rate_mb_s():.1f} MB/s"
        )

    def refresh(self, *, pending: int) -> None:
        self.pending = pending
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            return
        now = time.monotonic()
        status = self.status()
        changed = status.rsplit(" · ", 1)[0] != self._status_shown
        if changed and now - self._status_at >= STATUS_EVERY_S:
            self.line(status)
            self._status_at = now
            self._status_shown = status.rsplit(" · ", 1)[0]

    def summary(self) -> str:
        moved = ""
        if self.sent_bytes:
            busy_s = max(self._busy_s, 0.001)
            moved = (
                f" {_human_bytes(self.sent_bytes)} in {busy_s:.1f} s of uploading "
                f"({self.sent_bytes / MB / busy_s:.1f} MB/s)."
            )
        tally = self.tally
        parts = [f"{tally['sent']} sent"]
        parts += [f"{tally['duplicate']} already on the server"] if tally["duplicate"] else []
        parts += [f"{tally['already']} already sent"] if tally["already"] else []
        parts += [f"{tally['rejected']} rejected"] if tally["rejected"] else []
        return f"{_plural(len(self.seen), 'file')} seen: {', '.join(parts)}." + moved

    def _render(self) -> Text:
        text = Text()
        text.append(self._title + "\n", style="bold")
        text.append(self.status())
        if self._trouble is not None:
            text.append(f"\n! {self._trouble}", style="yellow")
        return text


@dataclass(frozen=True)
class WatchOptions:
    folder: Path
    server: str
    event_id: int
    token: str = field(repr=False)
    manifest: Path
    settle_s: float = 2.0
    parallel: int = 4
    batch_bytes: int = 20 * MB
    batch_files: int = 10
    once: bool = False
    poll: bool = False
    give_up_after_s: float | None = None


# --- Sending ---------------------------------------------------------------------------------


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    display: Display,
    stopping: asyncio.Event,
    give_up_after_s: float | None,
) -> T:
    """attempt(), again while the server has trouble, pausing longer each time (or as told).

    Raises _Stopped when the watcher stops during a pause, and GaveUp after give_up_after_s.
    """
    failures = 0
    first_failure_at = 0.0
    while True:
        try:
            result = await attempt()
        except ServerTrouble as trouble:
            now = time.monotonic()
            first_failure_at = first_failure_at or now
            if give_up_after_s is not None and now - first_failure_at >= give_up_after_s:
                raise GaveUp(f"Gave up after {give_up_after_s:.0f} s: {trouble.reason}.") from None
            delay_s = trouble.retry_after_s
            if delay_s is None:
                delay_s = _backoff_s(failures)
            failures += 1
            display.trouble(trouble.reason, delay_s)
            try:
                await asyncio.wait_for(stopping.wait(), delay_s)
            except TimeoutError:
                continue
            raise _Stopped() from None
        if failures:
            display.recovered()
        return result


class Uploader:
    """Complete files in, answers out: batches, at most `parallel` requests in flight, retries."""

    def __init__(
        self,
        client: EventClient,
        *,
        options: WatchOptions,
        display: Display,
        stopping: asyncio.Event,
        on_answer: Callable[[Upload, Answer], None],
        on_changed: Callable[[Upload], None],
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self._client = client
        self._options = options
        self._display = display
        self._stopping = stopping
        self._on_answer = on_answer
        self._on_changed = on_changed
        self._on_failure = on_failure
        self._queue: deque[Upload] = deque()
        self._queued = asyncio.Event()
        self._slots = asyncio.Semaphore(options.parallel)
        self._sending: set[asyncio.Task[None]] = set()
        self._files_sending = 0
        self._batch_bytes = options.batch_bytes

    @property
    def pending(self) -> int:
        return len(self._queue) + self._files_sending

    @property
    def idle(self) -> bool:
        return not self._queue and not self._sending

    def put(self, upload: Upload) -> None:
        self._queue.append(upload)
        self._queued.set()

    async def run(self) -> None:
        """Send a batch whenever a request slot is free, until cancelled."""
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            self._files_sending += len(batch)
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(functools.partial(self._sent, count=len(batch)))

    async def finish(self, *, grace_s: float, force: asyncio.Event) -> None:
        """Let requests on the wire end (for up to grace_s, or until force), cancel the rest."""
        if self._sending and grace_s > 0:
            self._display.line(
                f"Finishing {len(self._sending)} upload(s) in progress… (Ctrl-C again to quit now)"
            )
            forced = asyncio.ensure_future(force.wait())
            waiters: set[asyncio.Future[Any]] = {
                asyncio.gather(*self._sending, return_exceptions=True),
                forced,
            }
            await asyncio.wait(waiters, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    def _sent(self, task: asyncio.Task[None], *, count: int) -> None:
        self._sending.discard(task)
        self._files_sending -= count
        self._slots.release()
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, _Stopped):
            self._on_failure(error)

    async def _next_batch(self) -> list[Upload]:
        while not self._queue:
            self._queued.clear()
            await self._queued.wait()
        batch = [self._queue.popleft()]
        total = batch[0].size_bytes
        while (
            self._queue
            and len(batch) < self._options.batch_files
            and total + self._queue[0].size_bytes <= self._batch_bytes
        ):
            total += self._queue[0].size_bytes
            batch.append(self._queue.popleft())
        return batch

    async def _send(self, batch: list[Upload]) -> None:
        contents = await asyncio.to_thread(_read_all, self._options.folder, batch)
        ready: list[tuple[Upload, bytes]] = []
        for upload, data in zip(batch, contents, strict=True):
            if data is None:
                self._on_changed(upload)
            else:
                ready.append((upload, data))
        if ready:
            await self._post(ready)

    async def _post(self, items: list[tuple[Upload, bytes]]) -> None:
        files = [
            (
                PurePosixPath(upload.relative).name,
                data,
                CONTENT_TYPES[PurePosixPath(upload.relative).suffix.lower()],
            )
            for upload, data in items
        ]
        size_bytes = sum(len(data) for _, data in items)

        async def attempt() -> list[Answer]:
            self._display.request_started()
            answers: list[Answer] = []
            try:
                answers = await self._client.send(files)
            finally:
                self._display.request_ended(size_bytes if answers else 0)
            return answers

        try:
            answers = await with_retries(
                attempt,
                display=self._display,
                stopping=self._stopping,
                give_up_after_s=self._options.give_up_after_s,
            )
        except RequestRefused as refused:
            if len(items) > 1:
                # Refused as a whole (too large for the server or a proxy): send it in halves.
                if refused.status_code == 413 and self._batch_bytes > size_bytes // 2:
                    self._batch_bytes = max(1, size_bytes // 2)
                    self._display.line(
                        f"! The server refuses requests of {_human_bytes(size_bytes)}; sending "
                        f"at most {_human_bytes(self._batch_bytes)} per request from now on.",
                        style="yellow",
                    )
                half = len(items) // 2
                await self._post(items[:half])
                await self._post(items[half:])
                return
            answers = [Answer(status="rejected", error=refused.error, detail=refused.detail)]
        for (upload, _), answer in zip(items, answers, strict=True):
            self._on_answer(upload, answer)


# --- The loop --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    rejected: int
    unreadable: int
    unsent: int
    interrupted: bool
    scanned: bool


class FolderWatcher:
    """Scan, watch, settle, hash, deduplicate, batch and upload; record every answer."""

    def __init__(
        self,
        options: WatchOptions,
        *,
        manifest: Manifest,
        client: EventClient,
        display: Display,
    ) -> None:
        self._options = options
        self._root = options.folder
        self._manifest = manifest
        self._client = client
        self._display = display
        self._stopping = asyncio.Event()
        self._uploader = Uploader(
            client,
            options=options,
            display=display,
            stopping=self._stopping,
            on_answer=self._answered,
            on_changed=self._changed,
            on_failure=self._fail,
        )
        self._tracker = SettleTracker(settle_s=options.settle_s)
        self._handled: dict[str, Signature] = {}  # path → signature its answer is for
        self._in_hand: dict[str, dict[str, Signature]] = {}  # hash → paths, queued or sending
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._force = asyncio.Event()
        self._manifest_changed = asyncio.Event()
        self._fatal: BaseException | None = None
        self._interrupted = False
        self._kind: dict[str, tuple[str, str]] = {}  # path → (outcome, hash) counted
        self._unreadable: dict[str, Signature] = {}
        self._warned: set[str] = set()
        self._scanned = False

    def pending(self) -> int:
        return len(self._tracker) + self._uploader.pending

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        tasks: list[asyncio.Task[None]] = []
        try:
            name = await self._unless_stopped(
                with_retries(
                    self._client.check_event,
                    display=self._display,
                    stopping=self._stopping,
                    give_up_after_s=self._options.give_up_after_s,
                )
            )
            if not self._options.once:
                # The OS watch starts before the scan, so no file slips in between the two.
                tasks.append(asyncio.create_task(self._guard(self._watch_loop())))
                await asyncio.sleep(0)
            await self._initial_scan(name)
            work = [self._settle_loop(), self._uploader.run(), self._autosave_loop()]
            work.append(self._display_loop())
            if not self._options.once:
                work.append(self._rescan_loop())
            tasks += [asyncio.create_task(self._guard(job)) for job in work]
            await self._stopping.wait()
        except _Stopped:
            pass
        finally:
            for task in [*tasks, *self._side_tasks]:
                task.cancel()
            await asyncio.gather(*tasks, *self._side_tasks, return_exceptions=True)
            await self._uploader.finish(
                grace_s=GRACE_S if self._fatal is None else 0, force=self._force
            )
            self._remove_signal_handlers(loop)
            self._display.refresh(pending=self.pending())
            try:
                self._manifest.save_now()
            except OSError as error:
                self._display.line(
                    f"! The manifest could not be saved ({error.strerror}).", style="red"
                )
        if isinstance(self._fatal, GaveUp) and self.pending():
            raise GaveUp(
                f"{self._fatal.detail} {_plural(self.pending(), 'photo')} not sent; run the "
                "command again later (nothing already sent is sent twice)."
            )
        if self._fatal is not None:
            raise self._fatal
        return Outcome(
            rejected=self._display.tally["rejected"],
            unreadable=len(self._unreadable),
            unsent=self.pending(),
            interrupted=self._interrupted,
            scanned=self._scanned,
        )

    # Scanning and watching

    async def _initial_scan(self, event_name: str) -> None:
        found = await asyncio.to_thread(scan_folder, self._root)
        if "." in found.unreadable:
            raise WatchError(f"FindMe cannot read the folder {self._root}. Check its permissions.")
        for folder in found.unreadable:
            self._warn(f"! The folder {folder} cannot be read; its photos are skipped.")
        self._manifest.keep_files(found.files.keys())
        self._scanned = True
        mode = "Sending the photos in" if self._options.once else "Watching"
        self._display.title(
            f"{mode} {self._root} → “{event_name}” (event {self._options.event_id}) on "
            f"{self._options.server}"
        )
        for relative, signature in sorted(found.files.items()):
            self._display.seen.add(relative)
            sha256 = self._manifest.known_hash(relative, signature)
            if sha256 is not None and self._manifest.answer_for(sha256) is not None:
                self._route(Upload(relative, signature, sha256), announce=False)
            else:
                self._tracker.touch(relative)
        self._manifest_changed.set()
        tally = self._display.tally
        rejected = f"{tally['rejected']} rejected earlier, " if tally["rejected"] else ""
        self._display.line(
            f"{_plural(len(found.files), 'file')} in the folder: {tally['already']} sent "
            f"earlier, {rejected}{len(self._tracker)} to check and send."
            + ("" if self._options.once else " Press Ctrl-C to stop.")
        )

    async def _watch_loop(self) -> None:
        async for changes in watchfiles.awatch(
            self._root,
            watch_filter=self._wanted,
            stop_event=self._stopping,
            force_polling=True if self._options.poll else None,
            step=50,
            recursive=True,
            ignore_permission_denied=True,
        ):
            for change, raw in changes:
                self._on_change(change, raw)

    def _relative(self, raw: str) -> PurePosixPath | None:
        try:
            return PurePosixPath(Path(raw).relative_to(self._root).as_posix())
        except ValueError:
            return None

    def _wanted(self, change: watchfiles.Change, raw: str) -> bool:
        relative = self._relative(raw)
        return relative is not None and relative.parts != () and not is_ignored(relative)

    def _on_change(self, change: watchfiles.Change, raw: str) -> None:
        relative = self._relative(raw)
        if relative is None:
            return
        name = relative.as_posix()
        if change == watchfiles.Change.deleted:
            self._tracker.forget_under(name)
            self._handled.pop(name, None)
        elif (self._root / name).is_dir():
            # A folder moved in arrives as one event: look inside it.
            self._spawn(self._scan_below(name))
        elif is_candidate(relative):
            self._tracker.touch(name)

    async def _scan_below(self, folder: str) -> None:
        found = await asyncio.to_thread(scan_folder, self._root, folder)
        self._touch_changed(found.files)

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(RESCAN_S)
            found = await asyncio.to_thread(scan_folder, self._root)
            if "." in found.unreadable:
                self._warn(f"! The folder {self._root} cannot be read any more (card removed?).")
            self._touch_changed(found.files)

    def _touch_changed(self, files: dict[str, Signature]) -> None:
        in_hand = {relative for paths in self._in_hand.values() for relative in paths}
        for relative, signature in files.items():
            if relative in in_hand or signature in (
                self._handled.get(relative),
                self._unreadable.get(relative),
            ):
                continue
            self._tracker.touch(relative)

    # Settling, hashing, deduplicating

    async def _settle_loop(self) -> None:
        tick_s = min(0.5, max(0.05, self._options.settle_s / 4))
        while True:
            if self._tracker:
                observed = await asyncio.to_thread(_stat_all, self._root, self._tracker.names())
                for relative, signature in observed.items():
                    if signature is None:
                        continue
                    self._display.seen.add(relative)
                    if self._handled.get(relative) == signature:
                        self._tracker.forget(relative)  # touched, not changed
                ready = self._tracker.observe(observed, time.monotonic())
                for start in range(0, len(ready), HASH_GROUP):
                    await self._admit(ready[start : start + HASH_GROUP])
            if self._options.once and self._finished():
                self._stopping.set()
                return
            await asyncio.sleep(tick_s)

    def _finished(self) -> bool:
        return not self._tracker and self._uploader.idle

    async def _admit(self, ready: list[Upload]) -> None:
        known: list[Upload] = []
        unknown: list[Upload] = []
        for upload in ready:
            sha256 = self._manifest.known_hash(upload.relative, upload.signature)
            if sha256 is None:
                unknown.append(upload)
            else:
                known.append(Upload(upload.relative, upload.signature, sha256))
        hashed = await asyncio.to_thread(_hash_all, self._root, unknown) if unknown else []
        for upload, result in zip(unknown, hashed, strict=True):
            if isinstance(result, OSError):
                self._unreadable[upload.relative] = upload.signature
                self._warn(
                    f"! {upload.relative} cannot be read ({result.strerror}); it is sent once "
                    "it can be.",
                    key=upload.relative,
                )
            elif result is None:
                self._tracker.touch(upload.relative)  # changed while read: wait again
            else:
                known.append(result)
        for upload in known:
            self._unreadable.pop(upload.relative, None)
            self._route(upload, announce=True)

    def _route(self, upload: Upload, *, announce: bool) -> None:
        """Skip bytes already answered for, join bytes already on their way, or queue."""
        relative, sha256 = upload.relative, upload.sha256
        self._manifest.remember_hash(relative, upload.signature, sha256)
        answer = self._manifest.answer_for(sha256)
        if answer is not None:
            self._manifest.add_path(sha256, relative)
            self._handled[relative] = upload.signature
            kind = "rejected" if answer.status == "rejected" else "already"
            # A touch or a rewrite with the same bytes is no news; a copy or a rename is.
            if self._count(relative, kind=kind, sha256=sha256) and (kind == "rejected" or announce):
                shown = "rejected_earlier" if kind == "rejected" else kind
                self._display.outcome(relative, answer, kind=shown)
        elif sha256 in self._in_hand:
            self._in_hand[sha256][relative] = upload.signature
        else:
            self._in_hand[sha256] = {relative: upload.signature}
            self._uploader.put(upload)
        self._manifest_changed.set()

    def _count(self, relative: str, *, kind: str, sha256: str) -> bool:
        """Count an outcome; False if it is about bytes this path was already counted for.

        Sent and duplicate count answers; already sent and rejected count the paths that are
        so now (a rejected file that changes and is then sent stops counting as rejected).
        """
        previous = self._kind.get(relative)
        if previous is not None:
            if previous[1] == sha256:
                return False
            if previous[0] in ("already", "rejected"):
                self._display.tally[previous[0]] -= 1
        self._kind[relative] = (kind, sha256)
        self._display.tally[kind] += 1
        return True

    def _changed(self, upload: Upload) -> None:
        """The file is gone or changed since it settled: look at its paths again."""
        for relative in self._in_hand.pop(upload.sha256, {}):
            self._tracker.touch(relative)

    def _answered(self, upload: Upload, answer: Answer) -> None:
        paths = self._in_hand.pop(upload.sha256, {upload.relative: upload.signature})
        paths.setdefault(upload.relative, upload.signature)
        self._manifest.record(
            upload.sha256, answer, paths=paths.keys(), size_bytes=upload.size_bytes
        )
        for relative, signature in paths.items():
            self._manifest.remember_hash(relative, signature, upload.sha256)
            self._handled[relative] = signature
            if relative == upload.relative:
                kind = "sent" if answer.status == "created" else answer.status
            else:
                kind = "rejected" if answer.status == "rejected" else "already"
            self._count(relative, kind=kind, sha256=upload.sha256)
            self._display.outcome(relative, answer, kind=kind)
        self._manifest_changed.set()

    # Housekeeping

    async def _unless_stopped(self, work: Awaitable[T]) -> T:
        """The result of work, unless the watcher is told to stop first."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stopping.wait())
        waiters: set[asyncio.Future[Any]] = {task, stopped}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                task.add_done_callback(_quietly)
        if task.done() and not task.cancelled():
            return task.result()
        raise _Stopped()

    async def _autosave_loop(self) -> None:
        failed = ""
        while True:
            await self._manifest_changed.wait()
            self._manifest_changed.clear()
            if not self._manifest.dirty:
                continue
            started = time.monotonic()
            try:
                await self._manifest.save()
                failed = ""
            except OSError as error:
                if error.strerror != failed:
                    failed = error.strerror or str(error)
                    self._display.line(
                        f"! The manifest {self._manifest.path} cannot be written ({failed}). "
                        "Uploads go on; after a restart the server will recognise what it has.",
                        style="red",
                    )
            # Answers that arrive meanwhile share the next write; a big manifest writes less often.
            await asyncio.sleep(max(0.2, 5 * (time.monotonic() - started)))

    async def _display_loop(self) -> None:
        while True:
            self._display.refresh(pending=self.pending())
            await asyncio.sleep(0.25)

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one part of the watcher; its failure stops the whole watcher."""
        try:
            await work
        except _Stopped:
            pass
        except Exception as error:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if not isinstance(error, WatchError):
            logger.error("watcher failure", exc_info=error, extra={"action": "watch_failed"})
            error = WatchError(
                f"The watcher stopped on an unexpected error ({error!r}). Start it again; "
                "nothing already sent is sent twice."
            )
        if self._fatal is None:
            self._fatal = error
        self._stopping.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guard(work))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _warn(self, message: str, *, key: str | None = None) -> None:
        key = key or message
        if key not in self._warned:
            self._warned.add(key)
            self._display.line(message, style="yellow")

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._on_signal)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)

    def _on_signal(self) -> None:
        if self._stopping.is_set():
            self._force.set()
            return
        self._interrupted = True
        self._stopping.set()


# --- The command -----------------------------------------------------------------------------


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
    add("--event", required=True, type=_positive_int, metavar="ID", help="the event's number")
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
                    display.refresh(pending=watcher.pending())
            if not outcome.scanned:
                display.line("Stopped before the server answered; nothing was sent.")
                return outcome
            verb = "Stopped" if outcome.interrupted else "Done"
            display.line(f"{verb}. {display.summary()}", style="bold")
            if outcome.unsent:
                display.line(
                    f"{_plural(outcome.unsent, 'photo')} not sent yet; they will be when the "
                    "watcher runs again."
                )
            if outcome.rejected:
                display.line(
                    f"{_plural(outcome.rejected, 'file')} rejected (see above). Fix or remove "
                    "them; a changed file is sent again.",
                    style="red",
                )
            return outcome


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
        event_id=args.event,
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


def _quietly(task: asyncio.Future[Any]) -> None:
    """Mark the outcome of an abandoned task as seen (its exception no longer matters)."""
    if not task.cancelled():
        task.exception()


def _human_bytes(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB else f"{max(size // 1024, 1)} KB"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


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
