"""The shared test photos (real faces) and a synthetic camera-sized group shot built from them."""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlib
import numpy as np
import pytest
from PIL import Image, ImageOps

from findme.engines.local.faces import analyse_photo, analyse_selfie, models_dir

REPO_ROOT = Path(__file__).resolve().parents[1]

# Event photos that show exactly one attendee (and nobody else), so a crop of the face is known.
GROUP_SHOT_SOURCES = (
    "e01.jpg",
    "e02.jpg",
    "e03.jpg",
    "e04.jpg",
    "e06.jpg",
    "e07.jpg",
    "e08.png",
    "e09.jpg",
    "e10.jpg",
    "e11.jpg",
)


def faces_dir() -> Path:
    """The folder of shared face photos: `FINDME_FACES_DIR`, else `<repo>/../shared/faces`."""
    path = Path(os.environ.get("FINDME_FACES_DIR") or REPO_ROOT.parent / "shared" / "faces")
    if not (path / "manifest.json").is_file():
        pytest.fail(
            f"The shared face photos were not found: {path / 'manifest.json'} does not exist. "
            "Set FINDME_FACES_DIR to the folder that holds manifest.json, selfies/ and event/ "
            "(e.g. FINDME_FACES_DIR=/work/shared/faces)."
        )
    return path


def manifest() -> dict[str, Any]:
    """manifest.json: who appears in which photo, and the expected "my photos" per attendee."""
    data: dict[str, Any] = json.loads((faces_dir() / "manifest.json").read_text())
    return data


def group_shot(
    face_widths: Sequence[int],
    *,
    size: tuple[int, int] = (6000, 4000),
    quality: int = 90,
    seed: int = 0,
) -> tuple[bytes, list[tuple[str, tuple[int, int, int, int]]]]:
    """A camera-sized JPEG of one face crop per width, on a noisy neutral background.

    Crops (face plus hair and shoulders, aspect kept) come from `GROUP_SHOT_SOURCES`, scaled so
    the face box dlib finds in the source is `face_widths[i]` wide. Returns the JPEG bytes and,
    per pasted face, the attendee and the face box scaled into the group shot.
    """
    assert len(face_widths) <= len(GROUP_SHOT_SOURCES)
    rng = np.random.default_rng(seed)
    width, height = size
    canvas = noisy_wall(size, rng)
    columns = (len(face_widths) + 1) // 2
    cell_w, cell_h = width // columns, height // 2
    pasted: list[tuple[str, tuple[int, int, int, int]]] = []
    for i, (name, face_w) in enumerate(zip(GROUP_SHOT_SOURCES, face_widths, strict=False)):
        crop = face_crop(f"event/{name}", face_w)
        # Centre the face in its cell, a little above the middle, as people stand in a row.
        face_left = (i % columns) * cell_w + (cell_w - face_w) // 2
        face_top = (i // columns) * cell_h + cell_h // 3
        canvas.paste(crop.image, (face_left - crop.face[0], face_top - crop.face[1]))
        face_h = crop.face[3] - crop.face[1]
        pasted.append((crop.person, (face_left, face_top, face_left + face_w, face_top + face_h)))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=quality)
    return out.getvalue(), pasted


@dataclass(frozen=True)
class FaceCrop:
    """A face with hair and shoulders, cut from a shared photo; `face` is its box in the crop."""

    person: str
    image: Image.Image
    face: tuple[int, int, int, int]


@functools.cache
def _source_face(relative: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
    import dlib  # only the composites need it; most users of this module just want the folder

    source = ImageOps.exif_transpose(Image.open(faces_dir() / relative)).convert("RGB")
    (found,) = dlib.get_frontal_face_detector()(np.asarray(source), 0)
    return source, (found.left(), found.top(), found.right(), found.bottom())


def face_crop(relative: str, face_width: int) -> FaceCrop:
    """The one face of a shared photo (event/… or selfies/…), scaled to `face_width` px wide."""
    source, (left, top, right, bottom) = _source_face(relative)
    w, h = right - left, bottom - top
    crop_box = (
        max(0, left - w),
        max(0, top - h),
        min(source.width, right + w),
        min(source.height, bottom + 2 * h),
    )
    factor = face_width / w
    crop = source.crop(crop_box)
    crop = crop.resize(
        (round(crop.width * factor), round(crop.height * factor)), Image.Resampling.LANCZOS
    )
    face = (left - crop_box[0], top - crop_box[1], right - crop_box[0], bottom - crop_box[1])
    return FaceCrop(
        person=_person_in(relative), image=crop, face=tuple(round(v * factor) for v in face)
    )


def _person_in(relative: str) -> str:
    data = manifest()
    folder, name = relative.split("/", 1)
    if folder == "selfies":
        return next(person for person, path in data["selfies"].items() if path == relative)
    (person,) = data["event"][name]["people"]
    return str(person)


def noisy_wall(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A grey wall with sensor-like noise, so a JPEG of it is as large as a camera's."""
    width, height = size
    # A tiled 1000 px patch is as costly to compress as fresh noise and much quicker to make.
    tile = rng.normal(128, 8, (1000, 1000, 1)) + rng.normal(0, 3, (1000, 1000, 3))
    wall = np.tile(
        np.clip(tile, 0, 255).astype(np.uint8), (-(-height // 1000), -(-width // 1000), 1)
    )
    return Image.fromarray(np.ascontiguousarray(wall[:height, :width]), "RGB")


def iou(a: Sequence[int], b: Sequence[int]) -> float:
    """How much two boxes (left, top, right, bottom) overlap: intersection over union."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def rightly_matched(
    faces: Sequence[Any],
    pasted: Sequence[tuple[str, Sequence[int]]],
    *,
    selfies: Mapping[int, bytes],
    people: Mapping[int, str],
    threshold: float,
) -> int:
    """How many faces pasted in a group shot were found (IoU ≥ 0.5) and matched to the person."""
    from findme.engines.matching import nearest_member

    right = 0
    for person, box in pasted:
        best = max(faces, key=lambda face: iou(face.box, box), default=None)
        if best is None or iou(best.box, box) < 0.5:
            continue
        match = nearest_member(best.descriptor, selfies, threshold=threshold)
        right += match is not None and people[match[0]] == person
    return right


def landmarked_faces() -> list[tuple[np.ndarray, Any]]:
    """Every face the engine finds in the shared selfies and event photos: the oriented RGB
    pixels of its photo and dlib's 5-point landmarks (a `dlib.full_object_detection`)."""
    predictor = dlib.shape_predictor(str(models_dir() / "shape_predictor_5_face_landmarks.dat"))
    faces = []
    photos = [("selfies", path.name) for path in sorted((faces_dir() / "selfies").iterdir())]
    photos += [("event", name) for name in sorted(manifest()["event"])]
    for kind, name in photos:
        path = faces_dir() / kind / name
        data = path.read_bytes()
        analysis = (
            analyse_selfie(data) if kind == "selfies" else analyse_photo(data, min_face_px=120)
        )
        pixels = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        faces += [(pixels, predictor(pixels, dlib.rectangle(*face.box))) for face in analysis.faces]
    return faces
