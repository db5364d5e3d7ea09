"""Where photo bytes live: one module per storage, chosen by FINDME_STORAGE.

Each storage module has `open_storage(stack, settings, db=...)`, which opens what the storage
needs on `stack` (closed with the process) and returns a `PhotoStorage`. A new storage is one new
module and one line in `STORAGES`.
"""

from __future__ import annotations

import importlib
from contextlib import AsyncExitStack

from findme.db import Database
from findme.settings import Settings
from findme.storage.base import CHUNK_BYTES, PhotoStorage

__all__ = ["CHUNK_BYTES", "STORAGES", "PhotoStorage", "open_storage"]

STORAGES = {"database": "findme.storage.database", "s3": "findme.storage.s3"}


async def open_storage(stack: AsyncExitStack, settings: Settings, *, db: Database) -> PhotoStorage:
    module = importlib.import_module(STORAGES[settings.storage])
    storage: PhotoStorage = await module.open_storage(stack, settings, db=db)
    return storage
