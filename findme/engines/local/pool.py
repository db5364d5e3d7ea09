"""The local engine's process pool: the face code runs in processes, never on the event loop.

dlib holds the GIL while it works, so each engine process loads the models once and takes one
photo at a time; a process that dies is replaced, and so is one that served many photos. A
photo reaches its process in a memory file (handoff.py) and is decoded there for its faces and
its grid thumbnail alike.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import TypeVar

from findme.engines.local import descriptor_net
from findme.engines.local.detectors import DEFAULT_DETECTOR, DEFAULT_MIN_SCORE, available_detector
from findme.engines.local.faces import (
    FaceAnalysis,
    UnreadableImage,
    analyse_photo,
    analyse_selfie,
    models_dir,
    photo_thumbnail,
    prepare_process,
)
from findme.engines.local.handoff import Handoff, HandoffRefused, call_with_photo
from findme.images import CorruptImage
from findme.settings import Settings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_THUMBNAIL_PX = Settings.thumbnail_px
# A lane's processes are replaced once they took this many calls each: the CNN's wheel leaks its
# 36 KB result buffer on every scan (~0.2 MB a 24 MP photo: four tiles and a coarse pass), so
# ~100 MB at most; a fresh process costs ~1 s of model loading, 0.2 % of 500 photos' time. Not
# with ProcessPoolExecutor's max_tasks_per_child: on Python 3.11 it can fail to replace a process
# that reached it, and the pool then hangs with calls queued (CPython gh-115634).
_TASKS_PER_PROCESS = 500


def _init_worker(niceness: int, detector: str, min_score: float) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Face work is background work: the web process and the database come first for the CPU,
    # so pages stay quick while a mass upload is processed.
    os.nice(niceness)
    _exit_with_parent(os.getppid())
    prepare_process(detector, min_score)


def _exit_with_parent(parent_pid: int) -> None:
    """If the server is killed (SIGKILL, out of memory), its engine processes go too.

    Without this they wait forever on the pool's queue, each holding the models in memory.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_pid() -> int:
    # Long enough that one ready worker cannot take every warm-up call.
    time.sleep(0.05)
    return os.getpid()


class LocalRecognizer:
    """Runs the face code in pools of processes that each load the dlib models once.

    The bulk lane (`processes`, at `niceness`) takes photos; the urgent lane
    (`urgent_processes`, at the server's own CPU priority) takes selfies, which someone waits
    for on a page, and the first photos of a batch while it is free, so the first matches show
    while the rest of the batch still pours in (`BatchHeads`).
    """

    def __init__(
        self,
        *,
        processes: int,
        min_face_px: int,
        thumbnail_px: int = DEFAULT_THUMBNAIL_PX,
        niceness: int = 10,
        urgent_processes: int = 0,
        detector: str = DEFAULT_DETECTOR,
        min_score: float = DEFAULT_MIN_SCORE,
    ) -> None:
        self.min_face_px = min_face_px
        self.thumbnail_px = thumbnail_px
        # Resolved here, once: a "cnn" that cannot run fails at startup, an "auto" that falls
        # back to HOG warns once, and every worker process uses the same detector.
        self.detector_name = available_detector(detector)
        self.min_score = min_score
        handoff = Handoff()
        self._bulk = _Lane(
            "bulk", processes, niceness, self.detector_name, min_score, handoff=handoff
        )
        self._urgent = (
            _Lane("urgent", urgent_processes, 0, self.detector_name, min_score, handoff=handoff)
            if urgent_processes
            else None
        )

    async def __aenter__(self) -> LocalRecognizer:
        # Fail at startup with a sentence, not in every worker: a missing model folder, or a
        # descriptor model that is not the network expected (read once more here, ~0.1 s).
        descriptor_net.load(models_dir() / descriptor_net.MODEL_FILE)
        for lane in self._lanes():
            lane.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.gather(*(lane.close() for lane in self._lanes()))

    async def warm_up(self) -> None:
        """Start every worker process and load its models, so the first photo is not slow."""
        started = time.perf_counter()
        lanes = self._lanes()
        await asyncio.gather(*(lane.warm_up() for lane in lanes))
        logger.info(
            "Face recognition ready in %s (%.1f s)",
            " and ".join(f"{lane.processes} {lane.name} processes" for lane in lanes),
            time.perf_counter() - started,
            extra={"action": "recognizer_warm_up"},
        )

    async def analyse_photo(self, data: bytes, *, urgent: bool = False) -> FaceAnalysis:
        """The photo's faces and its grid thumbnail, from one decode. An `urgent` photo takes
        the urgent lane when it is free, and otherwise the bulk lane rather than a place in a
        queue behind another urgent photo."""
        lane = self._bulk
        if urgent and self._urgent is not None and self._urgent.free:
            lane = self._urgent
        return await self._decode_photo(
            lane,
            data,
            functools.partial(
                analyse_photo,
                min_face_px=self.min_face_px,
                thumbnail_px=self.thumbnail_px,
                detector=self.detector_name,
                min_score=self.min_score,
            ),
        )

    async def make_thumbnail(self, data: bytes) -> bytes:
        """A photo's grid thumbnail alone (the cloud engine finds the faces)."""
        return await self._decode_photo(
            self._bulk, data, functools.partial(photo_thumbnail, size_px=self.thumbnail_px)
        )

    async def _decode_photo(self, lane: _Lane, data: bytes, function: Callable[[bytes], _T]) -> _T:
        """Run a function that decodes an uploaded photo. The upload checked its header only,
        so pixels that cannot be decoded show here, as CorruptImage: the job fails with the
        sentence its photographer sees on the event page."""
        try:
            return await lane.run_on_photo(function, data)
        except UnreadableImage as error:
            logger.warning(
                "a photo cannot be decoded: %s", error, extra={"action": "photo_undecodable"}
            )
            raise CorruptImage() from None

    async def analyse_selfie(self, data: bytes) -> FaceAnalysis:
        """A selfie's faces, in the urgent lane where there is one: its person is waiting."""
        return await (self._urgent or self._bulk).run_on_photo(
            functools.partial(
                analyse_selfie, detector=self.detector_name, min_score=self.min_score
            ),
            data,
        )

    def _lanes(self) -> list[_Lane]:
        return [self._bulk] if self._urgent is None else [self._bulk, self._urgent]


class _Lane:
    """A pool of engine processes at one CPU priority: replaced by a fresh one when one of its
    processes dies, and once its processes took `tasks_per_process` calls each."""

    def __init__(
        self,
        name: str,
        processes: int,
        niceness: int,
        detector: str,
        min_score: float,
        *,
        tasks_per_process: int = _TASKS_PER_PROCESS,
        handoff: Handoff | None = None,
    ) -> None:
        self.name = name
        self.processes = processes
        self._initargs = (niceness, detector, min_score)
        self._tasks_per_process = tasks_per_process
        self._handoff = handoff or Handoff()
        self._pool: ProcessPoolExecutor | None = None
        self._calls_left = 0
        self._running = 0

    @property
    def free(self) -> bool:
        """Whether a process of the lane would take a call at once."""
        return self._running < self.processes

    def open(self) -> None:
        self._pool = self._new_pool()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Waiting for a running call to finish must not block the event loop.
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def warm_up(self) -> None:
        seen: set[int] = set()
        while len(seen) < self.processes:
            calls = [self.run(_worker_pid) for _ in range(self.processes)]
            seen.update(await asyncio.gather(*calls))

    def _new_pool(self) -> ProcessPoolExecutor:
        self._calls_left = self.processes * self._tasks_per_process
        # The processes are the parallelism: OpenBLAS threads of their own (the descriptor
        # network's matrix products) would spin beside them, nearly doubling a face's CPU.
        # OpenBLAS reads this as numpy loads, so it is set for the processes before they start.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=self._initargs,
        )

    def _next_pool(self) -> ProcessPoolExecutor:
        """The pool the next call goes to: a fresh one once this one has had its calls."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("LocalRecognizer is not open: use it as `async with`.")
        if self._calls_left <= 0:
            # Its processes finish the calls they were given, then exit.
            pool.shutdown(wait=False)
            pool = self._pool = self._new_pool()
        self._calls_left -= 1
        return pool

    async def run(self, call: Callable[[], _T]) -> _T:
        pool = self._next_pool()
        self._running += 1
        try:
            return await self._submit(pool, call)
        finally:
            self._running -= 1

    async def run_on_photo(self, function: Callable[[bytes], _T], data: bytes) -> _T:
        """`function(data)` in an engine process, the photo handed over by `Handoff`."""
        # Busy from the first moment, while the photo is still being handed over; the pool is
        # taken only then, since the lane may have replaced it in the meantime.
        self._running += 1
        try:
            async with self._handoff.source(data) as source:
                try:
                    return await self._submit(
                        self._next_pool(), functools.partial(call_with_photo, source, function)
                    )
                except HandoffRefused as error:
                    self._handoff.refused(error)
            return await self._submit(self._next_pool(), functools.partial(function, data))
        finally:
            self._running -= 1

    async def _submit(self, pool: ProcessPoolExecutor, call: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, call)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): start a fresh pool and try once more.
            if self._pool is pool:
                logger.warning(
                    "A face recognition process died; restarting the %s pool",
                    self.name,
                    extra={"action": "recognizer_restart"},
                )
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            if self._pool is None:
                raise
            return await loop.run_in_executor(self._next_pool(), call)
