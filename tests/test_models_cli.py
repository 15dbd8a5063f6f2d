"""`python -m fer.models`: list versions, use one, roll back; every pointer move lands in models/history.json.

Pointer moves only read the JSONs, so the `.keras` files here are empty placeholders and no TensorFlow is needed."""

import json

import pytest

from fer import models
from fer.config import CLASS_NAMES, PreprocessConfig
from fer.errors import ModelError
from fer.registry import write_json_atomic


def write_version(directory, name, created, macro_f1=0.6, sad_f1=0.5, neutral_f1=0.55, **extra):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.keras").write_bytes(b"")
    per_class = {"happy": {"f1": 0.8}, "sad": {"f1": sad_f1}, "neutral": {"f1": neutral_f1}, "surprise": {"f1": 0.7}}
    write_json_atomic(directory / f"{name}.json", {
        "name": name, "classes": list(CLASS_NAMES), "image_size": 48, "preprocess": PreprocessConfig().to_dict(),
        "created": created, "metrics": {"validation": {"accuracy": 0.7, "macro_f1": macro_f1, "per_class": per_class}},
        **extra,
    })
    return directory / f"{name}.keras"


@pytest.fixture
def models_dir(tmp_path):
    directory = tmp_path / "models"
    write_version(directory, "v1", "2026-01-01T10:00:00+00:00", macro_f1=0.61)
    write_version(directory, "v2", "2026-01-02T10:00:00+00:00", macro_f1=0.62)
    write_version(directory, "v3", "2026-01-03T10:00:00+00:00", macro_f1=0.63, parent="v2")
    write_version(directory / "candidates", "v4", "2026-01-04T10:00:00+00:00", macro_f1=0.40,
                  status="rejected", gate={"reason": "sad F1 dropped 0.2000 (allowed 0.0100)"})
    (directory / "out.json").write_text(json.dumps({"accuracy": 0.5}))  # an evaluation report, not a model
    models.use("v1", directory)
    models.move_pointer(directory / "v2.keras", "promote", directory)
    models.move_pointer(directory / "v3.keras", "promote", directory)
    return directory


def cli(capsys, *argv):
    status = models.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_shows_versions_scores_status_and_the_current_one(models_dir, capsys):
    status, out, _ = cli(capsys, "--models-dir", str(models_dir), "list")
    assert status == 0
    lines = out.splitlines()
    assert "version" in lines[0] and "macro-F1" in lines[0] and "sad F1" in lines[0]
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["v1", "v2", "v3", "v4"]  # oldest first; out.json is not a model
    assert rows["v3"].startswith("*") and "(current)" in rows["v3"]
    assert "2026-01-03 10:00" in rows["v3"] and "0.6300" in rows["v3"] and "0.5000" in rows["v3"]
    assert "promoted" in rows["v1"] and "rejected" in rows["v4"]


def test_rollback_goes_back_one_promotion_at_a_time_and_is_recorded(models_dir, capsys):
    status, out, _ = cli(capsys, "--models-dir", str(models_dir), "rollback")
    assert status == 0 and "current model: v2 (was v3)" in out
    assert json.loads((models_dir / "current.json").read_text()) == {"model": "v2.keras"}
    assert cli(capsys, "--models-dir", str(models_dir), "rollback")[0] == 0
    assert json.loads((models_dir / "current.json").read_text()) == {"model": "v1.keras"}
    events = models.read_history(models_dir)
    assert [(event["action"], event["model"], event["previous"]) for event in events[-2:]] == [
        ("rollback", "v2", "v3"), ("rollback", "v1", "v2")]
    rows = {row["version"]: row for row in models.list_models(models_dir)}
    assert rows["v3"]["status"] == "rolled back" and rows["v1"]["current"]

    status, _, err = cli(capsys, "--models-dir", str(models_dir), "rollback")  # v1 was the first: nothing before it
    assert status == 2 and err.startswith("error: ") and "rollback VERSION" in err and len(err.splitlines()) == 1


def test_rollback_to_a_named_version_and_use(models_dir, capsys, monkeypatch):
    monkeypatch.setenv("FER_MODELS_DIR", str(models_dir))  # the default folder is read at call time
    assert cli(capsys, "rollback", "v1")[0] == 0
    assert models.current_name() == "v1"
    assert cli(capsys, "use", "v3.keras")[0] == 0
    assert models.current_name() == "v3"
    assert models.read_history()[-1]["action"] == "use"


@pytest.mark.parametrize("argv, message", [
    (["use", "nope"], "No model"),
    (["use", "v4"], "rejected by the gate"),
    (["rollback", "nope"], "No model"),
])
def test_bad_requests_fail_in_one_line_and_leave_the_pointer(models_dir, capsys, argv, message):
    status, _, err = cli(capsys, "--models-dir", str(models_dir), *argv)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert models.current_name(models_dir) == "v3"


def test_empty_folder_and_resolving_names(tmp_path, models_dir, capsys):
    status, out, _ = cli(capsys, "--models-dir", str(tmp_path / "empty"), "list")
    assert status == 0 and "No models" in out
    assert models.resolve_model("current", models_dir) == models_dir / "v3.keras"
    assert models.resolve_model(models_dir / "current", tmp_path) == models_dir / "v3.keras"
    assert models.resolve_model(models_dir / "v2", tmp_path) == models_dir / "v2.keras"
    assert models.resolve_model("v1", models_dir) == models_dir / "v1.keras"
    with pytest.raises(ModelError):
        models.resolve_model("v9", models_dir)


def test_add_copies_a_trained_model_in_under_a_new_name_without_serving_it(models_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    source = write_version(runs, "slim_d", "2026-01-05T10:00:00+00:00", lite={"file": "slim_d.tflite"})
    (runs / "slim_d.tflite").write_bytes(b"lite")
    (runs / "slim_d.history.csv").write_text("epoch\n0\n")
    status, out, _ = cli(capsys, "--models-dir", str(models_dir), "add", str(source), "--name", "vgg_slim_votes")
    assert status == 0 and "gate it" in out
    metadata = json.loads((models_dir / "vgg_slim_votes.json").read_text())
    assert metadata["name"] == "vgg_slim_votes" and metadata["lite"]["file"] == "vgg_slim_votes.tflite"
    assert metadata["added_from"] == str(source)
    assert (models_dir / "vgg_slim_votes.tflite").read_bytes() == b"lite"
    assert (models_dir / "vgg_slim_votes.history.csv").is_file() and (models_dir / "slim_d.keras").exists() is False
    assert models.current_name(models_dir) == "v3"  # nothing is served until the gate promotes it
    status, _, err = cli(capsys, "--models-dir", str(models_dir), "add", str(source), "--name", "vgg_slim_votes")
    assert status == 2 and "already exist" in err
    for bad in ("../x", ".hidden"):
        status, _, err = cli(capsys, "--models-dir", str(models_dir), "add", str(source), "--name", bad)
        assert status == 2 and "file stem" in err
    status, _, err = cli(capsys, "--models-dir", str(models_dir), "add", str(tmp_path / "none.keras"))
    assert status == 2 and "No model at" in err
