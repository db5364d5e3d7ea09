"""Which files, and when they are complete."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MB = 1024 * 1024
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", "~")


def is_ignored(relative: PurePosixPath) -> bool:
    """Hidden files and folders (the manifest among them) and temporary files are never sent."""
    return any(part.startswith(".") for part in relative.parts) or relative.name.lower().endswith(
        TEMPORARY_SUFFIXES
    )


def is_candidate(relative: PurePosixPath) -> bool:
    """A photo to send: a supported image extension, neither hidden nor temporary."""
    return not is_ignored(relative) and relative.suffix.lower() in CONTENT_TYPES


def relative_path(root: Path, raw: str) -> PurePosixPath | None:
    """raw's path inside root (empty for root itself); None when it is not inside root."""
    try:
        return PurePosixPath(Path(raw).relative_to(root).as_posix())
    except ValueError:
        return None


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

    def observe(self, observed: Mapping[str, Signature | None], now: float) -> list[Upload]:
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


def stat_all(root: Path, names: list[str]) -> dict[str, Signature | None]:
    """Each file's signature; None for one that is gone or no longer a regular file."""
    found: dict[str, Signature | None] = {}
    for name in names:
        try:
            info = (root / name).stat()
        except OSError:
            found[name] = None
            continue
        found[name] = Signature.of(info) if stat.S_ISREG(info.st_mode) else None
    return found


def hash_all(root: Path, uploads: list[Upload]) -> list[Upload | OSError | None]:
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


def read_all(root: Path, uploads: list[Upload]) -> list[bytes | None]:
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
