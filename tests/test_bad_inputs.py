"""Bad and odd inputs through the library (Predictor.predict, predict_faces, load_predictor, the data readers) and the
three CLIs (issues 2 and 7): each gives a valid result or a one-line error that names the problem, never a traceback.

The CLI runs are real subprocesses, started together once per module (each pays for importing TensorFlow).
"""

import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fixtures_bad
from conftest import write_face_tree
from fer import evaluate, predict, train
from fer.config import CLASS_NAMES
from fer.data import list_images, load_faces
from fer.errors import DataError, ImageError, ModelError
from fer.faces import detect_faces
from fer.images import load_image
from fer.predict import load_predictor

REFUSED = fixtures_bad.UNREADABLE
ROOT = Path(__file__).resolve().parent.parent
READABLE_WITH_A_FACE = ["photo.jpg", "photo.png", "exif_rotated.jpg"]
READABLE_WITHOUT_A_FACE = [
    "gray16.png", "gray16_dark.png", "rgb16.png", "cmyk.jpg", "animated.gif", "animated.webp", "blocks.webp",
    "blocks.bmp", "blocks.tiff", "palette.png", "palette_transparent.png", "gray.png", "gray_alpha.png",
    "float.tiff", "int32.tiff", "one_pixel.png", "black.png", "white.png",
]
# TensorFlow 2.21 prints these from C++ whatever TF_CPP_MIN_LOG_LEVEL says (tensorflow/tensorflow#100442).
TENSORFLOW_NOTICE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "
    r"|To enable the following instructions:)"
)


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut):
    return fixtures_bad.write_image_files(tmp_path_factory.mktemp("bad_files"), astronaut)


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, model_path):
    return fixtures_bad.write_bad_models(tmp_path_factory.mktemp("bad_models"), model_path)


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    return fixtures_bad.write_bad_data(tmp_path_factory.mktemp("bad_data"))


def assert_valid_faces(faces, image_shape, classes=CLASS_NAMES):
    """Predictor.predict's documented output: boxes inside the image, one probability per class summing to 1."""
    height, width = image_shape[:2]
    assert isinstance(faces, list)
    for face in faces:
        assert set(face) == {"box", "probabilities"}
        x, y, w, h = face["box"]
        assert all(isinstance(v, int) for v in face["box"])
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height
        probabilities = face["probabilities"]
        assert list(probabilities) == list(classes)
        assert all(0.0 <= p <= 1.0 and np.isfinite(p) for p in probabilities.values())
        assert abs(sum(probabilities.values()) - 1.0) < 1e-5


def overlap(a, b):
    """Intersection over union of two (x, y, w, h) boxes."""
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# ---- Predictor.predict on files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", READABLE_WITH_A_FACE + READABLE_WITHOUT_A_FACE)
def test_readable_files_give_valid_predictions(predictor, files, name):
    faces = predictor.predict(files[name])
    assert_valid_faces(faces, load_image(files[name]).shape)
    assert len(faces) == (1 if name in READABLE_WITH_A_FACE else 0)
    whole = predictor.predict(files[name], whole_image=True)
    assert_valid_faces(whole, load_image(files[name]).shape)
    assert len(whole) == 1


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unreadable_files_raise_image_error_naming_the_problem(predictor, files, name):
    with pytest.raises(ImageError, match=re.escape(REFUSED[name])) as caught:
        predictor.predict(files[name])
    assert str(files[name]) in str(caught.value)


def test_exif_rotated_photo_puts_the_box_on_the_face(predictor, files, astronaut):
    upright_box = detect_faces(astronaut)[0]
    stored_sideways = np.asarray(Image.open(files["exif_rotated.jpg"]).convert("RGB"))
    assert predictor.predict(stored_sideways) == []  # the detector finds no face in the pixels as stored...
    faces = predictor.predict(files["exif_rotated.jpg"])  # ...and the face once the EXIF tag stands them up
    assert len(faces) == 1
    assert overlap(faces[0]["box"], upright_box) > 0.8


def test_one_pixel_image(predictor, files):
    assert predictor.predict(files["one_pixel.png"]) == []
    whole = predictor.predict(files["one_pixel.png"], whole_image=True)
    assert whole[0]["box"] == [0, 0, 1, 1]
    assert_valid_faces(whole, (1, 1))


def test_a_one_pixel_tall_strip_classified_whole(predictor, files):
    whole = predictor.predict(files["strip.png"], whole_image=True)
    assert whole[0]["box"] == [0, 0, 2000, 1]
    assert_valid_faces(whole, (1, 2000))


def test_a_one_pixel_tall_strip_has_no_face(predictor, files):
    assert predictor.predict(files["strip.png"]) == []


@pytest.mark.parametrize("name", ["black.png", "white.png"])
def test_uniform_images_have_no_face(predictor, files, name):
    assert predictor.predict(files[name]) == []


def test_a_10000x8000_photo_is_handled_within_memory(predictor, astronaut, tmp_path):
    scale = 8  # the astronaut enlarged to 4096x4096, so the face is still found on the 640-pixel detection copy
    picture, (left, top) = fixtures_bad.huge_photo(astronaut, face_scale=scale)
    path = tmp_path / "huge.jpg"
    path.write_bytes(fixtures_bad.encode(picture, "JPEG", quality=85))
    del picture
    tracemalloc.start()
    try:
        faces = predictor.predict(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_valid_faces(faces, (8000, 10000))
    assert len(faces) == 1
    x, y, w, h = detect_faces(astronaut)[0]
    expected = (left + scale * x, top + scale * y, scale * w, scale * h)
    assert overlap(faces[0]["box"], expected) > 0.6
    rgb_bytes = 8000 * 10000 * 3
    assert peak < 2.5 * rgb_bytes, f"NumPy peak {peak / 2**20:.0f} MB for a {rgb_bytes / 2**20:.0f} MB picture"


# ---- Predictor.predict and predict_faces on arrays ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, bool])
def test_arrays_of_other_dtypes_still_find_the_face(predictor, astronaut, dtype):
    if dtype is bool:
        array = astronaut > 127
        expected = None  # a two-tone picture: valid output is all we ask
    else:
        scale = {np.uint8: 1, np.uint16: 257, np.float32: 1 / 255, np.float64: 1.0}[dtype]
        array = (astronaut.astype(np.float64) * scale).astype(dtype)
        expected = 1
    faces = predictor.predict(array)
    assert_valid_faces(faces, astronaut.shape)
    if expected is not None:
        assert len(faces) == expected


@pytest.mark.parametrize("array, words", [
    (np.zeros((64, 64, 2), np.uint8), "shape"),
    (np.zeros((1, 64, 64, 3), np.uint8), "shape"),
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    (np.full((64, 64), -np.inf), "infinite"),
    (np.full((64, 64), -3, np.int16), "negative"),
    (np.zeros((64, 64), complex), "dtype"),
    (np.full((64, 64), None, dtype=object), "dtype"),
], ids=["two channels", "batch axis", "empty", "NaN", "-inf", "negative", "complex", "object"])
def test_bad_arrays_raise_image_error(predictor, array, words):
    with pytest.raises(ImageError, match=words):
        predictor.predict(array)


@pytest.mark.parametrize("faces, words", [
    (np.zeros((2, 48, 48), np.float32), "uint8"),
    (np.full((2, 48, 48), np.nan, np.float32), "uint8"),
    (np.zeros((2, 48, 48, 1), np.uint8), r"\(N, 48, 48\)"),
    (np.zeros((2, 64, 64), np.uint8), r"\(N, 48, 48\)"),
    (np.zeros((48,), np.uint8), r"\(N, 48, 48\)"),
    (np.zeros((2, 48, 48, 3), np.uint8), r"\(N, 48, 48\)"),
    ([[[0] * 48] * 48], "uint8"),
], ids=["float32", "NaN", "channel axis", "64x64", "1-D", "RGB", "nested list"])
def test_predict_faces_refuses_what_preprocess_face_never_makes(predictor, faces, words):
    with pytest.raises(ImageError, match=words):
        predictor.predict_faces(faces)


def test_predict_faces_on_edge_batches(predictor):
    assert predictor.predict_faces(np.zeros((0, 48, 48), np.uint8)).shape == (0, 4)
    for faces in (np.zeros((48, 48), np.uint8), np.full((3, 48, 48), 255, np.uint8)):
        probabilities = predictor.predict_faces(faces)
        assert probabilities.shape[1] == 4 and np.all(np.isfinite(probabilities))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_predict_faces_refuses_a_ragged_list_with_image_error(predictor):
    with pytest.raises(ImageError, match=r"\(N, 48, 48\)"):
        predictor.predict_faces([np.zeros((48, 48), np.uint8), np.zeros((40, 48), np.uint8)])


# ---- model files ---------------------------------------------------------------------------------------------------

MODEL_ERRORS = {  # fixtures_bad.write_bad_models name -> words the ModelError must contain
    "missing": "No model at",
    "no_json": "No model description",
    "mismatched_classes": "outputs 4 classes but",
    "wrong_image_size": "image_size 64",
    "corrupt": "corrupt",
    "truncated": "corrupt",
    "invalid_json": "not valid JSON",
    "json_lacks_keys": "lacks classes, image_size, preprocess",
}


@pytest.mark.parametrize("name", sorted(MODEL_ERRORS))
def test_broken_models_raise_model_error(bad_models, name):
    with pytest.raises(ModelError, match=MODEL_ERRORS[name]) as caught:
        load_predictor(bad_models[name])
    assert bad_models[name].stem in str(caught.value)


def test_a_model_json_that_is_not_an_object_raises_model_error(bad_models):
    with pytest.raises(ModelError, match="JSON object"):
        load_predictor(bad_models["json_not_an_object"])


@pytest.mark.parametrize("name", ["missing", "no_json", "mismatched_classes", "invalid_json", "truncated"])
def test_predict_and_evaluate_main_report_broken_models_in_one_line(bad_models, bad_data, files, name, capsys):
    assert predict.main([str(files["photo.jpg"]), "--model", str(bad_models[name])]) == 2
    assert evaluate.main(["--model", str(bad_models[name]), "--data", str(bad_data["mixed"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") and MODEL_ERRORS[name] in line for line in lines)


def test_training_from_a_corrupt_model_fails_in_one_line_and_writes_nothing(bad_models, tmp_path, capsys):
    data = tmp_path / "data"
    write_face_tree(data / "train", per_class=2)
    write_face_tree(data / "validation", per_class=1)
    out = tmp_path / "models" / "child"
    assert train.main(["--data", str(data), "--init-from", str(bad_models["corrupt"]), "--out", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "corrupt.keras" in errors[0] and "corrupt" in errors[0]
    assert not out.parent.exists() or not any(out.parent.iterdir())


# ---- data folders ----------------------------------------------------------------------------------------------------

def test_a_folder_with_none_of_the_classes_is_refused(bad_data):
    with pytest.raises(DataError, match="none of the class folders happy, sad, neutral, surprise .found: cats, dogs"):
        list_images(bad_data["no_classes"])
    with pytest.raises(DataError, match="No such dataset folder"):
        list_images(bad_data["no_classes"] / "absent")


def test_a_folder_of_unreadable_images_is_refused(bad_data):
    with pytest.raises(DataError, match="No readable images"):
        load_faces(bad_data["unreadable_split"] / "train")


def test_train_main_refuses_unreadable_and_classless_folders(bad_data, tmp_path, capsys):
    out = tmp_path / "models" / "m"
    assert train.main(["--data", str(bad_data["unreadable_split"]), "--out", str(out)]) == 2
    assert train.main(["--data", str(bad_data["no_classes_split"]), "--out", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert "No readable images" in errors[0] and "none of the class folders" in errors[1]
    assert not out.parent.exists()


def test_evaluate_skips_unreadable_files_and_scores_the_rest(bad_data, model_path, tmp_path, caplog):
    out = tmp_path / "report.json"
    assert evaluate.main(["--model", str(model_path), "--data", str(bad_data["mixed"]), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n_images"] == 4 and np.asarray(report["confusion"]).sum() == 4
    skipped = " ".join(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    assert "notes.jpg" in skipped and "bomb.png" in skipped and "README.txt" not in skipped


# ---- the CLIs as subprocesses ------------------------------------------------------------------------------------------

PREDICT_FILES = sorted(REFUSED) + READABLE_WITH_A_FACE + READABLE_WITHOUT_A_FACE


@pytest.fixture(scope="module")
def cli(files, bad_models, bad_data, model_path, tmp_path_factory):
    """Every CLI run below, started at once and waited for together: {name: CompletedProcess}."""
    scratch = tmp_path_factory.mktemp("cli")
    empty_models = scratch / "no_models"
    empty_models.mkdir()
    model = ["--model", str(model_path)]
    commands = {
        "predict_files": ["fer.predict", *[str(files[name]) for name in PREDICT_FILES], *model],
        "predict_no_current_model": ["fer.predict", str(files["photo.jpg"])],
        "predict_corrupt_model": ["fer.predict", str(files["photo.jpg"]), "--model", str(bad_models["corrupt"])],
        "evaluate_no_classes": ["fer.evaluate", *model, "--data", str(bad_data["no_classes"])],
        "train_no_classes": ["fer.train", "--data", str(bad_data["no_classes_split"]), "--out", str(scratch / "out" / "m")],
    }
    environment = {**os.environ, "FER_MODELS_DIR": str(empty_models), "TF_CPP_MIN_LOG_LEVEL": "3"}
    running = {
        name: subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, command in commands.items()
    }
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    results["scratch"] = scratch
    return results


def our_stderr_lines(result):
    """stderr without TensorFlow's import notices; fails on any traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip() and not TENSORFLOW_NOTICE.match(line)]


def assert_one_error_line(result, *words):
    lines = [line for line in our_stderr_lines(result) if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert all(word in lines[0] for word in words), lines[0]


def test_predict_cli_reports_each_bad_file_in_one_line_and_predicts_the_rest(cli, files):
    result = cli["predict_files"]
    assert result.returncode == 1
    lines = our_stderr_lines(result)
    assert len(lines) == len(REFUSED) and all(line.startswith("error: ") for line in lines), result.stderr
    for name, words in REFUSED.items():
        words = "folder without image files" if name == "folder.jpg" else words  # the CLI searches folders
        matching = [line for line in lines if str(files[name]) in line]
        assert len(matching) == 1 and words in matching[0], (name, matching)
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [output["image"] for output in outputs] == [str(files[name]) for name in PREDICT_FILES if name not in REFUSED]
    for output, name in zip(outputs, READABLE_WITH_A_FACE + READABLE_WITHOUT_A_FACE):
        assert_valid_faces(output["faces"], load_image(files[name]).shape)
        assert len(output["faces"]) == (1 if name in READABLE_WITH_A_FACE else 0), name


@pytest.mark.parametrize("run, words", [
    ("predict_no_current_model", ["current.json", "python -m fer.models use"]),
    ("predict_corrupt_model", ["corrupt.keras", "corrupt"]),
    ("evaluate_no_classes", ["none of the class folders", "cats, dogs"]),
    ("train_no_classes", ["none of the class folders", "cats, dogs"]),
])
def test_clis_fail_with_one_error_line(cli, run, words):
    result = cli[run]
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert_one_error_line(result, *words)


def test_failed_training_writes_nothing(cli):
    assert not (cli["scratch"] / "out").exists()
