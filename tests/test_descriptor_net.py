"""dlib's face descriptor network run on numpy: dlib's own descriptors, on real faces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dlib
import numpy as np
import pytest

from findme.engines.local import descriptor_net
from findme.engines.local.descriptor_net import MODEL_FILE
from findme.engines.local.faces import models_dir
from findme.errors import ConfigurationError
from findme.settings import Settings
from tests.shared_faces import REPO_ROOT, landmarked_faces


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


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot be read .*reinstall the face-recog"):
        descriptor_net.load(tmp_path / MODEL_FILE)


def test_another_dlib_network_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="is not dlib's ResNet face model v1"):
        descriptor_net.load(models_dir() / "mmod_human_face_detector.dat")


@pytest.fixture
def damaged_models(tmp_path: Path) -> dict[str, str]:
    """An environment whose face_recognition_models package holds a truncated descriptor model
    (the landmark model as installed), found before the real one on the import path."""
    package = tmp_path / "face_recognition_models"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    landmarks = "shape_predictor_5_face_landmarks.dat"
    (package / "models" / landmarks).symlink_to(models_dir() / landmarks)
    model = (models_dir() / MODEL_FILE).read_bytes()
    (package / "models" / MODEL_FILE).write_bytes(model[: len(model) // 3])
    return {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"}


def test_the_engine_refuses_to_start_on_a_damaged_model(damaged_models) -> None:
    started = subprocess.run(
        [sys.executable, "-c", START_ENGINE],
        env=damaged_models,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert started.returncode == 1, started.stdout + started.stderr
    assert "refused: The face descriptor model" in started.stdout
    assert "reinstall the face-recognition-models package" in started.stdout


def test_the_doctor_names_a_damaged_model(damaged_models, settings: Settings) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "findme.cli", "doctor"],
        env={
            **damaged_models,
            "FINDME_DATABASE_URL": settings.database_url,
            "FINDME_DATA_DIR": str(settings.data_dir),
        },
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )

    assert checked.returncode == 1, checked.stdout + checked.stderr
    failed = [line for line in checked.stdout.splitlines() if line.startswith("✗ engine")]
    assert len(failed) == 1, checked.stdout
    engine = failed[0]
    assert "not dlib's ResNet face model v1" in engine
    assert "reinstall the face-recognition-models package" in engine


START_ENGINE = """
import asyncio, sys
from findme.engines.local.pool import LocalRecognizer
from findme.errors import ConfigurationError

async def start():
    async with LocalRecognizer(processes=1, min_face_px=120):
        pass

try:
    asyncio.run(start())
except ConfigurationError as error:
    print("refused:", error.detail)
    sys.exit(1)
print("started")
"""
