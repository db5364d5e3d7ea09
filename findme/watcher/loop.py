"""The loop: scan, watch, settle, hash, deduplicate and send."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import watchfiles

from findme.watcher.client import EventClient
from findme.watcher.display import Display, _plural
from findme.watcher.errors import GaveUp, WatchError, _Stopped
from findme.watcher.files import (
    SettleTracker,
    Signature,
    Upload,
    _hash_all,
    _stat_all,
    is_candidate,
    is_ignored,
    scan_folder,
)
from findme.watcher.manifest import Answer, Manifest
from findme.watcher.options import WatchOptions
from findme.watcher.uploader import T, Uploader, with_retries

logger = logging.getLogger(__name__)

RESCAN_S = 30.0  # a full rescan catches what the OS did not report (network shares, overflows)
GRACE_S = 15.0  # how long Ctrl-C waits for requests already on the wire
HASH_GROUP = 16  # files hashed per worker-thread hop, so the first uploads start early


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


def _quietly(task: asyncio.Future[Any]) -> None:
    """Mark the outcome of an abandoned task as seen (its exception no longer matters)."""
    if not task.cancelled():
        task.exception()
