"""Amazon Rekognition as the engine: a client that makes the calls, an engine that decides them."""

from __future__ import annotations

from findme.engines.rekognition.engine import RekognitionEngine, open_engine

__all__ = ["RekognitionEngine", "open_engine"]
