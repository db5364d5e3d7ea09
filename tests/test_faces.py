"""The local engine on real faces: detection counts, matching, camera-sized group shots, formats.

The default detector is the CNN; HOG, the fallback, is checked on the same shared set.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import time
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image, ImageOps

from findme.engines.local.detectors import cnn_scan_scale
from findme.engines.local.faces import (
    DEFAULT_MATCH_THRESHOLD,
    DESCRIPTOR_BYTES,
    FaceAnalysis,
    UnreadableImage,
    analyse_photo,
    analyse_selfie,
    descriptor_distance,
    photo_scan_scale,
)
from findme.engines.local.pool import LocalRecognizer, _Lane, _worker_pid
from findme.engines.matching import nearest_member
from tests.crowd import crowd_scenes
from tests.shared_faces import faces_dir, group_shot, iou, manifest

MIN_FACE_PX = 120  # the settings default
THUMBNAIL_PX = 480  # the settings default, which the engine's pool uses unless told
GROUP_FACE_WIDTHS = [120, 129, 138, 147, 156, 164, 173, 182, 191, 200]


T = TypeVar("T")


def read(relative: str) -> bytes:
    return (faces_dir() / relative).read_bytes()


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, FaceAnalysis]:
    return {
        name: analyse_photo(
            read(f"event/{name}"), min_face_px=MIN_FACE_PX, thumbnail_px=THUMBNAIL_PX
        )
        for name in manifest()["event"]
    }


@pytest.fixture(scope="module")
def selfies() -> dict[str, FaceAnalysis]:
    return {person: analyse_selfie(read(path)) for person, path in manifest()["selfies"].items()}


@pytest.fixture(scope="module")
def match(selfies):
    """A function naming the attendee a descriptor matches (or None), as the pipeline does."""
    people = sorted(selfies)
    members = {i: selfies[person].faces[0].descriptor for i, person in enumerate(people)}

    def match(descriptor: bytes) -> str | None:
        found = nearest_member(descriptor, members, threshold=DEFAULT_MATCH_THRESHOLD)
        return None if found is None else people[found[0]]

    return match


def test_every_event_photo_gives_the_faces_a_good_detector_finds(photos):
    found = {name: len(analysis.faces) for name, analysis in photos.items()}
    assert found == {name: info["faces"] for name, info in manifest()["event"].items()}
    for analysis in photos.values():
        for face in analysis.faces:
            left, top, right, bottom = face.box
            assert 0 <= left < right <= analysis.width
            assert 0 <= top < bottom <= analysis.height
            assert len(face.descriptor) == DESCRIPTOR_BYTES


def test_the_thumbnail_comes_from_the_same_decode_upright_and_grid_sized(photos):
    for name, analysis in photos.items():
        upright = ImageOps.exif_transpose(Image.open(faces_dir() / "event" / name))
        assert (analysis.width, analysis.height) == upright.size
        assert analysis.thumbnail is not None
        shown = Image.open(io.BytesIO(analysis.thumbnail))
        assert shown.format == "JPEG" and not shown.getexif()
        scale = min(1.0, THUMBNAIL_PX / max(upright.size))
        assert shown.size == (round(upright.width * scale), round(upright.height * scale)), name
        expected = upright.convert("RGB").resize(shown.size, Image.Resampling.LANCZOS)
        difference = np.abs(np.asarray(shown, np.int16) - np.asarray(expected, np.int16))
        assert difference.mean() < 6, name
    # Asked for no thumbnail (selfies, the benches), none is made.
    assert analyse_photo(read("event/e12.jpg"), min_face_px=MIN_FACE_PX).thumbnail is None


def test_matching_every_face_gives_exactly_the_expected_photos(photos, match):
    expected = manifest()
    my_photos: dict[str, list[str]] = {person: [] for person in expected["selfies"]}
    for name, analysis in photos.items():
        matched = [match(face.descriptor) for face in analysis.faces]
        # Per face, not only per photo: the stranger in e13.jpg matches nobody.
        assert sorted(p for p in matched if p) == sorted(expected["event"][name]["people"]), name
        for person in set(matched) - {None}:
            my_photos[person].append(name)
    assert {p: sorted(names) for p, names in my_photos.items()} == expected["expected_my_photos"]


@pytest.fixture(scope="module")
def hog_photos() -> dict[str, FaceAnalysis]:
    return {
        name: analyse_photo(
            read(f"event/{name}"),
            min_face_px=MIN_FACE_PX,
            thumbnail_px=THUMBNAIL_PX,
            detector="hog",
        )
        for name in manifest()["event"]
    }


def test_the_hog_fallback_gives_the_same_faces_and_matches(photos, hog_photos, match):
    expected = manifest()["event"]
    assert {name: len(a.faces) for name, a in hog_photos.items()} == {
        name: info["faces"] for name, info in expected.items()
    }
    for name, analysis in hog_photos.items():
        matched = sorted(p for p in (match(f.descriptor) for f in analysis.faces) if p)
        assert matched == sorted(expected[name]["people"]), name
        # Same faces whichever detector drew the box: one descriptor is near the other.
        for face in analysis.faces:
            twin = max(photos[name].faces, key=lambda f, b=face.box: iou(f.box, b))
            assert iou(twin.box, face.box) > 0.3, (name, face.box, twin.box)
            assert descriptor_distance(face.descriptor, twin.descriptor) < 0.35, name


def test_no_crowd_face_matches_another_member(selfies):
    """Precision: every face of the crowd scenes is farther than the threshold from every other
    member's selfie, and boxes that are no marked face (the CNN's detections down to a score of
    0.3: the edges of the pasted photos) are farther from every selfie."""
    members = {person: analysis.faces[0].descriptor for person, analysis in selfies.items()}
    nearest = []
    for look, scene in crowd_scenes().items():
        analysis = analyse_photo(scene.jpeg, min_face_px=MIN_FACE_PX, min_score=0.3)
        assert len(analysis.faces) >= len(scene.faces)
        for face in analysis.faces:
            marked = max(scene.faces, key=lambda m, b=face.box: iou(m.box, b))
            others = members.items()
            if iou(marked.box, face.box) >= 0.3:
                others = [(p, d) for p, d in others if p != marked.person]
            for person, descriptor in others:
                distance = descriptor_distance(face.descriptor, descriptor)
                nearest.append((distance, look, face.box, person))
    closest = min(nearest)
    assert closest[0] > DEFAULT_MATCH_THRESHOLD, closest
    assert len(nearest) >= 5 * 6 * 18  # each of 108 faces against the five others at least


def test_nearest_member_matches_at_most_the_one_nearest_member():
    def vector(*values: float) -> bytes:
        v = np.zeros(128, "<f4")
        v[: len(values)] = values
        return v.tobytes()

    face = vector(0.0)
    look_alikes = {7: vector(0.3), 8: vector(0.2), 9: vector(0.9)}
    assert nearest_member(face, look_alikes, threshold=0.5) == (8, pytest.approx(0.2))
    assert nearest_member(face, {9: vector(0.9)}, threshold=0.5) is None
    assert nearest_member(face, {9: vector(0.5)}, threshold=0.5) is None  # strictly below
    assert nearest_member(face, {}, threshold=0.5) is None
    assert descriptor_distance(vector(0.3), vector(0.0, 0.4)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("size", "min_face_px", "scale"),
    [
        ((6000, 4000), 120, 80 / 120),  # the smallest face lands at the detector's reliable size
        ((6000, 4000), 200, 0.4),
        ((4000, 6000), 400, 1600 / 6000),  # never below 1600 px on the long side
        ((2000, 1428), 120, 0.8),
        ((501, 700), 120, 1.0),  # web-sized photos are scanned whole, never upscaled...
        ((1000, 800), 40, 2.0),  # ...unless a face of min_face_px could not be found otherwise
        ((6000, 4000), 20, 2.0),  # upscaling stops at 2x
    ],
)
def test_scan_scale_follows_from_the_minimum_face_size(size, min_face_px, scale):
    assert photo_scan_scale(*size, min_face_px=min_face_px) == pytest.approx(scale)


@pytest.mark.parametrize(
    ("size", "min_face_px", "scale"),
    [
        ((6000, 4000), 120, 1600 / 6000),  # the smallest face lands at the CNN's 32 px
        ((6000, 4000), 60, 3200 / 6000),
        ((6000, 4000), 400, 1600 / 6000),  # never below 1600 px on the long side
        ((1920, 1280), 120, 1600 / 1920),
        ((800, 600), 120, 1.0),  # web-sized photos are scanned whole, never upscaled...
        ((800, 600), 20, 1.6),  # ...unless a face of min_face_px could not be found otherwise
        ((6000, 4000), 10, 2.0),  # upscaling stops at 2x
    ],
)
def test_the_cnn_scan_scale_follows_from_the_minimum_face_size(size, min_face_px, scale):
    assert cnn_scan_scale(*size, min_face_px=min_face_px) == pytest.approx(scale)


@pytest.fixture(scope="module")
def group():
    return group_shot(GROUP_FACE_WIDTHS)


def test_a_camera_sized_group_shot_finds_and_matches_every_face(group, match):
    data, pasted = group
    analysis = analyse_photo(data, min_face_px=MIN_FACE_PX)
    assert (analysis.width, analysis.height) == (6000, 4000)
    assert len(analysis.faces) == len(pasted)
    for person, box in pasted:
        face = max(analysis.faces, key=lambda face: iou(face.box, box))
        assert iou(face.box, box) > 0.5, (person, box, face.box)
        assert match(face.descriptor) == person, (person, box)


def test_a_camera_photo_keeps_a_face_both_passes_could_leave_to_the_other(match):
    # e13 framed in 24 MP, as a camera gives it: Biden's face is just wider than the tiles'
    # overlap in a tile, which leaves it to the coarse pass, and just narrower there.
    framed = ImageOps.pad(
        Image.open(faces_dir() / "event" / "e13.jpg").convert("RGB"),
        (6000, 4000),
        Image.Resampling.BICUBIC,
        color=(118, 112, 104),
    )
    out = io.BytesIO()
    framed.save(out, "JPEG", quality=95)
    analysis = analyse_photo(out.getvalue(), min_face_px=MIN_FACE_PX)
    assert len(analysis.faces) == manifest()["event"]["e13.jpg"]["faces"]
    found = {match(face.descriptor) for face in analysis.faces}
    assert set(manifest()["event"]["e13.jpg"]["people"]) <= found


@pytest.mark.parametrize(
    ("widths", "orientation", "described_from"),
    [
        ([600, 900], 1, (3000, 2000)),
        ([600, 130], 1, (6000, 4000)),
        # stored turned left, EXIF "turn right to view": both decodes are turned upright
        ([600, 130], 6, (6000, 4000)),
    ],
)
def test_a_camera_photo_is_decoded_whole_only_for_a_face_too_small_in_half_of_it(
    widths, orientation, described_from, match, caplog
):
    """The scan and the thumbnail need half of a 24 MP JPEG's pixels at most, and so do faces
    wider than the descriptor's chip there; a smaller face has the photo decoded whole. Every
    face is found where it is and matched to its person either way."""
    caplog.set_level(logging.DEBUG, logger="findme.engines.local.faces")
    data, pasted = group_shot(widths)
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        turned = Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_90)
        data = encode(turned, "JPEG", quality=90, exif=exif.tobytes())
    analysis = analyse_photo(data, min_face_px=MIN_FACE_PX, thumbnail_px=THUMBNAIL_PX)
    assert len(analysis.faces) == len(pasted)
    for person, box in pasted:
        face = max(analysis.faces, key=lambda face: iou(face.box, box))
        assert iou(face.box, box) > 0.5, (person, box, face.box)
        assert match(face.descriptor) == person, (person, box)
    (report,) = [r for r in caplog.records if getattr(r, "action", None) == "analyse_image"]
    assert "described from {}x{}".format(*described_from) in report.getMessage()


@pytest.mark.parametrize(
    ("fmt", "orientation", "stored"),
    [
        ("JPEG", 3, Image.Transpose.ROTATE_180),
        ("JPEG", 6, Image.Transpose.ROTATE_90),  # stored turned left; EXIF: "turn right to view"
        ("JPEG", 8, Image.Transpose.ROTATE_270),
        ("HEIF", 6, Image.Transpose.ROTATE_90),  # pillow_heif turns it into the HEIF rotation
        ("WEBP", 6, Image.Transpose.ROTATE_90),
    ],
)
def test_exif_orientation_is_applied_before_detection(photos, fmt, orientation, stored):
    original = Image.open(faces_dir() / "event" / "e09.jpg")
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(original.transpose(stored), fmt, quality=95, exif=exif.tobytes())
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == original.size

    analysis = analyse_photo(data, min_face_px=MIN_FACE_PX)
    (upright,) = photos["e09.jpg"].faces
    (face,) = analysis.faces
    assert (analysis.width, analysis.height) == original.size
    assert iou(face.box, upright.box) > 0.8, (face.box, upright.box)
    assert descriptor_distance(face.descriptor, upright.descriptor) < 0.1


@pytest.mark.parametrize("fmt", ["HEIF", "WEBP", "PNG", "MPO"])
def test_heic_webp_camera_jpeg_and_transparent_png_photos_work(fmt, match):
    image = Image.open(faces_dir() / "event" / "e12.jpg")
    options = {}
    if fmt == "PNG":  # a transparent strip on the left, away from the faces
        alpha = Image.new("L", image.size, 255)
        alpha.paste(0, (0, 0, 100, image.height))
        image.putalpha(alpha)
    if fmt == "MPO":  # a JPEG with an embedded preview, as many cameras write them
        options = {"save_all": True, "append_images": [image.resize((160, 94))]}
    data = encode(image, fmt, quality=90, **options)
    analysis = analyse_photo(data, min_face_px=MIN_FACE_PX)
    assert (analysis.width, analysis.height) == (1126, 661)
    assert sorted(match(face.descriptor) for face in analysis.faces) == ["biden", "obama"]


def test_each_selfie_shows_exactly_one_face(selfies):
    assert {person: len(a.faces) for person, a in selfies.items()} == dict.fromkeys(selfies, 1)


def test_selfie_analysis_finds_two_people_or_nobody():
    assert len(analyse_selfie(read("event/e12.jpg")).faces) == 2
    blank = encode(Image.new("RGB", (1200, 900), (190, 180, 170)), "JPEG")
    assert analyse_selfie(blank).faces == ()


def test_a_phone_sized_selfie_is_decoded_at_reduced_scale_with_the_same_face(selfies):
    original = ImageOps.exif_transpose(Image.open(faces_dir() / "selfies" / "obama.jpg"))
    factor = 4032 / max(original.size)
    big = original.resize((round(original.width * factor), round(original.height * factor)))
    analysis = analyse_selfie(encode(big, "JPEG", quality=90))
    (small,) = selfies["obama"].faces
    (face,) = analysis.faces
    assert (analysis.width, analysis.height) == big.size
    assert iou(face.box, tuple(round(v * factor) for v in small.box)) > 0.8
    assert descriptor_distance(face.descriptor, small.descriptor) < 0.15


@pytest.mark.parametrize("kind", ["empty", "text", "truncated jpeg", "gif"])
def test_undecodable_input_raises_unreadable_image(kind):
    data = {
        "empty": b"",
        "text": b"not an image at all",
        "truncated jpeg": read("event/e12.jpg")[:20_000],
        "gif": encode(Image.open(faces_dir() / "event" / "e12.jpg"), "GIF"),  # not a photo format
    }[kind]
    with pytest.raises(UnreadableImage, match="not an image that can be read") as caught:
        analyse_photo(data, min_face_px=MIN_FACE_PX)
    assert isinstance(caught.value, ValueError)


async def test_local_recognizer_runs_in_processes_and_survives_a_killed_worker(photos, selfies):
    names = ["e12.jpg", "e13.jpg", "e14.jpg", "e08.png"]
    async with LocalRecognizer(processes=2, min_face_px=MIN_FACE_PX) as recognizer:
        await recognizer.warm_up()
        pool = recognizer._bulk._pool
        assert len(pool._processes) == 2

        results = await asyncio.gather(
            *(recognizer.analyse_photo(read(f"event/{name}")) for name in names),
            recognizer.analyse_selfie(read("selfies/biden.jpg")),
        )
        assert results == [*(photos[name] for name in names), selfies["biden"]]

        victim = next(iter(pool._processes))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not pool._broken:  # wait until the executor has noticed, so the retry is tested
            assert time.monotonic() < deadline, "the pool did not notice its dead worker"
            await asyncio.sleep(0.02)

        assert await recognizer.analyse_photo(read("event/e12.jpg")) == photos["e12.jpg"]
        assert recognizer._bulk._pool is not pool
        assert victim not in recognizer._bulk._pool._processes
    assert recognizer._bulk._pool is None
    with pytest.raises(RuntimeError, match="not open"):
        await recognizer.analyse_selfie(read("selfies/biden.jpg"))


async def test_a_lane_replaces_its_processes_and_never_hangs_with_calls_queued():
    """Processes are replaced after their share of calls (the CNN's wheel leaks a little on
    every scan), also with calls queued: where Python 3.11's max_tasks_per_child can leave the
    pool without a process and hang (CPython gh-115634), a lane starts a fresh pool."""
    lane = _Lane("bulk", 1, 0, "hog", 0.7, tasks_per_process=2)
    lane.open()
    try:
        async with asyncio.timeout(120):
            pids = await asyncio.gather(*(lane.run(_worker_pid) for _ in range(6)))
    finally:
        await lane.close()
    assert len(set(pids)) == 3
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]


async def noted(finished: list[str], label: str, call: Awaitable[T]) -> T:
    result = await call
    finished.append(label)
    return result


async def test_a_selfie_goes_past_the_photos_of_a_mass_upload(photos, selfies):
    """Someone enrolling a selfie does not wait behind the photos of a mass upload: the urgent
    lane runs at the server's priority, the bulk lane below it."""
    backlog_names = ["e12.jpg", "e13.jpg", "e14.jpg", "e08.png"] * 2
    finished: list[str] = []
    async with LocalRecognizer(processes=1, urgent_processes=1, min_face_px=MIN_FACE_PX) as engine:
        await engine.warm_up()
        bulk_pid, urgent_pid = (next(iter(lane._pool._processes)) for lane in engine._lanes())
        assert os.getpriority(os.PRIO_PROCESS, urgent_pid) == os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, bulk_pid) > os.getpriority(os.PRIO_PROCESS, 0)

        backlog = [
            asyncio.create_task(noted(finished, name, engine.analyse_photo(read(f"event/{name}"))))
            for name in backlog_names
        ]
        await asyncio.sleep(0)  # the backlog is submitted first
        assert await engine.analyse_selfie(read("selfies/biden.jpg")) == selfies["biden"]
        assert len(finished) < len(backlog) / 2
        assert await asyncio.gather(*backlog) == [photos[name] for name in backlog_names]


async def test_an_urgent_photo_does_not_wait_for_a_busy_urgent_lane(photos):
    big, _ = group_shot([120, 150, 180, 200])
    finished: list[str] = []
    # Both lanes at one priority: what is tested here is where the photos go.
    async with LocalRecognizer(
        processes=1, urgent_processes=1, niceness=0, min_face_px=MIN_FACE_PX
    ) as engine:
        await engine.warm_up()
        first = asyncio.create_task(noted(finished, "big", engine.analyse_photo(big, urgent=True)))
        await asyncio.sleep(0)  # the 24 MP photo holds the urgent lane
        small = engine.analyse_photo(read("event/e12.jpg"), urgent=True)
        assert await noted(finished, "small", small) == photos["e12.jpg"]
        assert finished == ["small"]
        assert len((await first).faces) == 4


async def test_local_recognizer_runs_the_detector_it_names(hog_photos):
    async with LocalRecognizer(processes=1, min_face_px=MIN_FACE_PX, detector="hog") as hog:
        assert hog.detector_name == "hog"
        assert await hog.analyse_photo(read("event/e13.jpg")) == hog_photos["e13.jpg"]
    # The workers use the score threshold given: the CNN scores no face of e13.jpg 0.95.
    async with LocalRecognizer(
        processes=1, min_face_px=MIN_FACE_PX, detector="cnn", min_score=0.95
    ) as strict:
        assert strict.detector_name == "cnn"
        assert (await strict.analyse_photo(read("event/e13.jpg"))).faces == ()
