"""Serving: the documented output format, the current-model pointer, and the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer.config import CLASS_NAMES
from fer.errors import ModelError
from fer.predict import load_predictor
from fer.registry import current_model_path, set_current
from conftest import write_model_files

ROOT = Path(__file__).resolve().parent.parent


def test_predict_returns_boxes_and_four_probabilities(predictor, astronaut):
    faces = predictor.predict(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert set(face) == {"box", "probabilities"}
    x, y, w, h = face["box"]
    assert 0 <= x < x + w <= 512 and 0 <= y < y + h <= 512
    assert list(face["probabilities"]) == list(CLASS_NAMES)
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-5


def test_no_face_is_an_empty_list_and_whole_image_is_one_face(predictor):
    blank = np.full((200, 300, 3), 90, np.uint8)
    assert predictor.predict(blank) == []
    whole = predictor.predict(blank, whole_image=True)
    assert whole[0]["box"] == [0, 0, 300, 200]


def test_predict_faces_shapes(predictor):
    faces = np.random.default_rng(0).integers(0, 256, size=(5, 48, 48), dtype=np.uint8)
    probabilities = predictor.predict_faces(faces)
    assert probabilities.shape == (5, 4) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert predictor.predict_faces(faces[:0]).shape == (0, 4)
    # Flip averaging: a face and its mirror image get the same probabilities.
    np.testing.assert_allclose(predictor.predict_faces(faces[:1, :, ::-1]), probabilities[:1], rtol=1e-4, atol=1e-6)


def test_batched_and_single_predictions_agree(predictor):
    faces = np.random.default_rng(2).integers(0, 256, size=(6, 48, 48), dtype=np.uint8)
    batched = predictor.predict_faces(faces)
    single = np.concatenate([predictor.predict_faces(face[None]) for face in faces])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-6)


def test_load_predictor_follows_the_current_pointer(tmp_path, monkeypatch):
    first = write_model_files(tmp_path, "first")
    second = write_model_files(tmp_path, "second", make_current=False)
    monkeypatch.setenv("FER_MODELS_DIR", str(tmp_path))
    assert current_model_path() == first
    set_current(second)
    assert load_predictor().version == "second"


def test_class_list_that_does_not_match_the_output_is_refused(tmp_path):
    path = write_model_files(tmp_path, "odd", make_current=False)
    metadata = json.loads(path.with_suffix(".json").read_text())
    metadata["classes"] = ["happy", "sad", "neutral"]
    path.with_suffix(".json").write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match="outputs 4 classes"):
        load_predictor(path)


def test_cli_prints_one_json_line_per_image(tmp_path, model_path, astronaut):
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut).save(photo)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(blank)
    result = subprocess.run([sys.executable, "-m", "fer.predict", str(photo), str(blank), "--model", str(model_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(line["faces"]) for line in lines] == [1, 0]
    assert set(lines[0]["faces"][0]["probabilities"]) == set(CLASS_NAMES)
