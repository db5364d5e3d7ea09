"""`findme watch`: send the photos that land in a folder to an event, each once, when complete.

The pieces, in order: which paths count (`is_candidate`), when a file is complete
(`SettleTracker`), what was sent where (`Manifest`), where each file stands between the two
(`Ledger`), what changed in the folder (`follow_changes`), one request to the server
(`EventClient`), retries (`with_retries`), what the photographer sees (`Display`), batches and
parallel requests (`Uploader`), and the loop tying them together (`FolderWatcher`).
"""

from __future__ import annotations

from findme.watcher.command import add_watch_command

__all__ = ["add_watch_command"]
