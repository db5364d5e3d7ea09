"""Face recognition engines behind one interface (`findme.engines.base.Engine`).

Each engine module has `open_engine(stack, settings, db=..., storage=..., on_matches_changed=...)`,
chosen by FINDME_RECOGNIZER. A new engine is one new module and one line in `ENGINES`.
"""

from __future__ import annotations

import importlib
from contextlib import AsyncExitStack

from findme.db import Database
from findme.engines.base import Engine, MatchesChanged
from findme.settings import Settings
from findme.storage import PhotoStorage

__all__ = ["ENGINES", "Engine", "open_engine"]

ENGINES = {"local": "findme.engines.local", "rekognition": "findme.engines.rekognition"}


async def open_engine(
    stack: AsyncExitStack,
    settings: Settings,
    *,
    db: Database,
    storage: PhotoStorage,
    on_matches_changed: MatchesChanged,
) -> Engine:
    module = importlib.import_module(ENGINES[settings.recognizer])
    engine: Engine = await module.open_engine(
        stack, settings, db=db, storage=storage, on_matches_changed=on_matches_changed
    )
    return engine
