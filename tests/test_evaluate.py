"""The evaluate report on a tiny synthetic tree: exact keys, consistent counts, the PNG beside the JSON."""

import json

import numpy as np

from fer import evaluate
from fer.metrics import apply_temperature, classification_report, expected_calibration_error, fit_temperature
from conftest import write_face_tree

REPORT_KEYS = {"accuracy", "macro_f1", "per_class", "confusion", "classes", "n_images", "no_face", "labels"}
VOTES_KEYS = REPORT_KEYS | {"votes", "clear_recall"}  # with --votes


def test_evaluate_json_has_exactly_the_documented_keys(tmp_path, model_path):
    root = write_face_tree(tmp_path / "tree", per_class=3, classes=("happy", "sad", "fear"))
    out = tmp_path / "report" / "out.json"
    assert evaluate.main(["--model", str(model_path), "--data", str(root), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == REPORT_KEYS
    assert report["classes"] == ["happy", "sad", "neutral", "surprise"]
    assert report["n_images"] == 6  # "fear" is not one of ours and is ignored
    assert report["no_face"] == 0
    assert np.asarray(report["confusion"]).sum() == 6
    assert report["per_class"]["neutral"]["support"] == 0
    assert report["labels"] == "folder"
    assert out.with_suffix(".png").is_file()

    votes = tmp_path / "votes.csv"
    votes.write_text("path,fer2013_label,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
                     "tree/fear/face_000.png,fear,0,0,0,9,1,0,0,0,0,0\n")
    assert evaluate.main(["--model", str(model_path), "--data", str(root), "--votes", str(votes), "--json",
                          str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == VOTES_KEYS and report["labels"] == "consensus"
    assert report["n_images"] == 7  # the fear face its annotators call sad joins


def test_detect_faces_counts_images_without_a_face(tmp_path, model_path):
    root = write_face_tree(tmp_path / "tree", per_class=2)
    out = tmp_path / "out.json"
    assert evaluate.main(["--model", str(model_path), "--data", str(root), "--detect-faces", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["no_face"] == report["n_images"] == 8


def test_missing_model_or_data_fail_with_one_line(tmp_path, model_path, capsys):
    assert evaluate.main(["--model", str(tmp_path / "none.keras"), "--data", str(tmp_path)]) == 2
    assert "No model at" in capsys.readouterr().err
    assert evaluate.main(["--model", str(model_path), "--data", str(tmp_path)]) == 2
    assert "none of the class folders" in capsys.readouterr().err


def test_metrics_on_a_worked_example():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 3, 3])
    report = classification_report(y_true, y_pred, ["a", "b", "c", "d"])
    assert report["accuracy"] == 0.7
    assert report["confusion"][0] == [2, 1, 0, 0]
    assert abs(report["per_class"]["a"]["precision"] - 2 / 3) < 1e-12
    assert abs(report["per_class"]["b"]["f1"] - 0.5) < 1e-12
    assert report["per_class"]["d"]["f1"] == 1.0


def test_temperature_scaling_reduces_overconfidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    logits = rng.normal(size=(2000, 4))
    logits[np.arange(2000), labels] += 1.0  # right about 60% of the time...
    probabilities = np.exp(4 * logits) / np.exp(4 * logits).sum(axis=1, keepdims=True)  # ...but far too sure
    temperature = fit_temperature(probabilities, labels)
    assert temperature > 2
    calibrated = apply_temperature(probabilities, temperature)
    assert expected_calibration_error(calibrated, labels) < expected_calibration_error(probabilities, labels) / 2
    np.testing.assert_array_equal(calibrated.argmax(axis=1), probabilities.argmax(axis=1))
