"""Time and faces found per photo, for camera-sized group shots at several minimum face sizes.

    .venv/bin/python -m bench.group_shots

Group shots are 24 MP JPEGs (quality 90, ~8 MB) of face crops from the shared photos pasted on a
noisy wall (tests/shared_faces.py: group_shot). The shared web-sized photos come first, for
comparison. Times are the best of a few runs of `analyse_photo` in this one process.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

from PIL import Image

from findme.engines.local.faces import (
    DEFAULT_MATCH_THRESHOLD,
    FaceAnalysis,
    analyse_photo,
    analyse_selfie,
    photo_scan_scale,
)
from findme.engines.local.pool import LocalRecognizer
from tests.shared_faces import faces_dir, group_shot, manifest, rightly_matched

MIN_FACE_SIZES = (120, 160, 200)
RUNS = 3


def timed(data: bytes, min_face_px: int, runs: int = RUNS) -> tuple[float, FaceAnalysis]:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        analysis = analyse_photo(data, min_face_px=min_face_px)
        best = min(best, time.perf_counter() - started)
    return best, analysis


def portrait(data: bytes) -> bytes:
    """The same shot as a camera held upright writes it: landscape pixels, EXIF orientation 6."""
    image = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def detector_reliable_size(folder: Path) -> None:
    """How often the HOG detector finds each shared face, rescaled to a given box width."""
    import dlib
    import numpy as np
    from PIL import ImageOps

    detector = dlib.get_frontal_face_detector()
    faces = []
    for path in sorted(folder.glob("*/*")):
        if path.suffix in (".jpg", ".png") and path.name != "e15.png":  # e15 is e01 in RGBA
            image = ImageOps.exif_transpose(Image.open(path)).convert("L")
            faces += [(image, rect) for rect in detector(np.asarray(image), 0)]
    print("HOG detector (upsample 0): faces found, by face box width in the scanned image")
    for width in range(56, 101, 4):
        found = 0
        for image, rect in faces:
            margin = rect.width()
            crop = image.crop(
                (
                    max(0, rect.left() - margin),
                    max(0, rect.top() - margin),
                    rect.right() + margin,
                    rect.bottom() + margin,
                )
            )
            for jitter in (0.98, 1.0, 1.02):
                factor = width / rect.width() * jitter
                small = crop.resize(
                    (round(crop.width * factor), round(crop.height * factor)),
                    Image.Resampling.BILINEAR,
                )
                found += len(detector(np.asarray(small), 0)) > 0
        print(f"{width:5}px {found:4}/{3 * len(faces)}")
    print()


def main() -> None:
    data = manifest()
    folder = faces_dir()
    detector_reliable_size(folder)
    people = sorted(data["selfies"])
    members = {
        i: analyse_selfie((folder / data["selfies"][p]).read_bytes()).faces[0].descriptor
        for i, p in enumerate(people)
    }

    print(f"Shared photos at min face {MIN_FACE_SIZES[0]} px")
    print(f"{'photo':8} {'size':>10} {'scanned':>10} {'faces':>5} {'time':>7}")
    total = 0.0
    for name, info in data["event"].items():
        photo = (folder / "event" / name).read_bytes()
        seconds, analysis = timed(photo, MIN_FACE_SIZES[0])
        total += seconds
        w, h = analysis.width, analysis.height
        scale = photo_scan_scale(w, h, min_face_px=MIN_FACE_SIZES[0])
        print(
            f"{name:8} {f'{w}x{h}':>10} {f'{round(w * scale)}x{round(h * scale)}':>10}"
            f" {len(analysis.faces):>2}/{info['faces']:<2} {seconds * 1000:5.0f}ms"
        )
    print(f"{'total':8} {'':>10} {'':>10} {'':>5} {total * 1000:5.0f}ms\n")

    row = [120, 129, 138, 147, 156, 164, 173, 182, 191, 200]
    close = [240, 263, 286, 309, 331, 354, 377, 400]
    upright, upright_faces = group_shot(row, size=(4000, 6000))
    shots = [
        ("10 faces 120-200 px, 6000x4000", *group_shot(row)),
        ("same, 4000x6000 upright (EXIF 6)", portrait(upright), upright_faces),
        ("8 faces 240-400 px, 6000x4000", *group_shot(close)),
    ]
    print("Group shots: faces found / pasted, matched to the right attendee, time")
    print(f"{'shot':32}   MB  min face    scanned  found  right    time")
    for label, photo, pasted in shots:
        for min_face_px in MIN_FACE_SIZES:
            seconds, analysis = timed(photo, min_face_px)
            w, h = analysis.width, analysis.height
            scale = photo_scan_scale(w, h, min_face_px=min_face_px)
            right = rightly_matched(
                analysis.faces,
                pasted,
                selfies=members,
                people=dict(enumerate(people)),
                threshold=DEFAULT_MATCH_THRESHOLD,
            )
            print(
                f"{label:32} {len(photo) / 1e6:4.1f} {min_face_px:>6}px"
                f" {f'{round(w * scale)}x{round(h * scale)}':>10}"
                f" {len(analysis.faces):>3}/{len(pasted):<2} {right:>6} {seconds * 1000:5.0f}ms"
            )
    asyncio.run(pool_throughput(shots[0][1]))


async def pool_throughput(photo: bytes, *, copies: int = 6) -> None:
    """The same group shot, `copies` times at once, through a LocalRecognizer of every core."""
    processes = os.cpu_count() or 1
    async with LocalRecognizer(processes=processes, min_face_px=MIN_FACE_SIZES[0]) as recognizer:
        started = time.perf_counter()
        await recognizer.warm_up()
        warm = time.perf_counter() - started
        started = time.perf_counter()
        await asyncio.gather(*(recognizer.analyse_photo(photo) for _ in range(copies)))
        seconds = time.perf_counter() - started
    print(
        f"\nLocalRecognizer, {processes} processes (warm-up {warm:.1f} s): {copies} group shots "
        f"in {seconds:.1f} s, {seconds / copies * 1000:.0f} ms per photo"
    )


if __name__ == "__main__":
    main()
