"""What changes in the folder: the OS's notifications and periodic rescans, told to the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import watchfiles

from findme.watcher.display import Display
from findme.watcher.files import ScanResult, is_candidate, is_ignored, relative_path, scan_folder
from findme.watcher.ledger import Ledger

RESCAN_S = 30.0  # a full rescan catches what the OS did not report (network shares, overflows)


async def follow_changes(
    root: Path,
    ledger: Ledger,
    *,
    poll: bool,
    stopping: asyncio.Event,
    spawn: Callable[[Coroutine[Any, Any, object]], None],
) -> None:
    """Tell the ledger of each change the OS reports under root, until stopping is set.

    spawn runs the scan of a folder moved in, so that notifications keep flowing meanwhile.
    """

    def wanted(change: watchfiles.Change, raw: str) -> bool:
        relative = relative_path(root, raw)
        return relative is not None and relative.parts != () and not is_ignored(relative)

    async for changes in watchfiles.awatch(
        root,
        watch_filter=wanted,
        stop_event=stopping,
        force_polling=True if poll else None,
        step=50,
        recursive=True,
        ignore_permission_denied=True,
    ):
        for change, raw in changes:
            relative = relative_path(root, raw)
            if relative is None:
                continue
            name = relative.as_posix()
            if change == watchfiles.Change.deleted:
                ledger.forget(name)
            elif (root / name).is_dir():
                # A folder moved in arrives as one event: look inside it.
                spawn(recheck(root, ledger, below=name))
            elif is_candidate(relative):
                ledger.touch(name)


async def recheck(root: Path, ledger: Ledger, *, below: str = "") -> ScanResult:
    """Scan root (or a folder below it); the files changed since last looked at settle again."""
    found = await asyncio.to_thread(scan_folder, root, below)
    ledger.recheck(found.files)
    return found


async def rescan_forever(root: Path, ledger: Ledger, *, display: Display) -> None:
    while True:
        await asyncio.sleep(RESCAN_S)
        found = await recheck(root, ledger)
        if "." in found.unreadable:
            display.warn_once(f"! The folder {root} cannot be read any more (card removed?).")
