"""Train a model on folder-per-class faces and write `models/NAME.keras` with its `models/NAME.json`.

    python -m fer.train --data ../shared/data/fer2013 --arch seed_cnn --epochs 15 --out models/seed_cnn
    python -m fer.train --data ../shared/data/fer2013 --arch vgg_small --epochs 40 --out models/vgg_small --make-current

`--data` holds `train/` and `validation/` (the FER2013 and the study's layouts both do). The best epoch by validation
accuracy is kept, training stops early when validation stops improving, and the final model is scored on
validation through the same path `fer.evaluate` uses, with its calibration temperature fitted there.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from fer.config import CLASS_NAMES, PreprocessConfig
from fer.errors import FerError
from fer.data import FaceDataset, find_split, load_faces
from fer.metrics import classification_report, expected_calibration_error, fit_temperature, apply_temperature
from fer.registry import set_current, write_json_atomic

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    arch: str = "seed_cnn"
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 6  # epochs without a better validation accuracy before stopping
    label_smoothing: float = 0.0
    augment: bool = True  # flips, small rotations, shifts, zoom, contrast: training data only
    flip_average: bool = True  # average the prediction over the face and its mirror image at inference
    class_weighting: bool = False  # weight the loss by inverse class frequency
    seed: int = 1337


def augmenter():
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(10 / 360, fill_mode="nearest"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
        layers.RandomZoom(0.1, fill_mode="nearest"),
        layers.RandomContrast(0.2, value_range=(0, 255)),
    ], name="augment")


def make_dataset(faces: np.ndarray, labels: np.ndarray, num_classes: int, config: TrainConfig, training: bool):
    """tf.data pipeline of (float32 (B, S, S, 1) in [0, 255], one-hot (B, C)) batches."""
    import tensorflow as tf

    x = faces.astype(np.float32)[..., None]
    y = np.eye(num_classes, dtype=np.float32)[labels]
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        dataset = dataset.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(config.batch_size)
    if training and config.augment:
        augment = augmenter()
        dataset = dataset.map(lambda images, targets: (tf.clip_by_value(augment(images, training=True), 0, 255), targets),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def fit(train: FaceDataset, validation: FaceDataset, config: TrainConfig, out: Path, init_from: Path | None = None):
    """Compile and fit; return the model with its best-validation weights and the per-epoch history."""
    import keras

    from fer.model import build_model
    from fer.registry import load_model

    keras.utils.set_random_seed(config.seed)
    num_classes = len(train.classes)
    if init_from is not None:
        model, _ = load_model(init_from)
    else:
        model = build_model(config.arch, num_classes, train.images.shape[1])
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    class_weight = None
    if config.class_weighting:
        counts = np.bincount(train.labels, minlength=num_classes).astype(float)
        class_weight = {i: float(counts.sum() / (num_classes * max(c, 1))) for i, c in enumerate(counts)}
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(2, config.patience // 2), min_lr=1e-5),
        keras.callbacks.CSVLogger(str(out.with_suffix(".history.csv"))),
    ]
    history = model.fit(
        make_dataset(train.images, train.labels, num_classes, config, training=True),
        validation_data=make_dataset(validation.images, validation.labels, num_classes, config, training=False),
        epochs=config.epochs,
        callbacks=callbacks,
        class_weight=class_weight,
        verbose=2,
    )
    return model, {key: [float(v) for v in values] for key, values in history.history.items()}


def plot_history(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
    for key, axis in (("loss", loss_axis), ("accuracy", accuracy_axis)):
        axis.plot(history.get(key, []), label="train")
        axis.plot(history.get(f"val_{key}", []), label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset root with train/ and validation/ class folders")
    parser.add_argument("--out", required=True, help="output stem, e.g. models/seed_cnn (writes .keras and .json)")
    defaults = TrainConfig()
    parser.add_argument("--arch", default=defaults.arch)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--no-flip-average", dest="flip_average", action="store_false")
    parser.add_argument("--class-weighting", action="store_true")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--box-margin", type=float, default=PreprocessConfig().box_margin,
                        help="crop margin around detected boxes, stored with the model")
    parser.add_argument("--make-current", action="store_true", help="point models/current.json at the new model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from fer.model import ARCHITECTURES

    if args.arch not in ARCHITECTURES:
        print(f"error: unknown --arch {args.arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}", file=sys.stderr)
        return 2
    if args.epochs < 1:
        print("error: --epochs must be at least 1", file=sys.stderr)
        return 2
    config = TrainConfig(args.arch, args.epochs, args.batch_size, args.learning_rate, args.patience,
                         args.label_smoothing, args.augment, args.flip_average, args.class_weighting, args.seed)
    preprocess = PreprocessConfig(box_margin=args.box_margin)
    out = Path(args.out)
    if out.suffix == ".keras":
        out = out.with_suffix("")
    try:
        train_dir, validation_dir = find_split(args.data, "train"), find_split(args.data, "validation")
        train = load_faces(train_dir, CLASS_NAMES, preprocess)
        validation = load_faces(validation_dir, CLASS_NAMES, preprocess)
    except FerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger.info("train %d faces %s; validation %d faces %s", len(train), train.counts(), len(validation), validation.counts())
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    model, history = fit(train, validation, config, out)
    seconds = time.time() - started
    metadata = finish(model, config, preprocess, validation, out, {
        "train_dir": str(train_dir), "validation_dir": str(validation_dir),
        "train_counts": train.counts(), "validation_counts": validation.counts(),
    }, history, seconds, argv)
    if args.make_current:
        set_current(out.with_suffix(".keras"), out.parent)
        logger.info("models/current.json now points at %s", out.with_suffix(".keras").name)
    validation_report = metadata["metrics"]["validation"]
    print(f"validation accuracy {validation_report['accuracy']:.4f}  macro-F1 {validation_report['macro_f1']:.4f}  "
          f"({seconds / 60:.1f} min)  -> {out.with_suffix('.keras')}")
    return 0


def finish(model, config: TrainConfig, preprocess: PreprocessConfig, validation: FaceDataset, out: Path,
           data_summary: dict, history: dict, seconds: float, argv: list[str] | None) -> dict:
    """Calibrate on validation, score through the serving path, and write NAME.keras + NAME.json."""
    from fer.predict import Predictor

    metadata = {
        "name": out.name,
        "classes": list(validation.classes),
        "image_size": int(validation.images.shape[1]),
        "preprocess": preprocess.to_dict(),
        "inference": {"flip_average": config.flip_average, "temperature": 1.0},
        "arch": config.arch,
        "parameters": int(model.count_params()),
        "train_config": dataclasses.asdict(config),
        "data": data_summary,
        "epochs_run": len(history.get("loss", [])),
        "training_seconds": round(seconds, 1),
        "command": "python -m fer.train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    predictor = Predictor(model, metadata)
    raw = np.concatenate([predictor.predict_faces(validation.images[i:i + 256]) for i in range(0, len(validation), 256)])
    temperature = fit_temperature(raw.astype(np.float64), validation.labels)
    calibrated = apply_temperature(raw.astype(np.float64), temperature)
    metadata["inference"]["temperature"] = temperature
    report = classification_report(validation.labels, calibrated.argmax(axis=1), validation.classes)
    report["n_images"] = len(validation)
    report["no_face"] = 0
    report["ece_before_calibration"] = expected_calibration_error(raw, validation.labels)
    report["ece_after_calibration"] = expected_calibration_error(calibrated, validation.labels)
    metadata["metrics"] = {"validation": report}
    model.save(out.with_suffix(".keras"))
    write_json_atomic(out.with_suffix(".json"), metadata)
    plot_history(history, out.with_suffix(".curves.png"))
    return metadata


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
