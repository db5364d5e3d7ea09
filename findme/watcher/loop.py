"""The loop: the watcher's tasks, signals and stopping, around the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from findme.watcher.changes import follow_changes, rescan_forever
from findme.watcher.client import EventClient
from findme.watcher.display import Display, plural
from findme.watcher.errors import GaveUp, Stopped, WatchError
from findme.watcher.files import Upload, hash_all, scan_folder, stat_all
from findme.watcher.ledger import Figures, Ledger, Steps
from findme.watcher.manifest import Answer, Manifest
from findme.watcher.options import WatchOptions
from findme.watcher.retries import unless_stopped, with_retries
from findme.watcher.uploader import Uploader

logger = logging.getLogger(__name__)

GRACE_S = 15.0  # how long Ctrl-C waits for requests already on the wire
HASH_GROUP = 16  # files hashed per worker-thread hop, so the first uploads start early


@dataclass(frozen=True)
class Outcome:
    """How a run ended, for the command's report and exit code."""

    rejected: int
    unreadable: int
    unsent: int
    interrupted: bool
    scanned: bool


class FolderWatcher:
    """Run the scans, stats, reads and uploads the ledger calls for, and stop on a signal."""

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
        self._ledger = Ledger(manifest, settle_s=options.settle_s)
        self._uploader = Uploader(
            client,
            options=options,
            display=display,
            stopping=self._stopping,
            on_answer=self._answered,
            on_changed=self._ledger.changed,
            on_failure=self._fail,
        )
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._force = asyncio.Event()
        self._manifest_changed = asyncio.Event()
        self._fatal: BaseException | None = None
        self._interrupted = False
        self._scanned = False

    def pending(self) -> int:
        return self._ledger.settling + self._uploader.pending

    def figures(self) -> Figures:
        return self._ledger.figures()

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        tasks: list[asyncio.Task[None]] = []
        try:
            name = await unless_stopped(
                with_retries(
                    self._client.check_event,
                    display=self._display,
                    stopping=self._stopping,
                    give_up_after_s=self._options.give_up_after_s,
                ),
                stopping=self._stopping,
            )
            if not self._options.once:
                # The OS watch starts before the scan, so no file slips in between the two.
                follow = follow_changes(
                    self._root,
                    self._ledger,
                    poll=self._options.poll,
                    stopping=self._stopping,
                    spawn=self._spawn,
                )
                tasks.append(asyncio.create_task(self._guard(follow)))
                await asyncio.sleep(0)
            await self._initial_scan(name)
            autosave = self._manifest.autosave(self._manifest_changed, on_failure=self._unsaved)
            work = [self._settle_loop(), self._uploader.run(), autosave]
            work.append(self._display_loop())
            if not self._options.once:
                work.append(rescan_forever(self._root, self._ledger, display=self._display))
            tasks += [asyncio.create_task(self._guard(job)) for job in work]
            await self._stopping.wait()
        except Stopped:
            pass
        finally:
            for task in [*tasks, *self._side_tasks]:
                task.cancel()
            await asyncio.gather(*tasks, *self._side_tasks, return_exceptions=True)
            await self._uploader.finish(
                grace_s=GRACE_S if self._fatal is None else 0, force=self._force
            )
            self._remove_signal_handlers(loop)
            self._display.refresh(self.figures(), pending=self.pending())
            try:
                self._manifest.save_now()
            except OSError as error:
                self._display.line(
                    f"! The manifest could not be saved ({error.strerror}).", style="red"
                )
        if isinstance(self._fatal, GaveUp) and self.pending():
            raise GaveUp(
                f"{self._fatal.detail} {plural(self.pending(), 'photo')} not sent; run the "
                "command again later (nothing already sent is sent twice)."
            )
        if self._fatal is not None:
            raise self._fatal
        return Outcome(
            rejected=self.figures().rejected,
            unreadable=self._ledger.unreadable,
            unsent=self.pending(),
            interrupted=self._interrupted,
            scanned=self._scanned,
        )

    # Scanning

    async def _initial_scan(self, event_name: str) -> None:
        found = await asyncio.to_thread(scan_folder, self._root)
        if "." in found.unreadable:
            raise WatchError(f"FindMe cannot read the folder {self._root}. Check its permissions.")
        for folder in found.unreadable:
            self._display.warn_once(
                f"! The folder {folder} cannot be read; its photos are skipped."
            )
        self._scanned = True
        mode = "Sending the photos in" if self._options.once else "Watching"
        self._display.title(
            f"{mode} {self._root} → “{event_name}” (event {self._options.event_id}) on "
            f"{self._options.server}"
        )
        self._act(self._ledger.start(found.files))
        figures = self.figures()
        rejected = f"{figures.rejected} rejected earlier, " if figures.rejected else ""
        self._display.line(
            f"{plural(len(found.files), 'file')} in the folder: {figures.already} sent "
            f"earlier, {rejected}{self._ledger.settling} to check and send."
            + ("" if self._options.once else " Press Ctrl-C to stop.")
        )

    # Settling, hashing, deduplicating

    async def _settle_loop(self) -> None:
        tick_s = min(0.5, max(0.05, self._options.settle_s / 4))
        while True:
            if self._ledger.settling:
                paths = self._ledger.settling_paths()
                observed = await asyncio.to_thread(stat_all, self._root, paths)
                ready = self._ledger.observe(observed, time.monotonic())
                for start in range(0, len(ready), HASH_GROUP):
                    await self._admit(ready[start : start + HASH_GROUP])
            if self._options.once and self._finished():
                self._stopping.set()
                return
            await asyncio.sleep(tick_s)

    def _finished(self) -> bool:
        return not self._ledger.settling and self._uploader.idle

    async def _admit(self, ready: list[Upload]) -> None:
        known, unknown = self._ledger.split_known(ready)
        hashed = await asyncio.to_thread(hash_all, self._root, unknown) if unknown else []
        for upload, result in zip(unknown, hashed, strict=True):
            if isinstance(result, OSError):
                self._ledger.mark_unreadable(upload)
                self._display.warn_once(
                    f"! {upload.relative} cannot be read ({result.strerror}); it is sent once "
                    "it can be.",
                    key=upload.relative,
                )
            elif result is None:
                self._ledger.touch(upload.relative)  # changed while read: wait again
            else:
                known.append(result)
        self._act(self._ledger.admit(known))

    def _act(self, steps: Steps) -> None:
        for notice in steps.show:
            self._display.outcome(notice.relative, notice.answer, kind=notice.kind)
        for upload in steps.send:
            self._uploader.put(upload)
        self._manifest_changed.set()

    def _answered(self, upload: Upload, answer: Answer) -> None:
        self._act(self._ledger.answered(upload, answer))

    # Housekeeping

    def _unsaved(self, reason: str) -> None:
        self._display.line(
            f"! The manifest {self._manifest.path} cannot be written ({reason}). "
            "Uploads go on; after a restart the server will recognise what it has.",
            style="red",
        )

    async def _display_loop(self) -> None:
        while True:
            self._display.refresh(self.figures(), pending=self.pending())
            await asyncio.sleep(0.25)

    async def _guard(self, work: Coroutine[Any, Any, object]) -> None:
        """Run one part of the watcher; its failure stops the whole watcher."""
        try:
            await work
        except Stopped:
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

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(self._guard(work))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

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
