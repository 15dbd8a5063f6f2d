"""fer.calibrate: the temperature and metrics in a model's JSON belong to its flip-averaging setting."""

import json

import numpy as np
import pytest

from fer import calibrate, lite
from fer.data import load_faces
from fer.predict import load_predictor
from conftest import write_face_tree, write_model_files


@pytest.fixture
def model_and_faces(tmp_path):
    path = write_model_files(tmp_path / "models", arch="vgg_tiny", make_current=False)  # JSON: flip averaging on
    validation = write_face_tree(tmp_path / "data" / "validation", per_class=4, seed=3)
    return path, validation


def test_switching_flip_averaging_refits_the_temperature_and_rewrites_the_metrics(model_and_faces, capsys):
    path, validation = model_and_faces
    assert calibrate.main([str(path), "--data", str(validation), "--no-flip-average"]) == 0
    metadata = json.loads(path.with_suffix(".json").read_text())
    assert metadata["inference"]["flip_average"] is False
    report = metadata["metrics"]["validation"]
    assert report["n_images"] == 16 and {"ece_before_calibration", "ece_after_calibration"} <= set(report)
    assert metadata["calibrated"]["command"].endswith("--no-flip-average")
    assert "flip averaging off" in capsys.readouterr().out

    # The recorded figures are what the served model now does: one pass a face, at the fitted temperature.
    predictor = load_predictor(path)
    faces = load_faces(validation)
    assert not predictor.flip_average and predictor.temperature == metadata["inference"]["temperature"]
    one_pass = predictor.model.predict_on_batch(faces.images.astype(np.float32)[..., None])
    predicted = predictor.predict_faces(faces.images).argmax(axis=1)
    np.testing.assert_array_equal(predicted, one_pass.argmax(axis=1))
    assert report["accuracy"] == pytest.approx(float(np.mean(predicted == faces.labels)))


def test_the_lite_check_of_the_old_setting_is_dropped_and_the_copy_still_serves(model_and_faces, capsys):
    path, validation = model_and_faces
    lite.export(path, check=load_faces(validation))
    assert "check" in json.loads(path.with_suffix(".json").read_text())["lite"]
    # A dataset root means its validation split; the setting is unchanged, so the check stands.
    assert calibrate.main([str(path), "--data", str(validation.parent)]) == 0
    assert "check" in json.loads(path.with_suffix(".json").read_text())["lite"]

    assert calibrate.main([str(path), "--data", str(validation), "--no-flip-average"]) == 0
    entry = json.loads(path.with_suffix(".json").read_text())["lite"]
    assert "check" not in entry and entry["file"] == "tiny.tflite"
    assert f"python -m fer.lite --check-data {validation} " in capsys.readouterr().out
    assert load_predictor(path).runtime.startswith("LiteRT")


def test_a_served_models_folder_records_the_change_in_its_history(tmp_path):
    from fer.errors import ModelError
    from fer.models import read_history, rollback_target

    path = write_model_files(tmp_path / "models", arch="vgg_tiny")  # marked current
    validation = write_face_tree(tmp_path / "data" / "validation", per_class=4, seed=3)
    assert calibrate.main([str(path), "--data", str(validation), "--no-flip-average"]) == 0
    [event] = read_history(path.parent)
    metadata = json.loads(path.with_suffix(".json").read_text())
    assert event["action"] == "calibrate" and event["model"] == "tiny" and event["flip_average"] is False
    assert event["accuracy"] == metadata["metrics"]["validation"]["accuracy"] and event["accuracy_before"] is None
    with pytest.raises(ModelError, match="no model before"):  # not a move of the pointer: nothing to roll back to
        rollback_target(path.parent)


def test_a_model_outside_a_served_folder_writes_no_history(model_and_faces):
    path, validation = model_and_faces
    assert calibrate.main([str(path), "--data", str(validation)]) == 0
    assert not (path.parent / "history.json").exists()


def test_bad_arguments_fail_cleanly_and_leave_the_json_alone(model_and_faces, tmp_path, capsys):
    path, validation = model_and_faces
    before = path.with_suffix(".json").read_text()
    assert calibrate.main([str(tmp_path / "nothing.keras"), "--data", str(validation)]) == 2
    assert "error:" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert calibrate.main([str(path), "--data", str(tmp_path / "empty")]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        calibrate.main([str(path), "--data", str(validation), "--flip-average", "--no-flip-average"])
    assert path.with_suffix(".json").read_text() == before
