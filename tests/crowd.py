"""Crowd scenes made of the shared faces, and how detections are scored against them.

A crowd photo's faces are small (2-5 % of the long side) and often hard: behind a mask, tilted,
in the dark, out of focus, cut by the frame. Each scene pastes the twelve single-face shared
photos and the six selfies (real faces, ../shared/faces) into a 1920 x 1280 frame, as a phone
or a resized camera JPEG gives it, all in one look, so a detector's recall can be read per look.
Faces are marked where the source's own face box lands.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from tests.shared_faces import face_crop, iou, manifest, noisy_wall

SCENE_SIZE = (1920, 1280)
LOOKS = ("plain", "masked", "tilted", "dim", "blurred", "cut")
# A detection is the marked face it overlaps by at least this much (intersection over union).
MATCH_IOU = 0.3
# Face widths in a scene, 2.1-5.2 % of its long side: the faces of people a few rows back.
_SMALLEST_FACE, _WIDTH_STEP = 40, 3
_COLUMNS, _ROWS = 6, 3
_MASK_BLUE = (168, 198, 222)

Box = Sequence[int]


@dataclass(frozen=True)
class MarkedFace:
    person: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class CrowdScene:
    look: str
    jpeg: bytes
    size: tuple[int, int]
    faces: tuple[MarkedFace, ...]


def _sources() -> list[str]:
    data = manifest()
    single = [f"event/{name}" for name, info in data["event"].items() if info["faces"] == 1]
    return single + sorted(data["selfies"].values())


@functools.cache
def crowd_scenes() -> dict[str, CrowdScene]:
    """One scene per look, each with every shared single face in it once."""
    return {look: _scene(look, seed) for seed, look in enumerate(LOOKS)}


def _scene(look: str, seed: int) -> CrowdScene:
    rng = np.random.default_rng(seed)
    width, height = SCENE_SIZE
    canvas = noisy_wall(SCENE_SIZE, rng)
    cell_w, cell_h = width // _COLUMNS, height // _ROWS
    marked = []
    for i, relative in enumerate(_sources()):
        face_w = _SMALLEST_FACE + _WIDTH_STEP * i
        crop = face_crop(relative, face_w)
        image, face = _apply(look, crop.image, crop.face, turn=35 if i % 2 else -35)
        face_h = face[3] - face[1]
        if look == "cut":
            face_left, face_top = _on_the_edge(i, face_w, face_h)
        else:
            column, row = i % _COLUMNS, i // _COLUMNS
            face_left = column * cell_w + (cell_w - face_w) // 2
            face_top = row * cell_h + cell_h // 4
        canvas.paste(image, (face_left - face[0], face_top - face[1]))
        box = (
            max(0, face_left),
            max(0, face_top),
            min(width, face_left + face_w),
            min(height, face_top + face_h),
        )
        marked.append(MarkedFace(crop.person, box))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90)
    return CrowdScene(look, out.getvalue(), SCENE_SIZE, tuple(marked))


def _on_the_edge(i: int, face_w: int, face_h: int) -> tuple[int, int]:
    """Where face `i` goes so that a quarter of it is outside the frame, the four edges in turn."""
    width, height = SCENE_SIZE
    edge, slot = i % 4, i // 4
    along_side = slot * height // 5 + height // 20
    along_top = slot * width // 5 + width // 12
    if edge == 0:
        return -face_w // 4, along_side
    if edge == 1:
        return width - face_w * 3 // 4, along_side
    if edge == 2:
        return along_top, -face_h // 4
    return along_top, height - face_h * 3 // 4


def _apply(
    look: str, image: Image.Image, face: tuple[int, int, int, int], *, turn: int
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The crop in `look`, and where its face box is then."""
    left, top, right, bottom = face
    w, h = right - left, bottom - top
    if look == "masked":  # a surgical mask from the nose down, a little past the chin
        image = image.copy()
        ImageDraw.Draw(image).rounded_rectangle(
            (left + w // 20, top + h * 0.55, right - w // 20, bottom + h * 0.1),
            radius=max(2, w // 12),
            fill=_MASK_BLUE,
        )
    elif look == "tilted":  # a head leaning 35°, turned about the face's centre
        image = image.rotate(
            turn,
            center=((left + right) / 2, (top + bottom) / 2),
            resample=Image.Resampling.BICUBIC,
            fillcolor=(128, 128, 128),
        )
    elif look == "dim":  # a dark hall: a third of the light, and the noise of a high ISO
        dark = np.asarray(ImageEnhance.Brightness(image).enhance(0.3), dtype=np.float32)
        noise = np.random.default_rng(w).normal(0, 6, dark.shape)
        image = Image.fromarray(np.clip(dark + noise, 0, 255).astype(np.uint8))
    elif look == "blurred":  # out of focus, or moving
        image = image.filter(ImageFilter.GaussianBlur(w / 30))
    return image, face


@dataclass(frozen=True)
class Score:
    faces: int
    found: int
    false_boxes: tuple[tuple[int, ...], ...]
    missed: tuple[MarkedFace, ...]


def score(found: Iterable[Box], faces: Sequence[MarkedFace]) -> Score:
    """Which marked faces the detections found, and which detections are no marked face."""
    matched: set[int] = set()
    false_boxes = []
    for box in found:
        best = max(range(len(faces)), key=lambda i: iou(box, faces[i].box), default=None)
        if best is not None and iou(box, faces[best].box) >= MATCH_IOU:
            matched.add(best)
        else:
            false_boxes.append(tuple(box))
    missed = tuple(face for i, face in enumerate(faces) if i not in matched)
    return Score(
        faces=len(faces), found=len(matched), false_boxes=tuple(false_boxes), missed=missed
    )


def scaled(scene: CrowdScene, factor: float) -> tuple[bytes, tuple[MarkedFace, ...]]:
    """The scene resized by `factor` (a quality 90 JPEG), and its faces' boxes in it."""
    image = Image.open(io.BytesIO(scene.jpeg))
    size = (round(image.width * factor), round(image.height * factor))
    out = io.BytesIO()
    image.resize(size, Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
    faces = tuple(
        MarkedFace(f.person, tuple(round(v * factor) for v in f.box))  # type: ignore[arg-type]
        for f in scene.faces
    )
    return out.getvalue(), faces
