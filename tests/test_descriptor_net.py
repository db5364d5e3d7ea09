"""dlib's face descriptor network run on numpy: dlib's own descriptors, on real faces."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest
from PIL import Image, ImageOps

from findme.engines.local import descriptor_net
from findme.engines.local.faces import analyse_photo, analyse_selfie, models_dir
from findme.errors import ConfigurationError
from tests.shared_faces import faces_dir, manifest

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def net() -> descriptor_net.DescriptorNet:
    return descriptor_net.load(models_dir() / MODEL_FILE)


def shared_faces() -> list[tuple[np.ndarray, dlib.full_object_detection]]:
    """Every face the engine finds in the shared selfies and event photos, with its landmarks."""
    predictor = dlib.shape_predictor(str(models_dir() / "shape_predictor_5_face_landmarks.dat"))
    faces = []
    for kind in ("selfies", "event"):
        for name in sorted(_file_names(kind)):
            path = faces_dir() / kind / name
            data = path.read_bytes()
            analysis = (
                analyse_selfie(data) if kind == "selfies" else analyse_photo(data, min_face_px=120)
            )
            pixels = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
            for face in analysis.faces:
                shape = predictor(pixels, dlib.rectangle(*face.box))
                faces.append((pixels, shape))
    return faces


def _file_names(kind: str) -> list[str]:
    if kind == "event":
        return list(manifest()["event"])
    return [path.name for path in (faces_dir() / "selfies").iterdir()]


def test_descriptors_are_those_of_dlibs_own_network(net) -> None:
    encoder = dlib.face_recognition_model_v1(str(models_dir() / MODEL_FILE))
    faces = shared_faces()
    assert len(faces) >= 20, "the shared set should give a face per selfie and more"
    chips = [dlib.get_face_chip(pixels, shape, size=150, padding=0.25) for pixels, shape in faces]
    expected = np.array(
        [encoder.compute_face_descriptor(pixels, shape) for pixels, shape in faces], np.float32
    )

    batched = net.describe(chips)
    one_by_one = np.vstack([net.describe([chip]) for chip in chips])

    assert batched.shape == (len(faces), 128)
    # Float rounding only: the match threshold is 0.55 and people are 0.15 further apart.
    assert np.abs(batched - expected).max() < 1e-5
    assert np.abs(one_by_one - expected).max() < 1e-5
    distances = np.linalg.norm(batched - expected, axis=1)
    assert distances.max() < 1e-5


def test_no_chips_give_no_descriptors(net) -> None:
    assert net.describe([]).shape == (0, 128)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data + b"\x01\x02", id="data after the network"),
        pytest.param(lambda data: data.replace(b"con_4", b"con_9", 1), id="unknown layer version"),
        pytest.param(lambda data: b"\x00" * 64, id="garbage"),
    ],
)
def test_a_damaged_model_file_is_refused_with_what_to_do(tmp_path: Path, damage) -> None:
    damaged = tmp_path / MODEL_FILE
    damaged.write_bytes(damage((models_dir() / MODEL_FILE).read_bytes()))

    with pytest.raises(ConfigurationError, match="reinstall the face-recognition-models package"):
        descriptor_net.load(damaged)


def test_another_dlib_network_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="is not dlib's ResNet face model v1"):
        descriptor_net.load(models_dir() / "mmod_human_face_detector.dat")
