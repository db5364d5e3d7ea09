"""`findme watch`: send the photos that land in a folder to an event, each once, when complete.

The pieces, in order: which paths count (`is_candidate`), when a file is complete
(`SettleTracker`), what was sent where (`Manifest`), one request to the server (`EventClient`),
what the photographer sees (`Display`), batches, parallel requests and retries (`Uploader`), and
the loop tying them together (`FolderWatcher`).
"""

from __future__ import annotations

from findme.watcher.command import add_watch_command

__all__ = ["add_watch_command"]
