"""The ledger: where each file of the folder stands, from settling to the server's answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from findme.watcher.files import SettleTracker, Signature, Upload
from findme.watcher.manifest import Answer, Manifest


@dataclass(frozen=True)
class Notice:
    """One file's fate to show; kind is sent, duplicate, rejected, already or rejected_earlier."""

    relative: str
    answer: Answer
    kind: str


@dataclass(frozen=True)
class Steps:
    """What follows from an update: uploads to queue and fates to show, in order."""

    send: tuple[Upload, ...] = ()
    show: tuple[Notice, ...] = ()


@dataclass(frozen=True)
class Figures:
    """The counts the photographer sees: paths seen, and paths per outcome."""

    seen: int = 0
    sent: int = 0
    duplicate: int = 0
    already: int = 0
    rejected: int = 0


class Ledger:
    """Each path's signature, hash and answer: settling, in hand (queued or sending), answered.

    Synchronous; its only side effects are on the manifest in memory. The loop stats, reads,
    sends and saves, and tells the ledger what it found.
    """

    def __init__(self, manifest: Manifest, *, settle_s: float) -> None:
        self._manifest = manifest
        self._settling = SettleTracker(settle_s=settle_s)
        self._handled: dict[str, Signature] = {}  # path → signature its answer is for
        self._in_hand: dict[str, dict[str, Signature]] = {}  # hash → paths, queued or sending
        self._unreadable: dict[str, Signature] = {}  # path → signature that could not be read
        self._counted: dict[str, tuple[str, str]] = {}  # path → (kind, hash) in the tally
        self._tally: Counter[str] = Counter()
        self._seen: set[str] = set()

    @property
    def settling(self) -> int:
        """Files waiting to be complete (or to be looked at again)."""
        return len(self._settling)

    @property
    def unreadable(self) -> int:
        """Files that could not be read, left alone until they change."""
        return len(self._unreadable)

    def figures(self) -> Figures:
        tally = self._tally
        return Figures(
            seen=len(self._seen),
            sent=tally["sent"],
            duplicate=tally["duplicate"],
            already=tally["already"],
            rejected=tally["rejected"],
        )

    def start(self, files: Mapping[str, Signature]) -> Steps:
        """Take the first scan: files answered for are done (shown if rejected), others settle."""
        self._manifest.keep_files(files.keys())
        routed: list[Upload | Notice | None] = []
        for relative, signature in sorted(files.items()):
            self._seen.add(relative)
            sha256 = self._manifest.known_hash(relative, signature)
            if sha256 is not None and self._manifest.answer_for(sha256) is not None:
                routed.append(self._route(Upload(relative, signature, sha256), announce=False))
            else:
                self._settling.touch(relative)
        return _steps(routed)

    def touch(self, relative: str) -> None:
        """The file was written (or may have been): it settles before it is looked at."""
        self._settling.touch(relative)

    def forget(self, relative: str) -> None:
        """The path, a file or a folder, was deleted."""
        self._settling.forget_under(relative)
        self._handled.pop(relative, None)

    def recheck(self, files: Mapping[str, Signature]) -> None:
        """Take a later scan: files changed since they were last looked at settle again."""
        in_hand = {relative for paths in self._in_hand.values() for relative in paths}
        for relative, signature in files.items():
            if relative in in_hand or signature in (
                self._handled.get(relative),
                self._unreadable.get(relative),
            ):
                continue
            self._settling.touch(relative)

    def settling_paths(self) -> list[str]:
        return self._settling.names()

    def observe(self, observed: Mapping[str, Signature | None], now: float) -> list[Upload]:
        """Take one round of stats of the settling files; return those now complete."""
        for relative, signature in observed.items():
            if signature is None:
                continue
            self._seen.add(relative)
            if self._handled.get(relative) == signature:
                self._settling.forget(relative)  # touched, not changed
        return self._settling.observe(observed, now)

    def split_known(self, ready: Iterable[Upload]) -> tuple[list[Upload], list[Upload]]:
        """Complete files whose hash the manifest holds (filled in), and those to read."""
        known: list[Upload] = []
        unknown: list[Upload] = []
        for upload in ready:
            sha256 = self._manifest.known_hash(upload.relative, upload.signature)
            if sha256 is None:
                unknown.append(upload)
            else:
                known.append(Upload(upload.relative, upload.signature, sha256))
        return known, unknown

    def mark_unreadable(self, upload: Upload) -> None:
        """The file could not be read: rescans pass it over until its signature changes."""
        self._unreadable[upload.relative] = upload.signature

    def admit(self, hashed: Iterable[Upload]) -> Steps:
        """Take hashed files: skip bytes answered for, join bytes on their way, or send."""
        routed: list[Upload | Notice | None] = []
        for upload in hashed:
            self._unreadable.pop(upload.relative, None)
            routed.append(self._route(upload, announce=True))
        return _steps(routed)

    def changed(self, upload: Upload) -> None:
        """The file is gone or changed since it was hashed: its paths settle again."""
        for relative in self._in_hand.pop(upload.sha256, {}):
            self._settling.touch(relative)

    def answered(self, upload: Upload, answer: Answer) -> Steps:
        """Record the server's answer for upload's bytes under every path that has them."""
        paths = self._in_hand.pop(upload.sha256, {upload.relative: upload.signature})
        paths.setdefault(upload.relative, upload.signature)
        self._manifest.record(
            upload.sha256, answer, paths=paths.keys(), size_bytes=upload.size_bytes
        )
        shown: list[Notice] = []
        for relative, signature in paths.items():
            self._manifest.remember_hash(relative, signature, upload.sha256)
            self._handled[relative] = signature
            if relative == upload.relative:
                kind = "sent" if answer.status == "created" else answer.status
            else:
                kind = "rejected" if answer.status == "rejected" else "already"
            self._count(relative, kind=kind, sha256=upload.sha256)
            shown.append(Notice(relative, answer, kind))
        return Steps(show=tuple(shown))

    def _route(self, upload: Upload, *, announce: bool) -> Upload | Notice | None:
        """What to do with hashed bytes: the upload to send, the fate to show, or nothing."""
        relative, sha256 = upload.relative, upload.sha256
        self._manifest.remember_hash(relative, upload.signature, sha256)
        answer = self._manifest.answer_for(sha256)
        if answer is not None:
            self._manifest.add_path(sha256, relative)
            self._handled[relative] = upload.signature
            kind = "rejected" if answer.status == "rejected" else "already"
            # A touch or a rewrite with the same bytes is no news; a copy or a rename is.
            if self._count(relative, kind=kind, sha256=sha256) and (kind == "rejected" or announce):
                return Notice(relative, answer, "rejected_earlier" if kind == "rejected" else kind)
            return None
        if sha256 in self._in_hand:
            self._in_hand[sha256][relative] = upload.signature  # answered with the first
            return None
        self._in_hand[sha256] = {relative: upload.signature}
        return upload

    def _count(self, relative: str, *, kind: str, sha256: str) -> bool:
        """Count an outcome; False if it is about bytes this path was already counted for.

        Sent and duplicate count answers; already sent and rejected count the paths that are
        so now (a rejected file that changes and is then sent stops counting as rejected).
        """
        previous = self._counted.get(relative)
        if previous is not None:
            if previous[1] == sha256:
                return False
            if previous[0] in ("already", "rejected"):
                self._tally[previous[0]] -= 1
        self._counted[relative] = (kind, sha256)
        self._tally[kind] += 1
        return True


def _steps(routed: list[Upload | Notice | None]) -> Steps:
    send = tuple(item for item in routed if isinstance(item, Upload))
    show = tuple(item for item in routed if isinstance(item, Notice))
    return Steps(send=send, show=show)
