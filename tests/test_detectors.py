"""The face detectors on crowd scenes of real faces: recall, false faces, the CNN wheel's quirks."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yuface
from PIL import Image, ImageOps

from findme.engines.local.detectors import (
    CNN_TILE_OVERLAP_PX,
    CNN_TILE_PIXELS,
    CnnDetector,
    HogDetector,
    available_detector,
    make_detector,
)
from findme.engines.local.detectors import _tiles as tiles_of
from findme.engines.local.faces import (
    UnreadableImage,
    analyse_photo,
    find_faces,
)
from findme.engines.local.pool import LocalRecognizer
from findme.errors import ConfigurationError
from tests.crowd import LOOKS, SCENE_SIZE, crowd_scenes, scaled, score
from tests.shared_faces import faces_dir, iou

MIN_FACE_PX = 120  # the settings default


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def scene_image(look: str) -> Image.Image:
    return Image.open(io.BytesIO(crowd_scenes()[look].jpeg)).convert("RGB")


def crowd_scores(detector: str):
    found = {}
    for look, scene in crowd_scenes().items():
        result = find_faces(scene.jpeg, min_face_px=MIN_FACE_PX, detector=detector)
        assert (result.width, result.height) == scene.size
        found[look] = score([d.box for d in result.faces], scene.faces)
    return found


@pytest.fixture(scope="module")
def cnn_scores():
    return crowd_scores("cnn")


def test_the_crowd_scenes_hold_every_shared_single_face_small():
    scenes = crowd_scenes()
    assert tuple(scenes) == LOOKS
    for look, scene in scenes.items():
        width, height = scene.size
        assert Image.open(io.BytesIO(scene.jpeg)).size == SCENE_SIZE
        assert len(scene.faces) == 18, look  # 12 single-face event photos and 6 selfies
        assert {f.person for f in scene.faces} == {
            "alex_lacamoire",
            "biden",
            "kit_harington",
            "lin_manuel_miranda",
            "obama",
            "rose_leslie",
        }
        for face in scene.faces:
            left, top, right, bottom = face.box
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            assert 0.01 * width <= right - left <= 0.06 * width, (look, face)


def test_cnn_finds_95_percent_of_crowd_faces_with_at_most_one_false_face_per_ten_photos(
    cnn_scores,
):
    faces = sum(s.faces for s in cnn_scores.values())
    found = sum(s.found for s in cnn_scores.values())
    false_faces = [(look, box) for look, s in cnn_scores.items() for box in s.false_boxes]
    missed = {look: s.missed for look, s in cnn_scores.items() if s.missed}
    assert found / faces >= 0.95, missed
    assert len(false_faces) <= len(cnn_scores) / 10, false_faces


def test_cnn_finds_masked_tilted_dim_and_cut_faces(cnn_scores):
    for look in ("masked", "tilted", "dim", "cut"):
        assert cnn_scores[look].missed == (), look


def test_hog_fallback_still_finds_the_larger_plain_faces_and_no_false_ones(cnn_scores):
    hog = crowd_scores("hog")
    # HOG scans so that a 120 px face is 80 px: crowd faces under ~60 px are too small for it.
    assert hog["plain"].found >= 8
    assert all(face.box[2] - face.box[0] < 65 for face in hog["plain"].missed)
    found = sum(s.found for s in hog.values())
    assert found < 0.6 * sum(s.found for s in cnn_scores.values())
    assert all(s.false_boxes == () for s in hog.values())


def test_a_camera_sized_crowd_photo_gives_the_faces_of_the_smaller_one():
    factor = 6000 / SCENE_SIZE[0]
    data, faces = scaled(crowd_scenes()["plain"], factor)
    result = find_faces(data, min_face_px=MIN_FACE_PX)
    found = score([d.box for d in result.faces], faces)
    assert (found.found, found.false_boxes) == (len(faces), ())


def test_detections_match_the_wheel_given_a_contiguous_bgr_array():
    # The wheel reads BGR from a C-contiguous buffer; an RGB array or a strided view gives
    # other or no faces, so the wrapper must hand it exactly that.
    image = Image.open(faces_dir() / "event" / "e12.jpg").convert("RGB")
    bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, boxes, _ = yuface.detect(bgr, conf=0.7)
    expected = sorted((x, y, x + w, y + h) for x, y, w, h in boxes.tolist())
    found = sorted(d.box for d in CnnDetector().detect(image, scale=1.0))
    assert len(found) == len(expected) == 2
    for box, want in zip(found, expected, strict=True):
        assert iou(box, want) > 0.95
    assert all(d.score >= 0.7 for d in CnnDetector().detect(image, scale=1.0))


def test_boxes_partly_outside_the_image_are_clipped_to_it():
    # e09's face, with the photo cut through the middle of it on the left and at the top.
    image = ImageOps.exif_transpose(Image.open(faces_dir() / "event" / "e09.jpg")).convert("RGB")
    (whole,) = CnnDetector().detect(image, scale=1.0)
    left, top, right, bottom = whole.box
    cut = image.crop((left + (right - left) // 3, top + (bottom - top) // 4, *image.size))
    found = CnnDetector(min_score=0.5).detect(cut, scale=1.0)
    assert found, "the cut face was not found"
    for d in found:
        assert 0 <= d.box[0] < d.box[2] <= cut.width
        assert 0 <= d.box[1] < d.box[3] <= cut.height
    assert min(d.box[0] for d in found) == 0 or min(d.box[1] for d in found) == 0
    # Faces cut by every edge: the wheel reports some from x = -1, which is clipped to 0.
    cut = find_faces(crowd_scenes()["cut"].jpeg, min_face_px=MIN_FACE_PX)
    assert all(0 <= d.box[0] < d.box[2] <= cut.width for d in cut.faces)
    assert all(0 <= d.box[1] < d.box[3] <= cut.height for d in cut.faces)
    assert {0, cut.width} <= {b for d in cut.faces for b in (d.box[0], d.box[2])}
    assert {0, cut.height} <= {b for d in cut.faces for b in (d.box[1], d.box[3])}


def test_a_scan_over_the_tile_size_is_tiled_and_finds_each_face_once():
    image = scene_image("plain")
    scale = 1.25  # 2400x1600: over CNN_TILE_PIXELS, so scanned in overlapping tiles
    assert image.width * image.height * scale**2 > CNN_TILE_PIXELS
    tiled = CnnDetector().detect(image, scale=scale)
    # What the wheel finds in the same scan taken whole, in the photo's pixels.
    scan = image.resize((round(image.width * scale), round(image.height * scale)))
    bgr = np.ascontiguousarray(np.asarray(scan)[:, :, ::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scores, boxes, _ = yuface.detect(bgr, conf=0.0)
    whole = [
        [round(v / scale) for v in (x, y, x + w, y + h)]
        for score_, (x, y, w, h) in zip(scores.tolist(), boxes.tolist(), strict=True)
        if score_ >= 70
    ]
    assert len(whole) >= 10
    assert len(tiled) == len(whole)
    for box in whole:
        assert sum(iou(d.box, box) > 0.5 for d in tiled) == 1, box


@pytest.mark.parametrize(
    "size", [(1600, 1067), (1067, 1600), (2400, 1600), (3200, 2134), (1281, 800), (4000, 300)]
)
def test_tiles_cover_the_scan_overlapping_enough_within_the_pixel_budget(size):
    scan = Image.new("RGB", size)
    grid = tiles_of(scan)
    assert len(grid) > 1
    covered = np.zeros((size[1], size[0]), np.uint8)
    for tile in grid:
        assert tile.image.width * tile.image.height <= CNN_TILE_PIXELS
        right, bottom = tile.left + tile.image.width, tile.top + tile.image.height
        assert right <= size[0] and bottom <= size[1]
        covered[tile.top : bottom, tile.left : right] += 1
    assert covered.min() >= 1
    # Any face narrower than the overlap lies whole inside some tile.
    lefts = sorted({t.left for t in grid})
    tops = sorted({t.top for t in grid})
    width, height = grid[0].image.size
    assert all(b - a <= width - CNN_TILE_OVERLAP_PX for a, b in itertools.pairwise(lefts))
    assert all(b - a <= height - CNN_TILE_OVERLAP_PX for a, b in itertools.pairwise(tops))


def test_a_face_too_large_for_the_scan_is_found_once_whole():
    # A close-up: obama's selfie at 6000 px, his face a fifth of the photo; at min face 60 the
    # fine scan is 3200 px (tiled), where the face is too large for the CNN to see it whole.
    selfie = ImageOps.exif_transpose(Image.open(faces_dir() / "selfies" / "obama.jpg"))
    factor = 6000 / max(selfie.size)
    big = selfie.convert("RGB").resize(
        (round(selfie.width * factor), round(selfie.height * factor)), Image.Resampling.BILINEAR
    )
    (small,) = CnnDetector().detect(selfie.convert("RGB"), scale=1.0)
    expected = [round(v * factor) for v in small.box]
    for min_face_px in (120, 60):
        result = find_faces(encode(big, quality=90), min_face_px=min_face_px)
        faces = [d for d in result.faces if iou(d.box, expected) > 0]
        assert len(faces) == 1, (min_face_px, result.faces)
        assert iou(faces[0].box, expected) > 0.5


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
@pytest.mark.parametrize("size", [(1, 1), (7, 5), (3, 400), (64, 48)])
def test_tiny_and_unusual_images_give_no_faces_and_no_error(mode, size):
    image = Image.new(mode, size)
    assert CnnDetector().detect(image, scale=1.0) == []
    assert HogDetector().detect(image.convert("RGB"), scale=1.0) == []


def test_tiny_photos_analyse_to_no_faces():
    for size in [(1, 1), (9, 9), (2, 300)]:
        analysis = analyse_photo(encode(Image.new("RGB", size), "PNG"), min_face_px=MIN_FACE_PX)
        assert (analysis.width, analysis.height, analysis.faces) == (*size, ())


@pytest.mark.parametrize("detector", ["cnn", "hog"])
def test_non_images_raise_unreadable_image(detector):
    for data in (b"", b"GIF89a not really", crowd_scenes()["plain"].jpeg[:5000]):
        with pytest.raises(UnreadableImage):
            find_faces(data, min_face_px=MIN_FACE_PX, detector=detector)


def test_a_higher_minimum_score_keeps_a_subset_of_the_faces():
    image = scene_image("tilted")
    low = CnnDetector(min_score=0.5).detect(image, scale=1600 / 1920)
    high = CnnDetector(min_score=0.85).detect(image, scale=1600 / 1920)
    assert len(high) < len(low)
    assert all(d.score >= 0.85 for d in high)
    assert all(any(iou(h.box, lo.box) > 0.9 for lo in low) for h in high)
    with pytest.raises(ConfigurationError, match="minimum score"):
        CnnDetector(min_score=70)


def test_the_detector_that_runs_is_named():
    assert available_detector("auto") == "cnn"  # the wheel is installed here
    assert available_detector("cnn") == "cnn"
    assert available_detector("hog") == "hog"
    with pytest.raises(ConfigurationError, match="Unknown face detector 'dnn'"):
        available_detector("dnn")
    assert make_detector("hog").name == "hog"
    assert make_detector("cnn", min_score=0.8).name == "cnn"
    assert LocalRecognizer(processes=1, min_face_px=120).detector_name == "cnn"
    assert LocalRecognizer(processes=1, min_face_px=120, detector="hog").detector_name == "hog"
    with pytest.raises(ConfigurationError):
        LocalRecognizer(processes=1, min_face_px=120, detector="fast")


def test_without_the_wheel_cnn_is_refused_and_auto_falls_back_to_hog_loudly():
    # A fresh interpreter where `import yuface` fails, as on a machine without the wheel.
    script = """
import json, logging, sys
sys.modules["yuface"] = None
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from findme.engines.local.detectors import available_detector
from findme.errors import ConfigurationError
result = {"auto": available_detector("auto"), "hog": available_detector("hog")}
try:
    available_detector("cnn")
except ConfigurationError as exc:
    result["cnn"] = str(exc)
print(json.dumps(result))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout)
    assert result["auto"] == "hog" and result["hog"] == "hog"
    assert "yuface" in result["cnn"] and "hog" in result["cnn"]
    assert "WARNING" in done.stderr and "falling back to dlib's HOG" in done.stderr
