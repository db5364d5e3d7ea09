"""Face detectors of the local engine: libfacedetection's CNN (the default) and dlib's HOG.

Both find face boxes only; landmarks and descriptors stay dlib's (faces.py), so stored
descriptors and the match threshold do not depend on the detector. The CNN comes from the
`yuface` wheel (CPython 3.11 on x86-64 only); where it cannot be imported, `auto` falls back to
HOG with a warning. Measurements behind the constants: docs/RECOGNITION.md, "Detectors".
"""

from __future__ import annotations

import importlib
import logging
import math
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
# The CNN's cost per pixel nearly doubles once its feature maps outgrow the core's cache: ~140 ns
# a pixel up to 800x800, 200-255 ns from 960x960 (2 MB of L2 per core; docs/RECOGNITION.md). A
# larger scan is cut into a grid of tiles of at most this many pixels.
CNN_TILE_PIXELS = 640_000
# Tiles overlap by this many scanned pixels, so a face narrower than that is whole in one tile;
# wider faces are the coarse pass's (51 px there at a 1600 px scan, well within its reach).
CNN_TILE_OVERLAP_PX = 128
# The coarse pass keeps faces from this share of the overlap: a face's box differs a little
# from one scale to the other, and one measured just under the overlap there but over it in a
# tile would otherwise be dropped by both. Found twice, it is kept once (`_suppress_overlaps`).
CNN_COARSE_KEEPS_FROM = 0.75
# A detection this close to an edge shared with another tile is a face cut by it: the
# neighbouring tile, or the coarse pass, holds it whole.
_TILE_EDGE_PX = 4
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
        to_pixels = (rgb.width / scan.width, rgb.height / scan.height)
        tiles = _tiles(scan)
        found = self._scan(tiles, to_pixels=to_pixels, size=rgb.size)
        if max(scan.size) > 2 * CNN_COARSE_SCAN_PX:
            # Faces too large for the tiles or the scan: a quick look at the whole photo, keeping
            # only the large faces, since the fine scan sees small ones better. Resized from the
            # scan, which is far smaller than the photo and sharp enough for faces this size.
            coarse = _resized(scan, CNN_COARSE_SCAN_PX / max(scan.size))
            smallest = CNN_TILE_OVERLAP_PX * CNN_COARSE_KEEPS_FROM * to_pixels[0]
            found += [
                d
                for d in self._scan(
                    [_Tile(0, 0, coarse, coarse.size)],
                    to_pixels=(rgb.width / coarse.width, rgb.height / coarse.height),
                    size=rgb.size,
                )
                if d.box[2] - d.box[0] >= smallest
            ]
        return _suppress_overlaps(found)

    def _scan(
        self,
        tiles: list[_Tile],
        *,
        to_pixels: tuple[float, float],
        size: tuple[int, int],
    ) -> list[Detection]:
        """Detections of the tiles of one scan, as boxes in the caller's pixels."""
        found = []
        for tile in tiles:
            for x, y, w, h, score in self._run(tile.image):
                if tile.leaves(x, y, w, h):
                    continue
                box = (tile.left + x, tile.top + y, tile.left + x + w, tile.top + y + h)
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


@dataclass(frozen=True)
class _Tile:
    left: int
    top: int
    image: Image.Image
    # the size of the scan the tile was cut from
    scan_size: tuple[int, int]

    def leaves(self, x: int, y: int, w: int, h: int) -> bool:
        """Whether a box (in the tile's pixels) is better left to a neighbour or the coarse pass:
        it touches an edge shared with another tile, or is too wide to be whole in one tile."""
        if self.image.size == self.scan_size:
            return False
        right, bottom = self.left + self.image.width, self.top + self.image.height
        return (
            w >= CNN_TILE_OVERLAP_PX
            or (self.left > 0 and x <= _TILE_EDGE_PX)
            or (self.top > 0 and y <= _TILE_EDGE_PX)
            or (right < self.scan_size[0] and x + w >= self.image.width - _TILE_EDGE_PX)
            or (bottom < self.scan_size[1] and y + h >= self.image.height - _TILE_EDGE_PX)
        )


def _tiles(scan: Image.Image) -> list[_Tile]:
    """The scan itself, or the grid of overlapping tiles that covers it with the fewest pixels.

    Only scans the coarse pass also looks at are tiled: it finds the faces wider than the overlap.
    """
    if scan.width * scan.height <= CNN_TILE_PIXELS or max(scan.size) <= 2 * CNN_COARSE_SCAN_PX:
        return [_Tile(0, 0, scan, scan.size)]
    width, height, lefts, tops = _grid(scan.size)
    return [
        _Tile(left, top, scan.crop((left, top, left + width, top + height)), scan.size)
        for top in tops
        for left in lefts
    ]


def _grid(size: tuple[int, int]) -> tuple[int, int, list[int], list[int]]:
    """Tile width and height, and the tiles' lefts and tops, for a scan of `size`."""
    best: tuple[int, int, int, int, int] | None = None
    for columns in range(1, size[0] // CNN_TILE_OVERLAP_PX + 2):
        width = _tile_span(size[0], columns)
        for rows in range(1, size[1] // CNN_TILE_OVERLAP_PX + 2):
            height = _tile_span(size[1], rows)
            covered = columns * width * rows * height
            if width * height <= CNN_TILE_PIXELS and (best is None or covered < best[0]):
                best = (covered, columns, width, rows, height)
    # A tile of the overlap's size squared always fits, so the search always finds a grid.
    assert best is not None
    _, columns, width, rows, height = best
    return width, height, _starts(size[0], width, columns), _starts(size[1], height, rows)


def _tile_span(length: int, count: int) -> int:
    """How long each of `count` tiles must be to cover `length` overlapping by the overlap."""
    if count == 1:
        return length
    return min(length, math.ceil((length - CNN_TILE_OVERLAP_PX) / count) + CNN_TILE_OVERLAP_PX)


def _starts(length: int, span: int, count: int) -> list[int]:
    if count == 1:
        return [0]
    # Spread evenly: neighbours overlap by at least the overlap, the last tile ends at the edge.
    return [(length - span) * index // (count - 1) for index in range(count)]


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
