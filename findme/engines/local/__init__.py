"""The local engine: dlib face descriptors computed in a pool of processes on this machine."""

from __future__ import annotations

from findme.engines.local.engine import LocalEngine, open_engine

__all__ = ["LocalEngine", "open_engine"]
