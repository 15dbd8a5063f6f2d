"""A one-epoch training run on synthetic faces writes a servable model with a complete JSON."""

import io
import json
import zipfile

import h5py
import numpy as np
import pytest

from fer import train
from fer.config import CLASS_NAMES
from fer.predict import load_predictor
from conftest import write_face_tree


def _face_data(tmp_path, per_class: int):
    """A data root with train/ (`per_class` faces a class) and validation/ (3 a class) drawn in code."""
    data = tmp_path / "data"
    write_face_tree(data / "train", per_class=per_class, seed=1)
    write_face_tree(data / "validation", per_class=3, seed=2)
    return data


def test_one_epoch_run_writes_model_and_json(tmp_path):
    data = _face_data(tmp_path, per_class=8)
    (data / "train" / "angry").mkdir()  # a class we do not use is ignored
    out = tmp_path / "models" / "tiny"
    status = train.main(["--data", str(data), "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "8",
                         "--out", str(out), "--make-current"])
    assert status == 0
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["classes"] == list(CLASS_NAMES)
    assert metadata["image_size"] == 48
    assert metadata["arch"] == "seed_cnn"
    assert metadata["train_config"]["epochs"] == 1
    assert metadata["data"]["train_counts"] == {name: 8 for name in CLASS_NAMES}
    validation = metadata["metrics"]["validation"]
    assert set(validation) >= {"accuracy", "macro_f1", "per_class", "confusion", "ece_after_calibration"}
    assert validation["n_images"] == 12
    assert metadata["inference"]["temperature"] > 0
    assert json.loads((out.parent / "current.json").read_text()) == {"model": "tiny.keras"}
    assert out.with_suffix(".curves.png").is_file()
    with zipfile.ZipFile(out.with_suffix(".keras")) as archive:  # weights only: serving never needs Adam's state
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        assert "optimizer" not in weights and "layers" in weights

    assert metadata["lite"]["file"] == "tiny.tflite" and out.with_suffix(".tflite").is_file()

    predictor = load_predictor(out.with_suffix(".keras"))
    assert predictor.runtime.startswith("LiteRT")  # the copy matches the .keras file written beside it
    probabilities = predictor.predict_faces(np.zeros((2, 48, 48), np.uint8))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_arch_and_missing_data_fail_cleanly(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path), "--arch", "nope", "--out", str(tmp_path / "m")]) == 2
    assert "unknown --arch" in capsys.readouterr().err
    assert train.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    assert "no 'train' folder" in capsys.readouterr().err


def test_distillation_mixes_the_teachers_probabilities_into_the_targets(tmp_path):
    data = _face_data(tmp_path, per_class=8)
    teacher = tmp_path / "models" / "teacher"
    assert train.main(["--data", str(data), "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "8",
                       "--out", str(teacher)]) == 0

    from fer.data import load_faces

    from conftest import write_model_files

    faces = load_faces(data / "train")
    config = train.TrainConfig(arch="vgg_tiny", teacher=str(teacher.with_suffix(".keras")), teacher_weight=0.7)
    assert config.teacher == (str(teacher.with_suffix(".keras")),)  # one path is one teacher
    targets = train.distillation_targets(faces, config)
    soft = load_predictor(teacher.with_suffix(".keras")).predict_faces(faces.images)
    np.testing.assert_allclose(targets, 0.7 * soft + 0.3 * np.eye(4)[faces.labels], atol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)

    # Several teachers: an ensemble, whose served probabilities are averaged before they are mixed with the label.
    second = write_model_files(tmp_path / "teachers", "second", arch="vgg_tiny", make_current=False)
    both = train.distillation_targets(faces, train.TrainConfig(teacher=(str(teacher.with_suffix(".keras")),
                                                                        str(second)), teacher_weight=0.7))
    mean = (soft + load_predictor(second).predict_faces(faces.images)) / 2
    np.testing.assert_allclose(both, 0.7 * mean + 0.3 * np.eye(4)[faces.labels], atol=1e-6)
    assert not np.allclose(both, targets, atol=1e-3)  # the second teacher counts

    student = tmp_path / "models" / "student"
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8",
                       "--teacher", str(teacher.with_suffix(".keras")), str(second), "--out", str(student)]) == 0
    recorded = json.loads(student.with_suffix(".json").read_text())["train_config"]
    assert recorded["teacher"] == [str(teacher.with_suffix(".keras")), str(second)]
    assert recorded["teacher_weight"] == 0.7


def test_erasing_and_mixup_change_training_batches_only():
    faces = np.random.default_rng(0).integers(0, 256, size=(16, 48, 48), dtype=np.uint8)
    labels = np.arange(16) % 4
    config = train.TrainConfig(batch_size=16, erasing=1.0, mixup=0.4, augment=True)
    images, targets = next(iter(train.make_dataset(faces, labels, 4, config, training=True)))
    images, targets = np.asarray(images), np.asarray(targets)
    assert images.shape == (16, 48, 48, 1) and targets.shape == (16, 4)
    assert images.min() >= 0 and images.max() <= 255 + 1e-3  # blends of clipped faces (float rounding)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
    assert (targets.max(axis=1) < 1.0 - 1e-6).any()  # blended targets: MixUp ran
    _, plain = next(iter(train.make_dataset(faces, labels, 4, config, training=False)))
    np.testing.assert_array_equal(np.asarray(plain), np.eye(4, dtype=np.float32)[labels])  # validation untouched


def test_erasing_and_mixup_flags_reach_the_json(tmp_path, capsys):
    data = _face_data(tmp_path, per_class=8)
    out = tmp_path / "models" / "blur0.3"  # a dot in the name is part of it, not a suffix to replace
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8",
                       "--erasing", "0.5", "--mixup", "0.2", "--blur", "0.3", "--out", str(out)]) == 0
    assert {"blur0.3.keras", "blur0.3.json", "blur0.3.history.csv"} <= {f.name for f in out.parent.iterdir()}
    config = json.loads((out.parent / "blur0.3.json").read_text())["train_config"]
    assert config["erasing"] == 0.5 and config["mixup"] == 0.2 and config["blur"] == 0.3
    assert train.main(["--data", str(data), "--erasing", "2", "--out", str(tmp_path / "m")]) == 2
    assert "--erasing" in capsys.readouterr().err
    assert train.main(["--data", str(data), "--blur", "-0.1", "--out", str(tmp_path / "m")]) == 2
    assert "--blur" in capsys.readouterr().err


def test_blur_softens_the_share_of_faces_it_is_given():
    import keras

    keras.utils.set_random_seed(0)  # the sigma is drawn per batch: near its low end (0.1) a blur changes little
    faces = np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 1)).astype(np.float32)
    blur = train.augmenter(blur=1.0).layers[-1]
    assert type(blur).__name__ == "RandomGaussianBlur"
    blurred = np.asarray(blur(faces, training=True))
    assert (blurred.std(axis=(1, 2, 3)) < 0.9 * faces.std(axis=(1, 2, 3))).all()  # at share 1, every face
    np.testing.assert_array_equal(np.asarray(blur(faces, training=False)), faces)
    assert not any(type(layer).__name__ == "RandomGaussianBlur" for layer in train.augmenter().layers)


def test_optimizers_apply_decoupled_weight_decay():
    import keras

    for name, rate in (("sgd", 0.01), ("adamw", 1e-3)):
        optimizer = train.make_optimizer(train.TrainConfig(optimizer=name, weight_decay=0.5), rate)
        weight = keras.Variable(np.full((3,), 2.0, dtype=np.float32))
        optimizer.apply_gradients([(keras.ops.zeros((3,)), weight)])  # no gradient: only the decay moves it
        np.testing.assert_allclose(np.asarray(weight), 2.0 * (1 - rate * 0.5), rtol=1e-5)
    assert isinstance(train.make_optimizer(train.TrainConfig(), 1e-3), keras.optimizers.Adam)
    with pytest.raises(ValueError, match="adamw"):
        train.make_optimizer(train.TrainConfig(optimizer="adam", weight_decay=0.1), 1e-3)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        train.make_optimizer(train.TrainConfig(optimizer="rmsprop"), 1e-3)


def test_optimizer_flags_reach_the_json_and_bad_ones_fail_cleanly(tmp_path, capsys):
    data = _face_data(tmp_path, per_class=8)
    out = tmp_path / "models" / "sgd"
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8",
                       "--optimizer", "sgd", "--learning-rate", "0.01", "--weight-decay", "0.005",
                       "--out", str(out)]) == 0
    config = json.loads(out.with_suffix(".json").read_text())["train_config"]
    assert config["optimizer"] == "sgd" and config["weight_decay"] == 0.005
    assert train.main(["--data", str(data), "--weight-decay", "0.01", "--out", str(tmp_path / "m")]) == 2
    assert "--optimizer adamw or sgd" in capsys.readouterr().err
    assert train.main(["--data", str(data), "--optimizer", "sgd", "--weight-decay", "-1",
                       "--out", str(tmp_path / "m")]) == 2


def test_restrict_outputs_renormalises_the_kept_classes():
    from fer.model import build_model

    seven = build_model("vgg_tiny", num_classes=7)
    faces = np.random.default_rng(3).integers(0, 256, size=(5, 48, 48, 1)).astype(np.float32)
    full = np.asarray(seven(faces, training=False))
    four = train.restrict_outputs(seven, 4)
    assert four.output_shape == (None, 4)
    kept = full[:, :4] / full[:, :4].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(four(faces, training=False)), kept, rtol=1e-4, atol=1e-6)


def test_extra_classes_train_seven_ways_and_save_the_served_four(tmp_path, capsys):
    data = tmp_path / "data"
    write_face_tree(data / "train", per_class=6, classes=CLASS_NAMES + ("angry", "fear"), seed=1)
    write_face_tree(data / "validation", per_class=3, classes=CLASS_NAMES + ("angry",), seed=2)
    out = tmp_path / "models" / "seven"
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8",
                       "--extra-classes", "angry", "fear", "--out", str(out)]) == 0
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["classes"] == list(CLASS_NAMES)
    assert metadata["train_config"]["extra_classes"] == ["angry", "fear"]
    assert metadata["data"]["train_counts"] == {name: 6 for name in CLASS_NAMES + ("angry", "fear")}
    assert metadata["metrics"]["validation"]["n_images"] == 12  # validation angry faces are not served classes
    predictor = load_predictor(out.with_suffix(".keras"))
    assert predictor.predict_faces(np.zeros((2, 48, 48), np.uint8)).shape == (2, 4)

    # a served class named as extra, or an extra class with no faces, stops before training
    assert train.main(["--data", str(data), "--extra-classes", "sad", "--out", str(tmp_path / "m")]) == 2
    assert "already a served class" in capsys.readouterr().err
    assert train.main(["--data", str(data), "--extra-classes", "disgust", "--out", str(tmp_path / "m")]) == 2
    assert "no faces for --extra-classes disgust" in capsys.readouterr().err
    assert train.main(["--data", str(data), "--extra-classes", "angry", "Angry", "--out", str(tmp_path / "m")]) == 2
    assert "named twice" in capsys.readouterr().err


def test_mixed_precision_trains_in_bfloat16_and_saves_float32(tmp_path):
    data = _face_data(tmp_path, per_class=6)
    out = tmp_path / "models" / "bf16"
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8",
                       "--precision", "mixed_bfloat16", "--out", str(out)]) == 0
    import keras

    assert keras.config.dtype_policy().name == "float32"  # the global policy is put back
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["train_config"]["precision"] == "mixed_bfloat16"
    predictor = load_predictor(out.with_suffix(".keras"))
    assert {layer.dtype_policy.name for layer in predictor.model.layers} == {"float32"}  # served as float32
    probabilities = predictor.predict_faces(np.zeros((2, 48, 48), np.uint8))
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_an_interrupted_run_resumes_from_its_backup(tmp_path):
    data = _face_data(tmp_path, per_class=6)
    out, backup = tmp_path / "models" / "resumed", tmp_path / "backup"
    config = train.TrainConfig(arch="vgg_tiny", epochs=3, batch_size=8, patience=3, schedule="cosine")

    class Interrupted(Exception):
        pass

    def stop_after_two_epochs(fraction, message):
        if message.startswith("epoch 2/3 done"):
            raise Interrupted  # the session ends, the machine goes away ...

    try:
        train.run(data, out, config, progress=stop_after_two_epochs, backup_dir=backup)
    except Interrupted:
        pass
    assert any(backup.iterdir()) and not out.with_suffix(".keras").exists()
    assert (backup / "latest.weights.h5.bkp").is_file()  # the epoch before too: a write cut short is not fatal
    assert len(out.with_suffix(".history.csv").read_text().splitlines()) == 1 + 2

    metadata = train.run(data, out, config, backup_dir=backup)  # ... and the same call carries on at epoch 3
    logged = out.with_suffix(".history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in logged[1:]] == ["0", "1", "2"]  # one row per epoch, none repeated
    assert metadata["epochs_run"] == 3
    import csv

    epoch_seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(logged)]
    assert len(epoch_seconds) == 3 and metadata["training_seconds"] >= sum(epoch_seconds) - 0.1  # all epochs count
    assert not backup.exists()  # a finished run leaves no state to resume by mistake


def test_an_online_teacher_scores_each_augmented_batch_as_the_student_sees_it(tmp_path, capsys):
    from conftest import write_model_files
    from fer.data import load_faces

    data = _face_data(tmp_path, per_class=8)
    teacher_path = write_model_files(tmp_path / "teachers", "teacher", arch="vgg_tiny", make_current=False)
    faces = load_faces(data / "train")
    config = train.TrainConfig(arch="vgg_tiny", batch_size=8, teacher=str(teacher_path), teacher_weight=0.7,
                               teacher_online=True, erasing=0.5)
    teacher = train.online_teacher(config, faces.classes, 48)
    dataset = train.make_dataset(faces.images, faces.labels, 4, config, training=True, teacher=teacher)
    for images, targets in dataset:
        soft = np.asarray(teacher(images, training=False))
        rest = (np.asarray(targets) - 0.7 * soft) / 0.3  # what is left is the label of the face that was augmented
        np.testing.assert_allclose(rest.max(axis=1), 1.0, atol=1e-4)
        np.testing.assert_allclose(rest.sum(axis=1), 1.0, atol=1e-4)
        assert np.isin(np.round(rest, 3), [0.0, 1.0]).all()

    student = tmp_path / "models" / "student"
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8",
                       "--teacher", str(teacher_path), "--online-teacher", "--precision", "mixed_bfloat16",
                       "--out", str(student)]) == 0
    recorded = json.loads(student.with_suffix(".json").read_text())["train_config"]
    assert recorded["teacher_online"] is True and recorded["teacher"] == [str(teacher_path)]

    # Two online teachers are one frozen network that averages their probabilities, at the training precision.
    second_path = write_model_files(tmp_path / "teachers", "second", arch="vgg_small", make_current=False)
    pair = train.online_teacher(train.TrainConfig(teacher=(str(teacher_path), str(second_path)), teacher_online=True),
                                faces.classes, 48)
    singles = [train.online_teacher(train.TrainConfig(teacher=path, teacher_online=True), faces.classes, 48)
               for path in (teacher_path, second_path)]
    images = faces.images[:8, :, :, None].astype("float32")
    expected = np.mean([np.asarray(net(images, training=False)) for net in singles], axis=0)
    np.testing.assert_allclose(np.asarray(pair(images, training=False)), expected, atol=1e-5)
    # Teachers of one architecture (an ensemble of seeds) share a network name; the ensemble still builds.
    seeds = train.online_teacher(train.TrainConfig(teacher=(str(teacher_path),) * 3, teacher_online=True), faces.classes, 48)
    np.testing.assert_allclose(np.asarray(seeds(images, training=False)), np.asarray(singles[0](images, training=False)),
                               atol=1e-5)
    assert not pair.trainable

    assert train.main(["--data", str(data), "--online-teacher", "--out", str(tmp_path / "m")]) == 2
    assert "--online-teacher needs --teacher" in capsys.readouterr().err


def test_int8_copy_is_checked_on_validation_and_inherited_by_a_fine_tune(tmp_path):
    data = _face_data(tmp_path, per_class=6)
    parent, child = tmp_path / "models" / "parent", tmp_path / "models" / "child"
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8", "--int8",
                       "--out", str(parent)]) == 0
    entry = json.loads(parent.with_suffix(".json").read_text())["lite"]
    assert entry["weights"] == "int8" and entry["check"]["faces"] == 12  # compared with TensorFlow on validation
    assert load_predictor(parent.with_suffix(".keras")).runtime.startswith("LiteRT int8")
    assert train.main(["--data", str(data), "--init-from", str(parent.with_suffix(".keras")), "--epochs", "1",
                       "--batch-size", "8", "--out", str(child)]) == 0
    assert json.loads(child.with_suffix(".json").read_text())["lite"]["weights"] == "int8"

    # A static-range copy is inherited too, calibrated again on the fine-tune's training faces.
    from fer import lite
    from fer.data import load_faces

    lite.export(child.with_suffix(".keras"), int8=True,
                calibration=lite.calibration_faces(load_faces(data / "train").images))
    grandchild = tmp_path / "models" / "grandchild"
    assert train.main(["--data", str(data), "--init-from", str(child.with_suffix(".keras")), "--epochs", "1",
                       "--batch-size", "8", "--out", str(grandchild)]) == 0
    assert json.loads(grandchild.with_suffix(".json").read_text())["lite"]["weights"] == "int8-static"
    assert load_predictor(grandchild.with_suffix(".keras")).runtime.startswith("LiteRT int8-static")


def test_a_packed_dataset_trains_like_its_folders(tmp_path, capsys):
    from fer import data as fer_data

    root = tmp_path / "data"
    write_face_tree(root / "train", per_class=6, classes=CLASS_NAMES + ("angry",), seed=1)
    write_face_tree(root / "validation", per_class=3, seed=2)
    packed = tmp_path / "runs" / "faces.npz"
    assert fer_data.main(["--pack", str(root), str(packed), "--classes", *CLASS_NAMES, "angry"]) == 0
    assert "never commit it" in capsys.readouterr().out

    folders = fer_data.load_faces(root / "train", CLASS_NAMES)
    faces, folder = fer_data.load_packed(packed, "train", tuple(reversed(CLASS_NAMES)))  # re-indexed by name
    assert folder == str(root / "train") and len(faces) == len(folders) == 24
    for name in CLASS_NAMES:
        np.testing.assert_array_equal(faces.images[faces.labels == faces.classes.index(name)],
                                      folders.images[folders.labels == CLASS_NAMES.index(name)])
    seven, _ = fer_data.load_packed(packed, "train", CLASS_NAMES + ("angry",))
    assert seven.counts()["angry"] == 6

    out = tmp_path / "models" / "from_pack"
    assert train.main(["--data", str(packed), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8",
                       "--out", str(out)]) == 0
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["data"]["packed"] == str(packed)
    assert metadata["data"]["validation_dir"] == str(root / "validation")  # the gate and review read the folders
    assert metadata["data"]["train_counts"] == {name: 6 for name in CLASS_NAMES}

    # bad packs stop before training, with what to do
    assert train.main(["--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "m")]) == 2
    assert "fer.data --pack" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert train.main(["--data", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "m")]) == 2
    assert "not a packed dataset" in capsys.readouterr().err
    (tmp_path / "cut.npz").write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])  # a copy cut short
    assert train.main(["--data", str(tmp_path / "cut.npz"), "--out", str(tmp_path / "m")]) == 2
    assert "not a packed dataset" in capsys.readouterr().err
    assert train.main(["--data", str(packed), "--extra-classes", "fear", "--out", str(tmp_path / "m")]) == 2
    assert "no train faces of fear" in capsys.readouterr().err


def test_numpy_batches_reshuffle_every_epoch_and_blend_faces_with_their_targets():
    levels = np.arange(10, dtype=np.float32) * 20
    faces = np.repeat(levels.astype(np.uint8), 48 * 48).reshape(10, 48, 48)
    identity = np.eye(10, dtype=np.float32)  # one target column per face: a blended target names the faces blended
    plain = train.numpy_batches(faces, identity, train.TrainConfig(batch_size=4))
    assert len(plain) == 3

    def epoch():
        return np.concatenate([plain[i][1] for i in range(len(plain))]).argmax(axis=1)

    first = epoch()
    assert sorted(first) == list(range(10))  # every face once an epoch
    plain.on_epoch_end()
    assert not np.array_equal(first, epoch())

    images, blended = train.numpy_batches(faces, identity, train.TrainConfig(batch_size=10, mixup=0.4))[0]
    assert images.shape == (10, 48, 48, 1) and images.dtype == np.float32
    np.testing.assert_allclose(blended.sum(axis=1), 1.0, rtol=1e-6)
    assert (blended.max(axis=1) < 1 - 1e-6).any()  # MixUp ran
    np.testing.assert_allclose(images[:, 0, 0, 0], blended @ levels, atol=1e-3)  # each face blended as its target


def test_without_tf_data_training_augments_each_batch(tmp_path, monkeypatch):
    """The path JAX and PyTorch take (a lent GPU machine has no TensorFlow), run here on TensorFlow."""
    monkeypatch.setattr(train, "uses_tf_data", lambda: False)
    data = _face_data(tmp_path, per_class=8)
    out = tmp_path / "models" / "numpy_path"
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "2", "--batch-size", "8",
                       "--mixup", "0.2", "--erasing", "0.5", "--out", str(out)]) == 0
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["epochs_run"] == 2 and metadata["metrics"]["validation"]["n_images"] == 12
    served = load_predictor(out.with_suffix(".keras")).model
    assert served.name == "vgg_tiny" and not any("augment" in layer.name for layer in served.layers)
    # Online distillation takes the same path: the teacher scores each batch as the student sees it.
    student = tmp_path / "models" / "numpy_student"
    assert train.main(["--data", str(data), "--arch", "vgg_tiny", "--epochs", "1", "--batch-size", "8",
                       "--teacher", str(out.with_suffix(".keras")), "--online-teacher", "--out", str(student)]) == 0
    assert json.loads(student.with_suffix(".json").read_text())["train_config"]["teacher_online"] is True

    assert train.batch_augmenter(train.TrainConfig(augment=False)) is None
    augment = train.batch_augmenter(train.TrainConfig(erasing=1.0))
    faces = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32)
    first, second = augment(faces), augment(faces)
    assert first.shape == faces.shape and first.dtype == np.float32
    assert not np.allclose(first, faces) and not np.allclose(first, second)  # new random draws every batch

    splits = train.load_splits(data, CLASS_NAMES, CLASS_NAMES, train.PreprocessConfig())
    with pytest.raises(ValueError, match="needs Keras on TensorFlow"):
        train.fit(splits[0], splits[1], train.TrainConfig(arch="vgg_tiny", class_weighting=True), tmp_path / "m")


def test_numpy_batches_augment_each_face_before_mixup_and_ask_the_teacher_after():
    faces = np.full((6, 48, 48), 100, dtype=np.uint8)
    labels = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    seen = []

    class Teacher:
        def predict_on_batch(self, images):
            seen.append(images.copy())
            return np.tile(np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32), (len(images), 1))

    config = train.TrainConfig(batch_size=6, mixup=0.4, teacher_weight=0.7)
    batches = train.numpy_batches(faces, labels, config, augment=lambda batch: batch + 1.0, teacher=Teacher())
    images, targets = batches[0]
    np.testing.assert_allclose(images, 101.0)  # augmented first; blending equal faces keeps them equal
    np.testing.assert_array_equal(seen[0], images)  # the teacher saw the batch the student trains on
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    mixed = (targets - 0.7 * np.array([0.1, 0.2, 0.3, 0.4])) / 0.3  # what remains is the blended one-hot labels
    assert (mixed > -1e-5).all() and (mixed.max(axis=1) < 1 - 1e-6).any()


def _ema_start(tmp_path):
    """A one-epoch vgg_tiny to start averaging runs from: the data root, its .keras path, its trainable weights, and
    the training and validation faces."""
    from fer.config import PreprocessConfig
    from fer.registry import load_model

    data = _face_data(tmp_path, per_class=8)
    train.run(data, tmp_path / "start", train.TrainConfig(arch="vgg_tiny", epochs=1, batch_size=8))
    start = tmp_path / "start.keras"
    start_weights = [np.asarray(w) for w in load_model(start)[0].trainable_weights]
    faces, validation, _ = train.load_splits(data, CLASS_NAMES, CLASS_NAMES, PreprocessConfig())
    return data, start, start_weights, faces, validation


def _moved(model, start_weights) -> float:
    """How far `model`'s trainable weights are from `start_weights`: the largest absolute difference."""
    return max(np.abs(np.asarray(w) - s).max() for w, s in zip(model.trainable_weights, start_weights))


def test_ema_returns_the_averaged_weights_with_their_own_batch_norm_statistics(tmp_path, capsys):
    data, start, start_weights, faces, validation = _ema_start(tmp_path)
    rate, moved = 3e-3, {}
    for ema in (0.0, 0.999):  # 12 Adam steps of about `rate` each from the same start
        config = train.TrainConfig(arch="vgg_tiny", epochs=3, batch_size=8, patience=3, learning_rate=rate, ema=ema)
        model, history = train.fit(faces, validation, config, tmp_path / f"ema{ema}", init_from=start)
        moved[ema] = _moved(model, start_weights)
    # An average this slow stays about one step from the start (its first value): the average is what comes back,
    # not the raw weights, which went much further.
    assert moved[0.999] < 1.5 * rate < 3 * rate < moved[0.0]
    # Its batch-norm statistics were measured again for the averaged weights: measuring again changes nothing in
    # the first layer (no dropout before it), where the statistics training left behind would move.
    first = next(train._batch_norms(model))
    refreshed = np.asarray(first.moving_mean)
    train.refresh_batch_norm(model, faces.images, seed=config.seed)
    np.testing.assert_allclose(np.asarray(first.moving_mean), refreshed, rtol=1e-4, atol=1e-4)

    assert train.main(["--data", str(data), "--ema", "1.5", "--out", str(tmp_path / "m")]) == 2
    assert "--ema is a momentum" in capsys.readouterr().err


def test_ema_validation_sees_the_averaged_weights_with_their_own_batch_norm_statistics(tmp_path, monkeypatch):
    data, start, start_weights, faces, validation = _ema_start(tmp_path)
    measured, refresh = [], train.refresh_batch_norm

    def recording_refresh(model, sample, **kwargs):  # what the model holds when its statistics are measured
        measured.append((len(sample), _moved(model, start_weights)))
        refresh(model, sample, **kwargs)

    monkeypatch.setattr(train, "refresh_batch_norm", recording_refresh)
    rate = 3e-3
    config = train.TrainConfig(arch="vgg_tiny", epochs=3, batch_size=8, patience=3, learning_rate=rate, ema=0.999)
    model, history = train.fit(faces, validation, config, tmp_path / "ema", init_from=start)
    # Before each of the three validations, and once more at the end, on every training face (fewer than the
    # sample's size here); each time the averaged weights, about one step from the start, were in the network, not
    # the raw weights (which move several steps: the test above).
    assert [count for count, _ in measured] == [len(faces)] * 4
    assert all(moved < 1.5 * rate for _, moved in measured)
    assert len(history["val_accuracy"]) == 3


def test_refresh_batch_norm_measures_the_statistics_of_the_faces_it_is_given():
    import keras

    inputs = keras.Input((4, 4, 1))
    norm = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(norm(inputs))))
    norm.moving_mean.assign([50.0])  # statistics left over from other weights
    norm.moving_variance.assign([1.0])
    faces = np.random.default_rng(0).integers(0, 256, (64, 4, 4)).astype(np.uint8)
    train.refresh_batch_norm(model, faces, batch_size=16)
    assert float(norm.moving_mean[0]) == pytest.approx(faces.mean(), rel=1e-4)  # equal batches: the mean of means
    assert float(norm.moving_variance[0]) == pytest.approx(faces.var(), rel=0.1)  # the mean of batch variances
    assert norm.momentum == 0.99  # put back for any training that follows
