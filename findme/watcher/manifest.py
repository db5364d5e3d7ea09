"""The manifest: what was sent where."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from findme.watcher.errors import WatchError
from findme.watcher.files import Signature

MANIFEST_NAME = ".findme-manifest.json"
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

    async def autosave(self, changed: asyncio.Event, *, on_failure: Callable[[str], None]) -> None:
        """Save after each change, until cancelled; on_failure(reason) once per new failure."""
        failed = ""
        while True:
            await changed.wait()
            changed.clear()
            if not self.dirty:
                continue
            started = time.monotonic()
            try:
                await self.save()
                failed = ""
            except OSError as error:
                if error.strerror != failed:
                    failed = error.strerror or str(error)
                    on_failure(failed)
            # Changes made meanwhile share the next write; a big manifest writes less often.
            await asyncio.sleep(max(0.2, 5 * (time.monotonic() - started)))

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
