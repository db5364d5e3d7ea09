"""The settings of one `findme watch` run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from findme.watcher.files import MB


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
