"""The local recognition engine: a face detector (detectors.py) and dlib's 128-d ResNet descriptor.

The face code is pure and synchronous; `LocalRecognizer` runs it in a pool of processes so the
event loop never does (dlib holds the GIL). See docs/RECOGNITION.md for the measurements behind
the constants below.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dlib
import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from findme.engines.local import descriptor_net
from findme.engines.local.descriptor_net import DescriptorNet
from findme.engines.local.detectors import (
    DEFAULT_DETECTOR,
    DEFAULT_MIN_SCORE,
    Detection,
    Detector,
    available_detector,
    make_detector,
    photo_scan_scale,
)
from findme.errors import ConfigurationError
from findme.images import encode_thumbnail, thumbnail_of, to_rgb
from findme.settings import Settings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

pillow_heif.register_heif_opener()

# dlib's examples use 0.6, which favours recall. On the shared faces (bench/calibrate_threshold.py)
# the same person is at most 0.521 apart and different people at least 0.702: 0.55 keeps every
# true match and stays 0.15 clear of a false one (docs/RECOGNITION.md). The setting's default.
DEFAULT_MATCH_THRESHOLD = Settings.match_threshold

DESCRIPTOR_BYTES = 128 * 4
_DESCRIPTOR_DTYPE = np.dtype("<f4")

__all__ = [
    "DEFAULT_MATCH_THRESHOLD",
    "DESCRIPTOR_BYTES",
    "DetectedFace",
    "FaceAnalysis",
    "FoundFaces",
    "UnreadableImage",
    "analyse_photo",
    "analyse_selfie",
    "descriptor_distance",
    "find_faces",
    "photo_scan_scale",
    "photo_thumbnail",
]

# The descriptor sees a 150 px chip (face ~100 px + 25 % padding): a face is described from
# pixels where its box covers the chip without being upscaled, or from the full resolution.
_CHIP_PX = descriptor_net.CHIP_PX
# Landmarks and descriptor run on a crop this many face widths around the box, not the photo.
_CROP_PADDING = 0.5
# Photo formats only (JPEG includes the camera JPEGs Pillow reports as MPO): none of Pillow's
# other decoders, some of which shell out, ever sees an upload.
_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF")
# What Pillow raises for a damaged or hostile file (struct.error: broken EXIF).
_DECODE_ERRORS = (
    OSError,
    EOFError,
    SyntaxError,
    ValueError,
    struct.error,
    Image.DecompressionBombError,
)


class UnreadableImage(ValueError):
    """The file is not an image that can be read."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or (self.__doc__ or "").strip())


@dataclass(frozen=True)
class DetectedFace:
    # left, top, right, bottom in the pixels of the EXIF-oriented full-resolution image
    box: tuple[int, int, int, int]
    # 128 float32 little-endian
    descriptor: bytes


@dataclass(frozen=True)
class FaceAnalysis:
    width: int
    height: int
    faces: tuple[DetectedFace, ...]
    # the grid thumbnail (JPEG), made from the same decode, when one was asked for
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class FoundFaces:
    width: int
    height: int
    # boxes in the pixels of the EXIF-oriented full-resolution image
    faces: tuple[Detection, ...]


@dataclass(frozen=True)
class _Models:
    predictor: Any
    descriptor: DescriptorNet


_models: _Models | None = None
_detectors: dict[tuple[str, float], Detector] = {}


def models_dir() -> Path:
    """The folder of dlib model files shipped by the face_recognition_models package."""
    # Importing face_recognition_models would import pkg_resources, which setuptools dropped.
    spec = importlib.util.find_spec("face_recognition_models")
    folder = Path(next(iter(spec.submodule_search_locations or ()), "")) if spec else None
    if folder is None or not (folder / "models").is_dir():
        raise ConfigurationError(
            "The dlib model files were not found: install the face-recognition-models package."
        )
    return folder / "models"


def _load_models() -> _Models:
    global _models
    if _models is None:
        folder = models_dir()
        _models = _Models(
            predictor=dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
            descriptor=descriptor_net.load(folder / descriptor_net.MODEL_FILE),
        )
    return _models


def _detector(name: str, min_score: float) -> Detector:
    """The detector `name` ("auto", "cnn", "hog"), made once per process and score threshold.

    Cached under the name asked for, so "auto" is resolved (and a fallback warned about) once.
    """
    key = (name, min_score)
    if key not in _detectors:
        _detectors[key] = make_detector(available_detector(name), min_score=min_score)
    return _detectors[key]


def prepare_process(detector: str, min_score: float) -> None:
    """Load what the face code needs, once per process: an engine process does it as it starts."""
    _load_models()
    _detector(detector, min_score)


def analyse_photo(
    data: bytes,
    *,
    min_face_px: int,
    thumbnail_px: int | None = None,
    detector: str = DEFAULT_DETECTOR,
    min_score: float = DEFAULT_MIN_SCORE,
) -> FaceAnalysis:
    """Find the faces of an event photo and describe each one; with `thumbnail_px`, also make
    its grid thumbnail from the pixels the scan reads, so no decode is made for it alone."""
    found_by = _detector(detector, min_score)
    return _analyse(
        data,
        found_by,
        lambda w, h: found_by.photo_scale(w, h, min_face_px=min_face_px),
        thumbnail_px=thumbnail_px,
    )


def analyse_selfie(
    data: bytes, *, detector: str = DEFAULT_DETECTOR, min_score: float = DEFAULT_MIN_SCORE
) -> FaceAnalysis:
    """Find the faces of a selfie (the caller wants exactly one) and describe each one."""
    found_by = _detector(detector, min_score)
    return _analyse(data, found_by, found_by.selfie_scale)


def photo_thumbnail(data: bytes, *, size_px: int) -> bytes:
    """The grid thumbnail of a photo no detector here looks at (the cloud engine's photos)."""
    try:
        return thumbnail_of(data, size_px=size_px)
    except _DECODE_ERRORS as exc:
        raise UnreadableImage(f"The file is not an image that can be read ({exc}).") from exc


def find_faces(
    data: bytes,
    *,
    min_face_px: int,
    detector: str = DEFAULT_DETECTOR,
    min_score: float = DEFAULT_MIN_SCORE,
) -> FoundFaces:
    """The face boxes of an event photo, without descriptors (what detection alone costs)."""
    found_by = _detector(detector, min_score)
    width, height = _peek_size(data)
    scale = found_by.photo_scale(width, height, min_face_px=min_face_px)
    pixels = _decode(data, scale)
    found, _ = _detect(found_by, pixels, scale * width / pixels.width)
    to_full = (width / pixels.width, height / pixels.height)
    return FoundFaces(
        width=width,
        height=height,
        faces=tuple(
            Detection(box=_full_box(d.box, to_full, (width, height)), score=d.score) for d in found
        ),
    )


def _analyse(
    data: bytes,
    detector: Detector,
    scan_scale: Callable[[int, int], float],
    *,
    thumbnail_px: int | None = None,
) -> FaceAnalysis:
    started = time.perf_counter()
    models = _load_models()
    width, height = _peek_size(data)
    scale = scan_scale(width, height)
    least_px = thumbnail_px or 0
    # First only the pixels the scan and the thumbnail need: a JPEG's draft mode decodes a 24 MP
    # photo at half size or less, skipping much of the work.
    pixels = _decode(data, max(scale, least_px / max(width, height)))
    # Boxes come back in decoded pixels, which the descriptor reads; stored boxes are in the
    # full-resolution pixels of the oriented photo.
    found, reduced = _detect(detector, pixels, scale * width / pixels.width, least_px=least_px)
    sharper = _describing_scale([d.box for d in found], pixels.width / width)
    if sharper is not None:
        # A face too small in these pixels for the descriptor's chip: all are described from
        # the photo decoded again, at the scale the smallest of them needs.
        coarse_size = pixels.size
        pixels = _decode(data, sharper)
        back = (pixels.width / coarse_size[0], pixels.height / coarse_size[1])
        found = [Detection(_full_box(d.box, back, pixels.size), d.score) for d in found]
    to_full = (width / pixels.width, height / pixels.height)
    descriptors = _describe(models, pixels, [detection.box for detection in found])
    faces = [
        DetectedFace(box=_full_box(detection.box, to_full, (width, height)), descriptor=descriptor)
        for detection, descriptor in zip(found, descriptors, strict=True)
    ]
    logger.debug(
        "%s found %d faces in a %dx%d image scanned at %.3f (described from %dx%d) in %.2f s",
        detector.name,
        len(faces),
        width,
        height,
        scale,
        *pixels.size,
        time.perf_counter() - started,
        extra={"action": "analyse_image"},
    )
    thumbnail = None if thumbnail_px is None else encode_thumbnail(reduced, thumbnail_px)
    return FaceAnalysis(width=width, height=height, faces=tuple(faces), thumbnail=thumbnail)


def _describing_scale(boxes: list[tuple[int, int, int, int]], decoded: float) -> float | None:
    """The scale of the full resolution to decode again at so that every face of `boxes` (in
    pixels decoded at `decoded`) covers the descriptor's chip; None if they all do already."""
    if decoded >= 1.0 or not boxes:
        return None
    narrowest = min(right - left for left, _, right, _ in boxes)
    if narrowest >= _CHIP_PX:
        return None
    return min(1.0, decoded * _CHIP_PX / max(1, narrowest))


def _detect(
    detector: Detector, pixels: Image.Image, scale: float, *, least_px: int = 0
) -> tuple[list[Detection], Image.Image]:
    """The faces in `pixels` scanned at `scale` (boxes in its pixels), and the reduced copy the
    detector read, at least `least_px` on the longer side."""
    # A 24 MP photo is decoded whole for the descriptors, but the scan and the thumbnail need a
    # fraction of it: one box reduction by a whole factor reads the photo once, and each of them
    # resizes from that copy rather than from the photo.
    factor = max(1, min(math.floor(1 / scale), max(pixels.size) // max(1, least_px)))
    if factor == 1:
        return detector.detect(pixels, scale=scale), pixels
    reduced = pixels.reduce(factor)
    back = (pixels.width / reduced.width, pixels.height / reduced.height)
    found = []
    for detection in detector.detect(reduced, scale=scale * pixels.width / reduced.width):
        box = _full_box(detection.box, back, pixels.size)
        if box[2] > box[0] and box[3] > box[1]:
            found.append(Detection(box=box, score=detection.score))
    return found, reduced


def _peek_size(data: bytes) -> tuple[int, int]:
    """The oriented size of the image in `data`, from its header only."""
    try:
        return _oriented_size(Image.open(io.BytesIO(data), formats=_FORMATS))
    except _DECODE_ERRORS as exc:
        raise UnreadableImage(f"The file is not an image that can be read ({exc}).") from exc


def _decode(data: bytes, scale: float) -> Image.Image:
    """The photo's oriented RGB pixels, decoded at `scale` of its size or a little more (a JPEG's
    draft mode decodes at 1/2, 1/4 or 1/8 directly; other formats are decoded whole)."""
    try:
        image = Image.open(io.BytesIO(data), formats=_FORMATS)
        if scale < 1.0:
            image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        image.load()
        # In place: a copy of a 24 MP photo costs more than the decoding it follows.
        ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)
    except _DECODE_ERRORS as exc:
        raise UnreadableImage(f"The file is not an image that can be read ({exc}).") from exc


def _full_box(
    box: tuple[int, int, int, int], factor: tuple[float, float], size: tuple[int, int]
) -> tuple[int, int, int, int]:
    left, top, right, bottom = _scale_box(box, factor)
    return (max(0, left), max(0, top), min(size[0], right), min(size[1], bottom))


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    # EXIF orientations 5-8 swap width and height.
    if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
        return image.height, image.width
    return image.size


def _scale_box(
    box: tuple[int, int, int, int], factor: tuple[float, float]
) -> tuple[int, int, int, int]:
    return (
        round(box[0] * factor[0]),
        round(box[1] * factor[1]),
        round(box[2] * factor[0]),
        round(box[3] * factor[1]),
    )


def _describe(
    models: _Models, pixels: Image.Image, boxes: list[tuple[int, int, int, int]]
) -> list[bytes]:
    """The descriptors of the faces at `boxes`: each one's landmarks on a padded crop around it,
    the chips they align, then one pass of the network over all the chips."""
    chips = []
    for left, top, right, bottom in boxes:
        pad = round((right - left) * _CROP_PADDING)
        crop_left, crop_top = max(0, left - pad), max(0, top - pad)
        crop = np.asarray(
            pixels.crop(
                (
                    crop_left,
                    crop_top,
                    min(pixels.width, right + pad),
                    min(pixels.height, bottom + pad),
                )
            )
        )
        rect = dlib.rectangle(
            left - crop_left, top - crop_top, right - crop_left, bottom - crop_top
        )
        shape = models.predictor(crop, rect)
        # What dlib's compute_face_descriptor cuts for its network (150 px, 25 % padding).
        chips.append(dlib.get_face_chip(crop, shape, size=_CHIP_PX, padding=0.25))
    vectors = models.descriptor.describe(chips).astype(_DESCRIPTOR_DTYPE)
    return [vector.tobytes() for vector in vectors]


def descriptor_distance(a: bytes, b: bytes) -> float:
    """Euclidean distance between two descriptors; the same person is below the threshold."""
    va = np.frombuffer(a, _DESCRIPTOR_DTYPE).astype(np.float64)
    vb = np.frombuffer(b, _DESCRIPTOR_DTYPE).astype(np.float64)
    return float(np.linalg.norm(va - vb))
