"""HOG and the CNN side by side: faces found, false faces and CPU time per photo.

    .venv/bin/python -m bench.detection

On the crowd scenes of tests/crowd.py (the shared faces small, masked, tilted, dim, blurred and
cut by the frame, 1920 px wide and upscaled to 6000 px like a 24 MP camera JPEG) and on the
synthetic 24 MP group shots of tests/shared_faces.py. Detection alone (decoding + scan,
`find_faces`) is timed in CPU seconds of this process, best of two runs; the group shots are also
analysed whole (descriptors and matching). Then the descriptor network as the engine runs it
(numpy's BLAS) against dlib's own, taking turns on every face of the shared set. Last, the whole
engine (decode, detection, descriptors, thumbnail) on the 24 MP camera photos of
bench/pipeline.py, the two detectors taking turns photo by photo. Figures in
docs/RECOGNITION.md, "Detectors" and "The descriptor network".
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import TypeVar

import dlib
import numpy as np
from PIL import Image

from bench.pipeline import camera_photos
from findme.engines.local import descriptor_net
from findme.engines.local.detectors import CnnDetector, cnn_available
from findme.engines.local.faces import (
    DEFAULT_MATCH_THRESHOLD,
    analyse_photo,
    analyse_selfie,
    descriptor_distance,
    find_faces,
    models_dir,
)
from findme.settings import Settings
from tests.crowd import SCENE_SIZE, CrowdScene, MarkedFace, crowd_scenes, scaled, score
from tests.shared_faces import (
    faces_dir,
    group_shot,
    iou,
    landmarked_faces,
    manifest,
    rightly_matched,
)

MIN_FACE_PX = 120  # the settings default
THUMBNAIL_PX = Settings.thumbnail_px
CAMERA_PHOTOS = 12
CAMERA_PX = 6000
DETECTORS = ("hog", "cnn")
_T = TypeVar("_T")


def cpu_timed(call: Callable[[], _T], runs: int = 2) -> tuple[float, _T]:
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.process_time()
        result = call()
        best = min(best, time.process_time() - started)
    assert result is not None
    return best, result


def crowd(label: str, scenes: dict[str, tuple[bytes, tuple[MarkedFace, ...]]]) -> None:
    print(f"\nCrowd scenes, {label}: {len(scenes)} scenes, min face {MIN_FACE_PX} px")
    print(f"{'detector':8} {'found':>9} {'recall':>7} {'false':>6} {'CPU s/photo':>12}  per look")
    for name in DETECTORS:
        found = faces = false = 0
        seconds = 0.0
        per_look: list[str] = []
        for look, (data, marked) in scenes.items():
            spent, result = cpu_timed(
                lambda d=data, n=name: find_faces(d, min_face_px=MIN_FACE_PX, detector=n)
            )
            seconds += spent
            result_score = score([d.box for d in result.faces], marked)
            found += result_score.found
            faces += result_score.faces
            false += len(result_score.false_boxes)
            per_look.append(f"{look} {result_score.found}")
        print(
            f"{name:8} {f'{found}/{faces}':>9} {found / faces:7.3f} {false:6}"
            f" {seconds / len(scenes):12.2f}  {', '.join(per_look)}"
        )


def scan_sizes(scenes: dict[str, CrowdScene]) -> None:
    """Crowd faces found by the CNN alone when the scene is scanned at each long side."""
    print("\nCNN scan size (long side) against crowd faces found, 1920x1280 scenes:")
    images = {look: Image.open(io.BytesIO(s.jpeg)).convert("RGB") for look, s in scenes.items()}
    for long_side in (1024, 1280, 1400, 1600, 1920):
        found = sum(
            score(
                [d.box for d in CnnDetector().detect(images[look], scale=long_side / 1920)],
                scenes[look].faces,
            ).found
            for look in scenes
        )
        print(f"  {long_side:5} px: {found}/{sum(len(s.faces) for s in scenes.values())}")


def group_shots(members: dict[int, bytes], people: list[str]) -> None:
    row = [120, 129, 138, 147, 156, 164, 173, 182, 191, 200]
    close = [240, 263, 286, 309, 331, 354, 377, 400]
    shots = [
        ("10 faces 120-200 px", *group_shot(row)),
        ("8 faces 240-400 px", *group_shot(close)),
    ]
    print(f"\nGroup shots, 6000x4000 JPEG, min face {MIN_FACE_PX} px")
    print(f"{'shot':22} {'detector':8} {'found':>6} {'right':>6} {'detect s':>9} {'analyse s':>10}")
    for label, data, pasted in shots:
        for name in DETECTORS:
            detect_s, _ = cpu_timed(
                lambda d=data, n=name: find_faces(d, min_face_px=MIN_FACE_PX, detector=n)
            )
            analyse_s, analysis = cpu_timed(
                lambda d=data, n=name: analyse_photo(d, min_face_px=MIN_FACE_PX, detector=n)
            )
            right = rightly_matched(
                analysis.faces,
                pasted,
                selfies=members,
                people=dict(enumerate(people)),
                threshold=DEFAULT_MATCH_THRESHOLD,
            )
            print(
                f"{label:22} {name:8} {f'{len(analysis.faces)}/{len(pasted)}':>6} {right:>6}"
                f" {detect_s:9.2f} {analyse_s:10.2f}"
            )


def descriptor_agreement() -> None:
    """How far apart the descriptors of one face are when HOG or the CNN drew its box."""
    folder = faces_dir()
    distances = []
    for name in manifest()["event"]:
        data = (folder / "event" / name).read_bytes()
        hog = analyse_photo(data, min_face_px=MIN_FACE_PX, detector="hog").faces
        cnn = analyse_photo(data, min_face_px=MIN_FACE_PX, detector="cnn").faces
        for face in hog:
            twin = max(cnn, key=lambda f, b=face.box: iou(f.box, b), default=None)
            if twin is not None and iou(twin.box, face.box) >= 0.3:
                distances.append(descriptor_distance(face.descriptor, twin.descriptor))
    print(
        f"\nShared event faces found by both: {len(distances)}; descriptor distance between the "
        f"HOG-box and CNN-box descriptors of a face: mean {sum(distances) / len(distances):.3f},"
        f" max {max(distances):.3f} (match threshold {DEFAULT_MATCH_THRESHOLD})"
    )


def descriptor_network() -> None:
    """CPU per face of the engine's descriptor network and of dlib's, on the same chips."""
    faces = landmarked_faces()
    chips = [dlib.get_face_chip(pixels, shape, size=150, padding=0.25) for pixels, shape in faces]
    net = descriptor_net.load(models_dir() / descriptor_net.MODEL_FILE)
    dlibs = dlib.face_recognition_model_v1(str(models_dir() / descriptor_net.MODEL_FILE))
    ours = dlib_own = 0.0
    difference = 0.0
    for chip in chips:
        seconds, vector = cpu_timed(lambda c=chip: net.describe([c])[0])
        ours += seconds
        seconds, expected = cpu_timed(lambda c=chip: np.asarray(dlibs.compute_face_descriptor(c)))
        dlib_own += seconds
        difference = max(difference, float(np.abs(vector - expected).max()))
    batched, _ = cpu_timed(lambda: net.describe(chips))
    print(f"\nDescriptor network, {len(chips)} faces of the shared set, CPU ms per face:")
    print(f"  numpy (OpenBLAS): {ours / len(chips) * 1000:.1f} one by one, ", end="")
    print(f"{batched / len(chips) * 1000:.1f} all in one call")
    print(f"  dlib's own:       {dlib_own / len(chips) * 1000:.1f}")
    print(f"  numpy / dlib: {ours / dlib_own:.0%}; largest difference {difference:.1e}")


def camera_engine() -> None:
    """Core-seconds of the whole engine per 24 MP camera photo, as a worker's process runs it
    (best of two runs each, so loading the models is not counted)."""
    paths = camera_photos(CAMERA_PHOTOS)
    spent = dict.fromkeys(DETECTORS, 0.0)
    found = dict.fromkeys(DETECTORS, 0)
    for path in paths:
        data = path.read_bytes()
        for name in DETECTORS:
            seconds, analysis = cpu_timed(
                lambda d=data, n=name: analyse_photo(
                    d, min_face_px=MIN_FACE_PX, thumbnail_px=THUMBNAIL_PX, detector=n
                )
            )
            spent[name] += seconds
            found[name] += len(analysis.faces)
    print(f"\nWhole engine per 24 MP camera photo, {len(paths)} photos, min face {MIN_FACE_PX} px:")
    for name in DETECTORS:
        print(f"  {name:4} {spent[name] / len(paths):.3f} core-s, {found[name]} faces")
    print(f"  CNN / HOG: {spent['cnn'] / spent['hog']:.0%}")


def main() -> None:
    if not cnn_available():
        raise SystemExit("The CNN detector (yuface) cannot be imported here: nothing to compare.")
    scenes = crowd_scenes()
    crowd("1920x1280", {look: (scene.jpeg, scene.faces) for look, scene in scenes.items()})
    factor = CAMERA_PX / SCENE_SIZE[0]
    crowd(
        f"upscaled to {CAMERA_PX} px",
        {look: scaled(scene, factor) for look, scene in scenes.items()},
    )

    data = manifest()
    people = sorted(data["selfies"])
    members = {
        i: analyse_selfie((faces_dir() / data["selfies"][p]).read_bytes()).faces[0].descriptor
        for i, p in enumerate(people)
    }
    scan_sizes(scenes)
    group_shots(members, people)
    descriptor_agreement()
    descriptor_network()
    camera_engine()


if __name__ == "__main__":
    main()
