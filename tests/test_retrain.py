"""Retraining from reviewers' corrections: what the corrections do to the training set, the gate, and the one-call
path the app uses. Models here are a two-layer probe (mean brightness -> class) that trains in about a second."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from fer import corrections, labels, train
from fer.config import CLASS_NAMES, PreprocessConfig
from fer.data import find_split, load_faces
from fer.gate import GateRule, apply_decision, decide, gate
from fer.models import move_pointer, read_history
from fer.registry import current_model_path, read_metadata, write_json_atomic
from conftest import write_face_tree


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_face_tree(root / "train", per_class=4, seed=1)
    write_face_tree(root / "validation", per_class=3, seed=2)
    return root


def write_probe_model(directory, name, data_root, always=None, make_current=False):
    """A model whose logits are a nearest-class-mean rule on mean brightness (right on write_face_tree faces),
    or, with `always` set, one that predicts that class for every face."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(48, 48, 1), name="face")
    features = layers.GlobalAveragePooling2D()(layers.Rescaling(1.0 / 255.0)(inputs))
    outputs = layers.Dense(len(CLASS_NAMES), activation="softmax")(features)
    model = keras.Model(inputs, outputs, name="probe")
    if always is None:
        faces = load_faces(data_root / "train")
        means = np.array([faces.images[faces.labels == k].mean() / 255.0 for k in range(len(CLASS_NAMES))])
        # -(x - m)^2 = 2 m x - m^2 up to a term shared by every class; scaled so the softmax is confident
        kernel, bias = 200.0 * 2 * means[None, :], -200.0 * means ** 2
    else:
        kernel, bias = np.zeros((1, len(CLASS_NAMES))), 10.0 * (np.arange(len(CLASS_NAMES)) == CLASS_NAMES.index(always))
    model.layers[-1].set_weights([kernel.astype("float32"), bias.astype("float32")])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.keras"
    model.save(path)
    write_json_atomic(path.with_suffix(".json"), {
        "name": name, "classes": list(CLASS_NAMES), "image_size": 48, "arch": "probe",
        "preprocess": PreprocessConfig().to_dict(), "inference": {"flip_average": True, "temperature": 1.0},
        "created": "2026-01-01T00:00:00+00:00",
    })
    if make_current:
        move_pointer(path, "use", directory)
    return path


def face_at(dataset, path_end):
    index = next(i for i, path in enumerate(dataset.paths) if path.endswith(path_end))
    return index, dataset.images[index]


def test_corrections_relabel_remove_add_and_keep_validation_out(data_root, tmp_path):
    validation = load_faces(data_root / "validation")
    _, held_out_face = face_at(validation, "sad/face_000.png")
    shutil.copy(data_root / "validation" / "sad" / "face_000.png", data_root / "train" / "sad" / "copy_of_val.png")
    train_set = load_faces(data_root / "train")
    labels_dir = tmp_path / "labels"
    happy_index, happy_face = face_at(train_set, "happy/face_000.png")
    _, sad_face = face_at(train_set, "sad/face_001.png")
    _, neutral_face = face_at(train_set, "neutral/face_002.png")
    new_face = np.full((48, 48), 7, np.uint8)  # only in labels/faces/

    labels.add_correction(happy_face, "surprise", "ana", original_label="happy", labels_dir=labels_dir)
    labels.add_correction(happy_face, "sad", "ana", original_label="happy", labels_dir=labels_dir)  # supersedes
    labels.add_correction(sad_face, "sad", "ana", original_label="sad", labels_dir=labels_dir)
    labels.add_correction(neutral_face, labels.NOT_A_FACE, "ana", original_label="neutral", labels_dir=labels_dir)
    labels.add_correction(new_face, "surprise", "ana", labels_dir=labels_dir)
    labels.add_correction(held_out_face, "happy", "ana", original_label="sad", labels_dir=labels_dir)

    read = corrections.read(labels.corrections_path(labels_dir))
    assert read.rows == 6 and len(read.resolved) == 5
    assert read.sha256 == hashlib.sha256(labels.corrections_path(labels_dir).read_bytes()).hexdigest()
    corrected, summary = corrections.apply(train_set, read, set(validation.hashes()))

    assert (summary.labels_changed, summary.confirmed, summary.removed, summary.added) == (1, 1, 1, 1)
    assert summary.held_out == [face_sha(held_out_face)] and summary.not_found == 0
    by_hash = dict(zip(corrected.hashes(), corrected.labels))
    assert by_hash[face_sha(happy_face)] == CLASS_NAMES.index("sad")
    assert by_hash[face_sha(new_face)] == CLASS_NAMES.index("surprise")
    assert face_sha(neutral_face) not in by_hash
    assert face_sha(held_out_face) not in by_hash  # its copy in train stays out: the gate scores on that image
    assert len(corrected) == len(train_set) - 2 + 1
    assert train_set.labels[happy_index] == CLASS_NAMES.index("happy")  # the input is not modified


def face_sha(face):
    from fer.preprocess import face_sha256

    return face_sha256(face)


def write_bad_corrections(path):
    labels.add_correction(np.zeros((48, 48), np.uint8), "sad", "ana", labels_dir=path.parent)
    with path.open("a") as stream:
        stream.write("2,not-a-hash,faces/x.png,upload,sad,angry\n")


def test_corrupt_corrections_stop_training_before_anything_is_written(data_root, tmp_path, capsys):
    bad = tmp_path / "labels" / "corrections.csv"
    write_bad_corrections(bad)
    parent = write_probe_model(tmp_path / "parents", "probe", data_root)
    out = tmp_path / "models" / "candidate"
    for extra in ([], ["--init-from", str(parent)]):
        status = train.main(["--data", str(data_root), "--labels", str(bad), "--epochs", "1", "--out", str(out), *extra])
        error = capsys.readouterr().err.strip()
        assert status == 2
        assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
        assert "line 3" in error
    assert not out.parent.exists() or not any(out.parent.iterdir())

    status = train.main(["--data", str(data_root), "--labels", str(tmp_path / "missing.csv"), "--out", str(out)])
    assert status == 2 and "No corrections file" in capsys.readouterr().err


def test_fine_tune_applies_corrections_and_records_them(data_root, tmp_path, capsys):
    models = tmp_path / "models"
    parent = write_probe_model(models, "probe", data_root, make_current=True)
    train_set = load_faces(data_root / "train")
    labels_dir = tmp_path / "labels"
    labels.add_correction(face_at(train_set, "happy/face_000.png")[1], "neutral", "ana", labels_dir=labels_dir)
    labels.add_correction(face_at(train_set, "sad/face_000.png")[1], labels.NOT_A_FACE, "ana", labels_dir=labels_dir)
    labels.add_correction(np.full((48, 48), 9, np.uint8), "happy", "ana", labels_dir=labels_dir)
    csv_path = labels.corrections_path(labels_dir)

    status = train.main(["--data", str(data_root), "--labels", str(csv_path), "--fine-tune", "--epochs", "1",
                         "--batch-size", "8", "--out", str(models / "probe-r1")])
    assert status == 0, capsys.readouterr().err
    metadata = read_metadata(models / "probe-r1.keras")
    assert metadata["parent"] == parent.stem
    assert metadata["train_config"]["learning_rate"] == train.FINE_TUNE_LEARNING_RATE
    assert metadata["train_config"]["epochs"] == 1 and metadata["arch"] == "probe"
    recorded = metadata["corrections"]
    assert recorded["sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert (recorded["rows"], recorded["labels_changed"], recorded["removed"], recorded["added"]) == (3, 1, 1, 1)
    assert metadata["data"]["train_counts"] == {"happy": 4, "sad": 3, "neutral": 5, "surprise": 4}
    assert metadata["data"]["train_counts_before_corrections"] == {name: 4 for name in CLASS_NAMES}
    assert current_model_path(models).stem == "probe"  # no --gate: nothing promoted
    assert "1 labels changed, 1 removed, 1 added" in capsys.readouterr().out


def report(macro_f1, sad_f1, neutral_f1, accuracy=0.5):
    return {"accuracy": accuracy, "macro_f1": macro_f1, "per_class": {
        "happy": {"f1": 0.8}, "sad": {"f1": sad_f1}, "neutral": {"f1": neutral_f1}, "surprise": {"f1": 0.7}}}


@pytest.mark.parametrize("candidate, passed", [
    (report(0.600, 0.50, 0.55), True),   # equal
    (report(0.596, 0.491, 0.56), True),  # small drops within both tolerances
    (report(0.650, 0.60, 0.60), True),   # better
    (report(0.594, 0.50, 0.55), False),  # macro-F1 dropped 0.006 > 0.005
    (report(0.620, 0.48, 0.60), False),  # sad F1 dropped 0.02 even though macro-F1 rose
    (report(0.620, 0.55, 0.53), False),  # neutral F1 dropped 0.02
])
def test_rule_limits_macro_f1_and_sad_neutral_drops(candidate, passed):
    ok, checks, reason = decide(report(0.600, 0.50, 0.55), candidate, GateRule())
    assert ok is passed
    assert [check["metric"] for check in checks] == ["sad F1", "neutral F1", "macro-F1"]
    assert ("dropped" in reason) is not passed


def test_gate_rejects_a_worse_candidate_and_keeps_current(data_root, tmp_path):
    models = tmp_path / "models"
    good = write_probe_model(models, "good", data_root, make_current=True)
    broken = write_probe_model(models, "broken", data_root, always="happy")
    result = apply_decision(gate(broken, good, data_root, GateRule()), models)

    assert not result.promoted and result.status == "rejected" and "sad F1 dropped" in result.reason
    assert result.current_report["macro_f1"] == 1.0 and result.candidate_report["per_class"]["sad"]["f1"] == 0.0
    assert current_model_path(models) == good
    assert not broken.exists() and result.candidate == models / "candidates" / "broken.keras"
    assert read_metadata(result.candidate)["status"] == "rejected"
    assert read_history(models)[-1]["action"] == "reject"
    table = result.format()
    assert table.index("sad F1") < table.index("neutral F1") < table.index("macro-F1") < table.index("accuracy")
    assert "REJECTED" in table


def test_gate_promotes_a_better_candidate(data_root, tmp_path):
    models = tmp_path / "models"
    broken = write_probe_model(models, "broken", data_root, always="neutral", make_current=True)
    good = write_probe_model(models, "good", data_root)
    result = apply_decision(gate(good, broken, data_root / "validation", GateRule()), models)

    assert result.promoted
    assert current_model_path(models) == good
    gate_record = read_metadata(good)["gate"]
    assert gate_record["status"] == "promoted" and gate_record["current"] == "broken"
    assert gate_record["candidate_report"]["macro_f1"] == 1.0
    event = read_history(models)[-1]
    assert (event["action"], event["model"], event["previous"]) == ("promote", "good", "broken")


def test_retrain_from_corrections_fine_tunes_gates_and_reports_progress(data_root, tmp_path):
    models = tmp_path / "models"
    write_probe_model(models, "probe", data_root, make_current=True)
    labels_dir = tmp_path / "labels"
    labels.add_correction(np.full((48, 48), 9, np.uint8), "happy", "ana", labels_dir=labels_dir)
    csv_path = labels.corrections_path(labels_dir)
    # A learning rate this small leaves the probe's predictions as they were, so the gate's verdict is certain.
    config = train.TrainConfig(arch="probe", epochs=1, batch_size=8, learning_rate=1e-7)
    steps = []

    result = train.retrain_from_corrections(csv_path, data_root, lambda fraction, message: steps.append(fraction),
                                            models_dir=models, config=config)
    assert result.promoted, result.format()
    assert current_model_path(models) == result.candidate
    assert read_metadata(result.candidate)["parent"] == "probe"
    assert steps[0] == 0.0 and steps[-1] == 1.0
    assert all(later >= earlier - 1e-9 for earlier, later in zip(steps, steps[1:]))

    strict = GateRule(max_macro_f1_drop=-0.5)  # demands a gain no model can make: always rejects
    rejected = train.retrain_from_corrections(csv_path, data_root, models_dir=models, config=config, rule=strict)
    assert not rejected.promoted and rejected.candidate.parent == models / "candidates"
    assert current_model_path(models) == result.candidate
    assert json.loads((models / "current.json").read_text()) == {"model": result.candidate.name}
    assert find_split(data_root, "validation") == rejected.data_dir
