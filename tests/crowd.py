"""The crowd photos (../shared/crowd) and how detections are scored against their marked faces."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.shared_faces import iou


def _crowd_dir() -> Path:
    """`FINDME_CROWD_DIR`, else `<repo>/../shared/crowd`, beside the shared faces."""
    default = Path(__file__).resolve().parents[2] / "shared" / "crowd"
    path = Path(os.environ.get("FINDME_CROWD_DIR") or default)
    if not (path / "manifest.json").is_file():
        pytest.fail(
            f"The crowd photos were not found: {path / 'manifest.json'} does not exist. Set "
            "FINDME_CROWD_DIR to the folder that holds them with their manifest.json (sources "
            "and licences in its SOURCE.md), e.g. FINDME_CROWD_DIR=/work/shared/crowd."
        )
    return path


CROWD_DIR = _crowd_dir()
# A detection is the marked face it overlaps by at least this much (intersection over union).
MATCH_IOU = 0.3
# Detections narrower than this share of the long side are neither found faces nor false ones:
# faces that small are below what the set marks (2 %), and crowds are full of them.
SMALLEST_COUNTED = 0.015

Box = Sequence[int]


def crowd_manifest() -> dict[str, Any]:
    """manifest.json: per photo its size, the faces to find and the faces that may be found."""
    photos: dict[str, Any] = json.loads((CROWD_DIR / "manifest.json").read_text())["photos"]
    return photos


def _inside(a: Box, b: Box) -> float:
    """The share of `a` that lies inside `b`."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return max(0, width) * max(0, height) / area if area else 0.0


@dataclass(frozen=True)
class Score:
    faces: int
    found: int
    false_boxes: tuple[tuple[int, ...], ...]
    missed: tuple[tuple[int, ...], ...]


def score(
    found: Iterable[Box], *, faces: Sequence[Box], ignore: Sequence[Box], long_side: int
) -> Score:
    """Which marked faces the detections found, and which detections are false faces."""
    matched: set[int] = set()
    false_boxes = []
    for box in found:
        best = max(range(len(faces)), key=lambda i: iou(box, faces[i]), default=None)
        if best is not None and iou(box, faces[best]) >= MATCH_IOU:
            matched.add(best)
        elif any(iou(box, g) >= MATCH_IOU or _inside(box, g) > 0.5 for g in ignore):
            continue
        elif box[2] - box[0] >= SMALLEST_COUNTED * long_side:
            false_boxes.append(tuple(box))
    missed = tuple(tuple(f) for i, f in enumerate(faces) if i not in matched)
    return Score(
        faces=len(faces), found=len(matched), false_boxes=tuple(false_boxes), missed=missed
    )


def scaled(info: dict[str, Any], factor: float) -> dict[str, Any]:
    """The manifest entry of a photo resized by `factor`."""

    def boxes(key: str) -> list[list[int]]:
        return [[round(v * factor) for v in box] for box in info[key]]

    return {
        "size": [round(v * factor) for v in info["size"]],
        "faces": boxes("faces"),
        "ignore": boxes("ignore"),
    }
