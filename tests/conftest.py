"""Shared fixtures: small models and images built in code, so the suite never needs ../shared."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from PIL import Image

from fer.config import CLASS_NAMES, PreprocessConfig

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS_DIR.parent
DATA_ROOT = Path(os.environ.get("FER_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data" / "fer2013")


def pytest_collection_modifyitems(config, items):
    """Tests marked `data` run whenever the real data is beside the project (as in CI), and are skipped with a
    visible reason on a fresh clone without it; FER_REQUIRE_DATA=1 (set by .ci/run) turns that skip into a failure."""
    if DATA_ROOT.is_dir():
        return
    if os.environ.get("FER_REQUIRE_DATA") == "1":
        raise pytest.UsageError(f"FER_REQUIRE_DATA=1 but there is no dataset at {DATA_ROOT}; set FER_DATA_DIR.")
    skip = pytest.mark.skip(reason=f"needs the FER2013 folders at {DATA_ROOT} (or FER_DATA_DIR)")
    for item in items:
        if "data" in item.keywords:
            item.add_marker(skip)


def write_model_files(directory: Path, name: str = "tiny", arch: str = "seed_cnn", make_current: bool = True) -> Path:
    """An untrained model with a valid JSON in `directory`; returns the .keras path."""
    from fer.model import build_model
    from fer.registry import set_current, write_json_atomic

    import keras

    keras.utils.set_random_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    model = build_model(arch, len(CLASS_NAMES), 48)
    path = directory / f"{name}.keras"
    model.save(path)
    write_json_atomic(path.with_suffix(".json"), {
        "name": name, "classes": list(CLASS_NAMES), "image_size": 48, "arch": arch,
        "preprocess": PreprocessConfig().to_dict(), "inference": {"flip_average": True, "temperature": 1.0},
    })
    if make_current:
        set_current(path, directory)
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A models folder holding an untrained seed_cnn marked current."""
    directory = tmp_path_factory.mktemp("models")
    write_model_files(directory)
    return directory


@pytest.fixture(scope="session")
def model_path(model_dir) -> Path:
    return model_dir / "tiny.keras"


@pytest.fixture(scope="session")
def predictor(model_path):
    from fer.predict import load_predictor

    return load_predictor(model_path)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo of a person (RGB uint8, 512x512) that scikit-image ships."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def write_face_tree(root: Path, per_class: int = 6, classes=CLASS_NAMES, seed: int = 0) -> Path:
    """A folder-per-class tree of 48x48 grayscale PNGs whose brightness pattern depends on the class."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            face = rng.integers(0, 60, size=(48, 48)) + 40 * index
            face[: 12 * (index + 1), :] += 50
            Image.fromarray(np.clip(face, 0, 255).astype(np.uint8), mode="L").save(folder / f"face_{number:03d}.png")
    return root


@pytest.fixture(autouse=True)
def fresh_sign_in_backoff(monkeypatch):
    """Each test starts with no failed sign-ins counted: fer.auth's back-off lives as long as the process."""
    from fer import auth, throttle

    monkeypatch.setattr(auth, "_throttle", throttle.Throttle())
