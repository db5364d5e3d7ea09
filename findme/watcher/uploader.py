"""Sending: batches and parallel requests, each retried until the server takes it."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from findme.watcher.client import EventClient
from findme.watcher.display import Display, human_bytes
from findme.watcher.errors import RequestRefused, Stopped
from findme.watcher.files import CONTENT_TYPES, Upload, read_all
from findme.watcher.manifest import Answer
from findme.watcher.options import WatchOptions
from findme.watcher.retries import with_retries


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
        if error is not None and not isinstance(error, Stopped):
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
        contents = await asyncio.to_thread(read_all, self._options.folder, batch)
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
                        f"! The server refuses requests of {human_bytes(size_bytes)}; sending "
                        f"at most {human_bytes(self._batch_bytes)} per request from now on.",
                        style="yellow",
                    )
                half = len(items) // 2
                await self._post(items[:half])
                await self._post(items[half:])
                return
            answers = [Answer(status="rejected", error=refused.error, detail=refused.detail)]
        for (upload, _), answer in zip(items, answers, strict=True):
            self._on_answer(upload, answer)
