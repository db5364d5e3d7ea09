"""dlib's face descriptor network run on numpy: dlib's own descriptors, on real faces."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest

from findme.engines.local import descriptor_net
from findme.engines.local.descriptor_net import MODEL_FILE
from findme.engines.local.faces import models_dir
from findme.errors import ConfigurationError
from tests.shared_faces import landmarked_faces


@pytest.fixture(scope="module")
def net() -> descriptor_net.DescriptorNet:
    return descriptor_net.load(models_dir() / MODEL_FILE)


def test_descriptors_are_those_of_dlibs_own_network(net) -> None:
    encoder = dlib.face_recognition_model_v1(str(models_dir() / MODEL_FILE))
    faces = landmarked_faces()
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
