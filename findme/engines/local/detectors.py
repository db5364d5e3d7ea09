"""Face detectors of the local engine: libfacedetection's CNN (the default) and dlib's HOG.

Both find face boxes only; landmarks and descriptors stay dlib's (faces.py), so stored
descriptors and the match threshold do not depend on the detector. The CNN comes from the
`yuface` wheel (CPython 3.11 on x86-64 only); where it cannot be imported, `auto` falls back to
HOG with a warning. Measurements behind the constants: docs/RECOGNITION.md, "Detectors".
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import dlib
import numpy as np
from PIL import Image

from findme.errors import ConfigurationError

logger = logging.getLogger(__name__)

DETECTORS = ("auto", "cnn", "hog")
DEFAULT_DETECTOR = "auto"
# Scores are the CNN's confidence (0-1). On real crowd photos 0.7 kept 97 % of the faces with at
# most one false face per ten photos (docs/RECOGNITION.md); HOG has no comparable score and
# ignores it.
DEFAULT_MIN_SCORE = 0.7

# HOG scans an 80 px window: the smallest face wanted lands at 80 px (see photo_scan_scale).
HOG_RELIABLE_FACE_PX = 80
# The CNN finds every face of the shared set from 24 px wide (20 px: 23 of 24); crowd faces
# (profiles, masks) need a little more, and 32 px is what a 1600 px scan gives a face of
# 2 % of the long side.
CNN_RELIABLE_FACE_PX = 32
# Above ~400 px in the scanned image the CNN's largest anchors no longer cover a face: it finds
# parts of it (an eye, a mouth) instead. Larger faces are left to a coarse pass.
CNN_LARGEST_FACE_PX = 400
# Neither detector scans a photo smaller than this on its long side (nor upscales to reach it),
# so a web-sized photo keeps faces of 1/50 (CNN) or 1/20 (HOG) of its long side.
MIN_SCAN_PX = 1600
# Upscaling to honour a tiny `min_face_px` stops here: beyond, the scan would not fit in memory.
MAX_UPSCALE = 2.0
# The coarse pass of the CNN: faces of 6-60 % of the long side, at the cost of a 640 px scan.
CNN_COARSE_SCAN_PX = 640
# Scans larger than this are cut into overlapping tiles: the CNN needs ~45 bytes per pixel
# (100 MB at 1600x1067, 720 MB at 4800x3200) and its boxes are 16-bit.
CNN_TILE_PX = 2048
# Selfies are close-ups: HOG finds a face of 1/13 of a 1024 px scan; the CNN, at 640 px, faces
# from 1/20 to 3/5 of the long side.
HOG_SELFIE_SCAN_PX = 1024
CNN_SELFIE_SCAN_PX = 640


@dataclass(frozen=True)
class Detection:
    # left, top, right, bottom in the pixels of the image given to `detect`, inside it
    box: tuple[int, int, int, int]
    # the detector's confidence, 0-1 (HOG: its SVM margin)
    score: float


class Detector(Protocol):
    name: str
    # width of the smallest face (in scanned pixels) the detector reliably finds
    reliable_face_px: int

    def photo_scale(self, width: int, height: int, *, min_face_px: int) -> float:
        """The scale at which a photo of this size is scanned to find faces of `min_face_px`."""
        ...

    def selfie_scale(self, width: int, height: int) -> float:
        """The scale at which a selfie of this size is scanned."""
        ...

    def detect(self, pixels: Image.Image, *, scale: float) -> list[Detection]:
        """Faces in `pixels` (RGB), scanned at `scale` of its size; boxes in its own pixels."""
        ...


def photo_scan_scale(width: int, height: int, *, min_face_px: int) -> float:
    """The scale at which HOG scans an event photo so faces of `min_face_px` are found."""
    return _scan_scale(width, height, min_face_px=min_face_px, reliable_px=HOG_RELIABLE_FACE_PX)


def cnn_scan_scale(width: int, height: int, *, min_face_px: int) -> float:
    """The scale at which the CNN scans an event photo so faces of `min_face_px` are found."""
    return _scan_scale(width, height, min_face_px=min_face_px, reliable_px=CNN_RELIABLE_FACE_PX)


def _scan_scale(width: int, height: int, *, min_face_px: int, reliable_px: int) -> float:
    wanted = reliable_px / min_face_px
    small_photo = min(1.0, MIN_SCAN_PX / max(width, height))
    return min(max(wanted, small_photo), MAX_UPSCALE)


class HogDetector:
    """dlib's frontal HOG detector (upsample 0) on a grey copy: the engine's former detector."""

    name = "hog"
    reliable_face_px = HOG_RELIABLE_FACE_PX

    def __init__(self) -> None:
        self._detector: Any = dlib.get_frontal_face_detector()

    def photo_scale(self, width: int, height: int, *, min_face_px: int) -> float:
        return photo_scan_scale(width, height, min_face_px=min_face_px)

    def selfie_scale(self, width: int, height: int) -> float:
        return min(1.0, HOG_SELFIE_SCAN_PX / max(width, height))

    def detect(self, pixels: Image.Image, *, scale: float) -> list[Detection]:
        # Luminance: the same faces as RGB on the shared set, 30 % faster.
        gray = _resized(pixels.convert("L"), scale)
        rects, scores, _ = self._detector.run(np.asarray(gray), 0, 0.0)
        back = (pixels.width / gray.width, pixels.height / gray.height)
        found = []
        for rect, score in zip(rects, scores, strict=True):
            box = _clipped(
                (rect.left(), rect.top(), rect.right(), rect.bottom()), back, pixels.size
            )
            if box is not None:
                found.append(Detection(box=box, score=float(score)))
        return found


class CnnDetector:
    """libfacedetection's CNN (the `yuface` wheel): profiles, masks and sunglasses too."""

    name = "cnn"
    reliable_face_px = CNN_RELIABLE_FACE_PX

    def __init__(self, *, min_score: float = DEFAULT_MIN_SCORE) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ConfigurationError(f"The detector's minimum score must be 0-1, not {min_score}.")
        self.min_score = min_score
        self._yuface = _import_yuface()

    def photo_scale(self, width: int, height: int, *, min_face_px: int) -> float:
        return cnn_scan_scale(width, height, min_face_px=min_face_px)

    def selfie_scale(self, width: int, height: int) -> float:
        return min(1.0, CNN_SELFIE_SCAN_PX / max(width, height))

    def detect(self, pixels: Image.Image, *, scale: float) -> list[Detection]:
        rgb = pixels if pixels.mode == "RGB" else pixels.convert("RGB")
        scan = _resized(rgb, scale)
        found = self._scan(
            scan, to_pixels=(rgb.width / scan.width, rgb.height / scan.height), size=rgb.size
        )
        if max(scan.size) > 2 * CNN_COARSE_SCAN_PX:
            # Faces too large for this scan: a quick look at the whole photo, keeping only the
            # large faces, since the fine scan sees small ones better.
            coarse = _resized(rgb, CNN_COARSE_SCAN_PX / max(rgb.size))
            to_pixels = (rgb.width / coarse.width, rgb.height / coarse.height)
            smallest = CNN_LARGEST_FACE_PX / 2 / scan.width * rgb.width
            found += [
                d
                for d in self._scan(coarse, to_pixels=to_pixels, size=rgb.size)
                if d.box[2] - d.box[0] >= smallest
            ]
        return _suppress_overlaps(found)

    def _scan(
        self,
        scan: Image.Image,
        *,
        to_pixels: tuple[float, float],
        size: tuple[int, int],
    ) -> list[Detection]:
        """Detections of `scan`, tiled if large, as boxes in the caller's pixels."""
        found = []
        for left, top, tile in _tiles(scan):
            for x, y, w, h, score in self._run(tile):
                box = (left + x, top + y, left + x + w, top + y + h)
                clipped = _clipped(box, to_pixels, size)
                if clipped is not None:
                    found.append(Detection(box=clipped, score=score))
        return found

    def _run(self, tile: Image.Image) -> list[tuple[int, int, int, int, float]]:
        # The wheel wants a C-contiguous BGR array (a strided or RGB one gives wrong or no
        # faces), and warns about every image over 960 px, which it handles well.
        bgr = np.frombuffer(tile.tobytes("raw", "BGR"), np.uint8).reshape(
            tile.height, tile.width, 3
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            scores, boxes, _ = self._yuface.detect(bgr, conf=0.0)
        wanted = round(self.min_score * 100)
        return [
            (int(x), int(y), int(w), int(h), int(score) / 100)
            for score, (x, y, w, h) in zip(scores.tolist(), boxes.tolist(), strict=True)
            if score >= wanted and w > 0 and h > 0
        ]


def _tiles(scan: Image.Image) -> list[tuple[int, int, Image.Image]]:
    """The scan itself, or overlapping tiles of at most CNN_TILE_PX: (left, top, tile)."""
    if max(scan.size) <= CNN_TILE_PX:
        return [(0, 0, scan)]
    # Tiles overlap by the largest face the scan finds, so every face is whole in one tile.
    step = CNN_TILE_PX - CNN_LARGEST_FACE_PX
    lefts = range(0, max(1, scan.width - CNN_LARGEST_FACE_PX), step)
    tops = range(0, max(1, scan.height - CNN_LARGEST_FACE_PX), step)
    return [
        (
            left,
            top,
            scan.crop(
                (
                    left,
                    top,
                    min(scan.width, left + CNN_TILE_PX),
                    min(scan.height, top + CNN_TILE_PX),
                )
            ),
        )
        for top in tops
        for left in lefts
    ]


def _resized(image: Image.Image, scale: float) -> Image.Image:
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)


def _clipped(
    box: tuple[int, int, int, int], factor: tuple[float, float], size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """`box` scaled by `factor` and clipped to an image of `size`; None if nothing is left."""
    left = max(0, round(box[0] * factor[0]))
    top = max(0, round(box[1] * factor[1]))
    right = min(size[0], round(box[2] * factor[0]))
    bottom = min(size[1], round(box[3] * factor[1]))
    if right <= left or bottom <= top:
        return None
    return (left, top, right, bottom)


def _suppress_overlaps(found: list[Detection]) -> list[Detection]:
    """One detection per face: the best of those overlapping, and no part inside a whole."""
    kept: list[Detection] = []
    for candidate in sorted(found, key=lambda d: d.score, reverse=True):
        if not any(_overlap(candidate.box, other.box) for other in kept):
            kept.append(candidate)
    return sorted(kept, key=lambda d: (d.box[1], d.box[0]))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return False
    inter = width * height
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    # IoU above 0.3 is the same face found twice (tiles, passes); most of the smaller box
    # inside the larger one is a part of a face found beside the whole.
    return inter / (area_a + area_b - inter) > 0.3 or inter / min(area_a, area_b) > 0.6


_yuface: ModuleType | None = None


def _import_yuface() -> ModuleType:
    global _yuface
    if _yuface is None:
        # The wheel's OpenMP would start a thread per core in every engine process; the pool's
        # processes are the parallelism, and spinning threads double the CPU cost on a busy
        # machine. Read once, when the library loads; an operator's own setting wins.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        _yuface = importlib.import_module("yuface")
    return _yuface


def cnn_available() -> bool:
    """Whether the CNN's wheel can be imported here."""
    try:
        _import_yuface()
    except ImportError:
        return False
    return True


def available_detector(requested: str) -> str:
    """The detector that runs for `requested` ("auto", "cnn" or "hog"): "cnn" or "hog".

    "auto" is the CNN where its wheel can be imported, else HOG with a warning; "cnn" where the
    wheel cannot be imported is a configuration error, never a silent fallback.
    """
    if requested not in DETECTORS:
        raise ConfigurationError(
            f"Unknown face detector {requested!r}: use one of {', '.join(DETECTORS)}."
        )
    if requested == "hog":
        return "hog"
    if cnn_available():
        return "cnn"
    if requested == "cnn":
        raise ConfigurationError(
            "The CNN face detector was requested but its package (yuface) cannot be imported "
            "here: it is built for CPython 3.11 on x86-64. Install it, or choose the hog detector."
        )
    logger.warning(
        "The CNN face detector (yuface) cannot be imported here: falling back to dlib's HOG "
        "detector, which misses turned, masked and covered faces",
        extra={"action": "detector_fallback"},
    )
    return "hog"


def make_detector(name: str, *, min_score: float = DEFAULT_MIN_SCORE) -> Detector:
    """A detector by its name as `available_detector` returns it."""
    if name == "cnn":
        return CnnDetector(min_score=min_score)
    if name == "hog":
        return HogDetector()
    raise ConfigurationError(f"Unknown face detector {name!r}: use cnn or hog.")
