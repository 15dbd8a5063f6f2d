"""The model in models/ that current.json names: it loads, serves a real photo, and (with the data) scores what its
JSON says it scores."""

import pytest

from fer.config import CLASS_NAMES
from fer.predict import load_predictor
from fer.registry import current_model_path, read_metadata
from fer.votes import trained_on
from conftest import DATA_ROOT, PROJECT_ROOT

MODELS = PROJECT_ROOT / "models"


def judged_by(metadata: dict) -> str:
    """The JSON's figure the model is judged by: against the annotators' consensus if it learned from votes."""
    return "validation_consensus" if trained_on(metadata) else "validation"


@pytest.fixture(scope="module")
def shipped():
    return load_predictor(current_model_path(MODELS))


def test_current_model_is_shipped_with_a_complete_json():
    path = current_model_path(MODELS)
    assert path.is_file(), f"models/current.json points at {path.name}, which is not in the repository"
    metadata = read_metadata(path)
    assert metadata["classes"] == list(CLASS_NAMES)
    assert metadata["image_size"] == 48
    for key in ("arch", "train_config", "data", "metrics", "command", "created", "training_seconds"):
        assert key in metadata, key
    validation = metadata["metrics"]["validation"]
    assert validation["n_images"] == 2372
    assert 0 < metadata["inference"]["temperature"] < 10
    if trained_on(metadata):  # both figures, and the one it is judged by with each class's recall on clear faces
        consensus = metadata["metrics"]["validation_consensus"]
        assert consensus["n_images"] == 2600 and set(consensus["clear_recall"]) == set(CLASS_NAMES)


def test_current_model_is_served_through_its_litert_copy(shipped, monkeypatch):
    """The copy is made from this very .keras file, loads, and predicts what TensorFlow predicts: to rounding for a
    float32 copy; for an int8 copy, closely, as measured on all validation faces when it was made."""
    import numpy as np

    assert shipped.runtime.startswith("LiteRT"), "run `python -m fer.lite models/NAME.keras` for the current model"
    entry = shipped.metadata["lite"]
    tolerance = 1e-5
    if entry["weights"] != "float32":
        check = entry.get("check") or {}
        recorded = shipped.metadata["metrics"][judged_by(shipped.metadata)]
        assert check.get("faces") == recorded["n_images"], (
            "make the int8 copy with `--check-data ../shared/data/fer2013/validation`")
        assert abs(check["accuracy"]["lite"] - check["accuracy"]["tensorflow"]) <= 0.005
        assert check["accuracy"]["tensorflow"] == pytest.approx(recorded["accuracy"], abs=1e-5)
        tolerance = 0.05 if entry["weights"] == "int8" else 0.1  # fixed int8 activation ranges move a little more
    faces = np.random.default_rng(0).integers(0, 256, size=(5, 48, 48), dtype=np.uint8)
    monkeypatch.setenv("FER_LITE", "0")
    plain = load_predictor(shipped.path)
    np.testing.assert_allclose(shipped.predict_faces(faces), plain.predict_faces(faces), rtol=0, atol=tolerance)


def test_shipped_model_finds_and_classifies_a_real_face(shipped, astronaut):
    faces = shipped.predict(astronaut)
    assert len(faces) == 1
    probabilities = faces[0]["probabilities"]
    assert list(probabilities) == list(CLASS_NAMES)
    # Eileen Collins smiles in this NASA portrait.
    assert max(probabilities, key=probabilities.get) == "happy"


@pytest.mark.data
def test_evaluate_reproduces_the_accuracy_in_the_json(shipped):
    from fer.evaluate import evaluate
    from fer.votes import default_for, read

    votes = read(default_for(shipped.metadata)) if trained_on(shipped.metadata) else None
    report = evaluate(shipped, DATA_ROOT / "validation", votes=votes)
    recorded = shipped.metadata["metrics"][judged_by(shipped.metadata)]
    assert report["n_images"] == recorded["n_images"]
    if shipped.metadata["lite"]["weights"] != "float32":  # served through an int8 copy: what its check recorded
        check = shipped.metadata["lite"]["check"]
        assert report["accuracy"] == pytest.approx(check["accuracy"]["lite"], abs=1e-5)
        assert report["confusion"] == check["lite_confusion"]
    else:
        assert report["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
        assert report["confusion"] == recorded["confusion"]
