"""The LiteRT copy (fer.lite): written beside the .keras file, used for small batches, same predictions as TensorFlow,
and ignored, never trusted, when it is missing, stale, corrupt or busy. Correctness only: no timing."""

import json
import logging
import shutil

import numpy as np
import pytest

from fer import lite
from fer.predict import Predictor, load_predictor
from fer.registry import load_model

from conftest import write_model_files

ROUNDING = 1e-5  # float32 sums in another order; a real change in a prediction is orders of magnitude larger


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A models folder with an untrained vgg_tiny and its LiteRT copy."""
    path = write_model_files(tmp_path_factory.mktemp("lite"), name="small", arch="vgg_tiny")
    lite.export(path)
    return path


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(40, 48, 48), dtype=np.uint8)


def test_export_writes_the_copy_and_records_its_source(exported):
    metadata = json.loads(exported.with_suffix(".json").read_text())
    assert metadata["lite"] == {"file": "small.tflite", "weights": "float32", "keras_sha256": lite.file_sha256(exported)}
    assert exported.with_suffix(".tflite").stat().st_size > 0


@pytest.mark.parametrize("count", [1, 5, 16, 40])  # 40 faces = 80 images: above MAX_BATCH, so TensorFlow's path
def test_predictions_match_tensorflow(exported, faces, count, monkeypatch):
    served = load_predictor(exported)
    assert served.runtime.startswith("LiteRT")
    monkeypatch.setenv("FER_LITE", "0")
    plain = load_predictor(exported)
    assert plain.runtime == "TensorFlow"
    np.testing.assert_allclose(served.predict_faces(faces[:count]), plain.predict_faces(faces[:count]), rtol=0, atol=ROUNDING)


def test_small_batches_really_go_through_the_interpreter(exported, faces, monkeypatch):
    served = load_predictor(exported)
    calls = []
    real = served._lite.try_call
    monkeypatch.setattr(served._lite, "try_call", lambda batch: calls.append(len(batch)) or real(batch))
    served.predict_faces(faces[:3])
    served.predict_faces(faces[:40])
    assert calls == [6]  # 3 faces and their mirror images; 80 images went to TensorFlow


def test_copy_matches_the_keras_model_without_flip_averaging(exported, faces):
    model, _ = load_model(exported)
    forward = lite.LiteForward(exported.with_suffix(".tflite").read_bytes())
    batch = faces[:7].astype(np.float32)[..., None]
    np.testing.assert_allclose(forward.try_call(batch), np.asarray(model(batch, training=False)), rtol=0, atol=ROUNDING)


def test_a_busy_interpreter_hands_the_batch_to_tensorflow(exported, faces):
    served = load_predictor(exported)
    expected = served.predict_faces(faces[:2])
    with served._lite._lock:  # another request is inside the interpreter
        assert served._lite.try_call(faces[:1].astype(np.float32)[..., None]) is None
        np.testing.assert_allclose(served.predict_faces(faces[:2]), expected, rtol=0, atol=ROUNDING)


def _copy_model(exported, destination):
    destination.mkdir()
    for path in exported.parent.glob("small.*"):
        shutil.copy(path, destination / path.name)
    return destination / exported.name


def test_a_copy_made_from_another_keras_file_is_ignored(exported, tmp_path, caplog, faces):
    path = _copy_model(exported, tmp_path / "models")
    model, _ = load_model(path)
    model.set_weights([weight + 0.01 for weight in model.get_weights()])
    model.save(path)  # retrained in place, copy not remade
    with caplog.at_level(logging.WARNING, logger="fer.lite"):
        predictor = load_predictor(path)
    assert predictor.runtime == "TensorFlow"
    assert "python -m fer.lite" in caplog.text
    np.testing.assert_allclose(predictor.predict_faces(faces[:2]).sum(axis=1), 1.0, atol=ROUNDING)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_copy_leaves_tensorflow_serving(exported, tmp_path, caplog, damage):
    path = _copy_model(exported, tmp_path / "models")
    if damage == "missing":
        path.with_suffix(".tflite").unlink()
    else:
        path.with_suffix(".tflite").write_bytes(b"not a flatbuffer" * 100)
    with caplog.at_level(logging.WARNING, logger="fer.lite"):
        predictor = load_predictor(path)
    assert predictor.runtime == "TensorFlow"
    assert "TensorFlow only" in caplog.text


@pytest.mark.parametrize("entry", [{"file": ""}, {"file": "../small.tflite"}, {"file": "sub/small.tflite"}, {"keras_sha256": "x"},
                                   "small.tflite", "weights"])
def test_a_malformed_lite_entry_leaves_tensorflow_serving(exported, tmp_path, caplog, entry):
    path = _copy_model(exported, tmp_path / "models")
    metadata = json.loads(path.with_suffix(".json").read_text())
    if entry == "weights":  # the right file and checksum, weights of a kind fer.lite does not write
        entry = {**metadata["lite"], "weights": "int4"}
    metadata["lite"] = entry  # a hand-edited JSON
    path.with_suffix(".json").write_text(json.dumps(metadata))
    with caplog.at_level(logging.WARNING, logger="fer.lite"):
        predictor = load_predictor(path)
    assert predictor.runtime == "TensorFlow"
    assert "TensorFlow only" in caplog.text


def test_a_model_without_a_copy_is_served_by_tensorflow_quietly(model_path, caplog):
    with caplog.at_level(logging.WARNING, logger="fer.lite"):
        predictor = load_predictor(model_path)
    assert predictor.runtime == "TensorFlow" and caplog.text == ""


def test_predictor_built_in_memory_has_no_copy(exported):
    model, metadata = load_model(exported)
    assert Predictor(model, metadata).runtime == "TensorFlow"  # no path: nothing to check the copy against


def test_cli_writes_copies(exported, tmp_path, capsys):
    path = _copy_model(exported, tmp_path / "models")
    path.with_suffix(".tflite").unlink()
    assert lite.main([str(path)]) == 0
    assert "wrote" in capsys.readouterr().out and path.with_suffix(".tflite").is_file()
    assert lite.main([str(tmp_path / "models" / "nothing.keras")]) == 1
    assert "error:" in capsys.readouterr().err


def _assert_concurrent_answers_match(served, faces, counts):
    """`served` answers `faces[:count]` for each count from four threads at once exactly as it does alone."""
    from concurrent.futures import ThreadPoolExecutor

    expected = {count: served.predict_faces(faces[:count]) for count in set(counts)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda count: (count, served.predict_faces(faces[:count])), counts))
    for count, probabilities in results:
        np.testing.assert_allclose(probabilities, expected[count], rtol=0, atol=ROUNDING)


def test_concurrent_requests_get_the_same_answers(exported, faces):
    """The app serves several requests at once: one uses the interpreter, the others TensorFlow, none waits or mixes."""
    _assert_concurrent_answers_match(load_predictor(exported), faces, [1, 2, 3, 5, 1, 4, 2, 16] * 4)


def test_a_tensorflow_without_tf_lite_leaves_tensorflow_serving(exported, monkeypatch, caplog):
    def missing():
        raise AttributeError("module 'tensorflow' has no attribute 'lite'")

    monkeypatch.setattr(lite, "_interpreter_class", missing)
    with caplog.at_level(logging.WARNING, logger="fer.lite"):
        assert load_predictor(exported).runtime == "TensorFlow"
    assert "TensorFlow only" in caplog.text


def _trained_copy(folder):
    """The shipped vgg_tiny_reg's .keras and .json copied into `folder` (a trained model to quantize); its .keras path."""
    from conftest import PROJECT_ROOT

    folder.mkdir(parents=True, exist_ok=True)
    for path in (PROJECT_ROOT / "models").glob("vgg_tiny_reg.*"):
        if path.suffix in (".keras", ".json"):
            shutil.copy(path, folder / path.name)
    return folder / "vgg_tiny_reg.keras"


INT8_TOLERANCE = 0.05  # int8 weights move a trained model's probabilities by about 0.001, at most 0.016 on validation


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """A trained model (the shipped vgg_tiny_reg, copied) with an int8 copy checked on faces drawn in code."""
    from conftest import write_face_tree
    from fer.data import load_faces

    folder = tmp_path_factory.mktemp("int8")
    path = _trained_copy(folder)
    check = load_faces(write_face_tree(folder / "faces", per_class=5, seed=3))
    lite.export(path, int8=True, check=check)
    return path


def test_an_int8_copy_serves_every_batch_close_to_tensorflow(int8_model, faces, monkeypatch):
    entry = json.loads(int8_model.with_suffix(".json").read_text())["lite"]
    assert entry["weights"] == "int8"
    check = entry["check"]
    assert check["faces"] == 20 and 0 <= check["mean_abs_difference"] <= check["max_abs_difference"] < INT8_TOLERANCE
    assert sum(map(sum, check["lite_confusion"])) == 20 and 0 <= check["same_top_class"] <= 1

    served = load_predictor(int8_model)
    assert served.runtime.startswith("LiteRT int8")
    monkeypatch.setenv("FER_LITE", "0")
    plain = load_predictor(int8_model)
    expected = plain.predict_faces(faces)
    monkeypatch.setattr(served, "_forward", None)  # TensorFlow is never called, whatever the batch size
    for count in (1, 5, 40):
        probabilities = served.predict_faces(faces[:count])
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=ROUNDING)
        np.testing.assert_allclose(probabilities, expected[:count], rtol=0, atol=INT8_TOLERANCE)


def test_an_int8_copy_scores_each_face_alone(int8_model, faces):
    """Activations are quantized per face, so a face's probabilities do not depend on the faces batched with it
    (and a batch above INT8_CHUNK images, split into several calls, gives the same numbers)."""
    served = load_predictor(int8_model)
    together = served.predict_faces(np.concatenate([faces] * 2))  # 80 faces: 160 images, several interpreter calls
    alone = np.concatenate([served.predict_faces(face[None]) for face in faces])
    np.testing.assert_allclose(together[:40], alone, rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(together[40:], alone, rtol=0, atol=ROUNDING)


def test_concurrent_requests_to_an_int8_copy_wait_their_turn(int8_model, faces):
    """The int8 copy's numbers are not TensorFlow's, so a request that finds it busy waits instead of using TF."""
    _assert_concurrent_answers_match(load_predictor(int8_model), faces, [1, 2, 3, 5, 1, 4, 2, 16, 40] * 3)


STATIC_TOLERANCE = 0.1  # fixed activation ranges: vgg_small_reg moves by 0.002 on average, at most 0.044 on validation


@pytest.fixture(scope="module")
def static_model(tmp_path_factory):
    """The shipped vgg_tiny_reg, copied, with a static-range int8 copy calibrated on faces drawn in code."""
    from conftest import write_face_tree
    from fer.data import load_faces

    folder = tmp_path_factory.mktemp("static")
    path = _trained_copy(folder)
    calibration = load_faces(write_face_tree(folder / "train", per_class=8, seed=5)).images
    check = load_faces(write_face_tree(folder / "faces", per_class=5, seed=3))
    lite.export(path, int8=True, calibration=lite.calibration_faces(calibration), check=check)
    return path


def test_a_static_int8_copy_serves_every_batch_close_to_tensorflow(static_model, faces, monkeypatch):
    entry = json.loads(static_model.with_suffix(".json").read_text())["lite"]
    assert entry["weights"] == "int8-static" and entry["check"]["faces"] == 20
    assert 0 <= entry["check"]["mean_abs_difference"] <= entry["check"]["max_abs_difference"] < STATIC_TOLERANCE
    served = load_predictor(static_model)
    assert served.runtime.startswith("LiteRT int8-static")
    monkeypatch.setenv("FER_LITE", "0")
    expected = load_predictor(static_model).predict_faces(faces)
    monkeypatch.setattr(served, "_forward", None)  # TensorFlow is never called, whatever the batch size
    together = served.predict_faces(np.concatenate([faces] * 2))  # 160 images: several interpreter calls
    alone = np.concatenate([served.predict_faces(face[None]) for face in faces])
    np.testing.assert_allclose(together[:40], alone, rtol=0, atol=ROUNDING)  # fixed ranges: each face alone
    np.testing.assert_allclose(together[40:], alone, rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(alone, expected, rtol=0, atol=STATIC_TOLERANCE)
    # A different flatbuffer from the int8-weights copy: the activations are quantized too.
    model, _ = load_model(static_model)
    assert lite.convert(model, int8=True) != static_model.with_suffix(".tflite").read_bytes()


def test_calibration_needs_int8_and_faces(static_model, capsys):
    model, _ = load_model(static_model)
    with pytest.raises(ValueError, match="int8=True"):
        lite.convert(model, calibration=np.zeros((4, 48, 48), np.uint8))
    with pytest.raises(ValueError, match="N >= 1"):
        lite.convert(model, int8=True, calibration=np.zeros((0, 48, 48), np.uint8))
    with pytest.raises(SystemExit) as error:
        lite.main(["--calibration-data", "somewhere", str(static_model)])
    assert error.value.code == 2 and "add --int8" in capsys.readouterr().err
    sample = lite.calibration_faces(np.arange(1000 * 4).reshape(1000, 2, 2), count=10)
    assert len(sample) == 10 and len(np.unique(sample[:, 0, 0])) == 10  # ten different faces, the same each time
    np.testing.assert_array_equal(sample, lite.calibration_faces(np.arange(1000 * 4).reshape(1000, 2, 2), count=10))


def test_cli_writes_an_int8_copy_and_reports_the_check(int8_model, tmp_path, capsys):
    from conftest import write_face_tree

    folder = tmp_path / "models"
    folder.mkdir()
    for path in int8_model.parent.glob("vgg_tiny_reg.*"):
        shutil.copy(path, folder / path.name)
    faces_dir = write_face_tree(tmp_path / "faces", per_class=2, seed=4)
    assert lite.main(["--int8", "--check-data", str(faces_dir), str(folder / "vgg_tiny_reg.keras")]) == 0
    out = capsys.readouterr().out
    assert "int8 weights" in out and "on 8 faces" in out and "same top class" in out
    calibration_dir = write_face_tree(tmp_path / "train", per_class=3, seed=6)
    assert lite.main(["--int8", "--calibration-data", str(calibration_dir), str(folder / "vgg_tiny_reg.keras")]) == 0
    assert "int8-static weights" in capsys.readouterr().out
    assert lite.main([str(folder / "vgg_tiny_reg.keras")]) == 0  # back to float32: the check entry goes too
    entry = json.loads((folder / "vgg_tiny_reg.json").read_text())["lite"]
    assert entry["weights"] == "float32" and "check" not in entry
