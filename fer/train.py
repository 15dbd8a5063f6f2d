"""Train a model on folder-per-class faces and write `models/NAME.keras` with its `models/NAME.json`.

    python -m fer.train --data ../shared/data/fer2013 --arch seed_cnn --epochs 15 --out models/seed_cnn
    python -m fer.train --data ../shared/data/fer2013 --arch vgg_small --epochs 40 --out models/vgg_small --make-current

Retraining from reviewers' corrections (issue 5): fine-tune the served model, or train from scratch, then gate:

    python -m fer.train --data ../shared/data/fer2013 --labels labels/corrections.csv --fine-tune --gate \
        --out models/vgg_small-r2
    python -m fer.train --data ../shared/data/fer2013 --labels labels/corrections.csv --arch vgg_small --epochs 40 \
        --out models/vgg_small-r3 --gate

`--data` holds `train/` and `validation/` (the FER2013 and the study's layouts both do). The best epoch by validation
accuracy is kept, training stops early when validation stops improving, and the final model is scored on
validation through the same path `fer.evaluate` uses, with its calibration temperature fitted there.

`--labels` applies the resolved corrections (`fer.corrections`) to the training split only; a corrected image that is
also in validation stays out of training and is reported. A corrupt corrections file stops before anything is
written. `--init-from` (a .keras path, a stem, or `current`; bare names are looked up in --out's folder) starts from
a trained model, keeping its architecture, classes and preprocessing. `--fine-tune` means `--init-from current`
with 3 epochs at learning rate 1e-4 unless given. `--gate` compares the new model with the current one on validation
(`fer.gate`) and promotes or rejects it; the command then exits 1 on rejection. The new JSON records the corrections
file's hash and row count, what they changed, and the parent model. `retrain_from_corrections` does the same
fine-tune-and-gate as one call for the app.

`--extra-classes angry fear disgust` also trains on those class folders (a seven-way softmax) and saves a model that
predicts the served classes only, renormalised over them; `--init-from` that model fine-tunes it on the served classes.

Long runs: `--precision mixed_bfloat16` computes in bfloat16 (1.3-1.7x faster where the CPU has AMX or AVX512-BF16;
the saved model is float32), and `--backup-dir DIR` saves the training state after every epoch, so that the same
command run again after an interruption resumes where it stopped.

Another machine (a lent GPU, docs/gpu_training.md): `--data` also takes an .npz that `python -m fer.data --pack`
wrote, and Keras may run on JAX (`KERAS_BACKEND=jax`): augmentation then runs inside the training graph.

Weight averaging: `--ema 0.999` validates, keeps and saves an exponential moving average of the weights (Polyak
averaging, as timm's model EMA) instead of the last step's weights. Their batch-norm statistics are measured again
for them (`refresh_batch_norm`): on a sample of training faces before each validation, on all of them at the end.

Distillation: `--teacher A.keras [B.keras ...]` mixes the teachers' averaged probabilities into each training target
(`--teacher-weight`), scored once per face before training, or on every augmented batch with `--online-teacher`.
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

from fer import config as fer_config
from fer import corrections as fer_corrections
from fer import lite
from fer import votes as fer_votes
from fer.config import CLASS_NAMES, PreprocessConfig
from fer.errors import DataError, FerError, ModelError
from fer.data import FaceDataset, find_split, is_packed, load_faces, load_packed
from fer.calibrate import calibrate
from fer.registry import beside, current_model_path, read_metadata, save_weights_only_model, write_json_atomic

logger = logging.getLogger(__name__)

FINE_TUNE_EPOCHS = 3  # a few passes over the corrected set: minutes on two CPU cores, not hours
FINE_TUNE_LEARNING_RATE = 1e-4  # a tenth of the from-scratch rate, so the served model is adjusted, not relearned
# How a model weighed its labels; a model trained from it keeps these unless told otherwise (fine_tune_config, --init-from)
INHERITED_LABELLING = ("vote_targets", "class_weighting", "class_weight_power")


def _ignore_progress(fraction: float, message: str) -> None:
    pass


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
    class_weighting: bool = False  # weight the loss by inverse class frequency (to `class_weight_power`)
    seed: int = 1337
    schedule: str = "plateau"  # "plateau": halve the rate when validation loss stalls; "cosine": decay to 0 over the epochs
    # .keras models to distil: their probabilities (averaged, if several: an ensemble) become part of each target
    teacher: tuple[str, ...] = ()
    teacher_weight: float = 0.7  # target = weight * teachers' probabilities + (1 - weight) * the one-hot label
    erasing: float = 0.0  # share of training faces that get a random rectangle replaced by noise (random erasing)
    mixup: float = 0.0  # MixUp's alpha: blend pairs of faces and their targets (0 = off)
    # More class folders to train on beside the served classes (e.g. FER2013's angry, fear, disgust). The network
    # learns from their faces too; the saved model keeps only the served classes' outputs (`restrict_outputs`).
    extra_classes: tuple[str, ...] = ()
    # "mixed_bfloat16" computes in bfloat16 while training (weights stay float32): 1.3-1.7x faster on CPUs with
    # AMX or AVX512-BF16. The saved model is float32 either way, so serving is unchanged.
    precision: str = "float32"
    # With a teacher: score each augmented training batch as the student sees it ("consistent teaching"), instead
    # of each face once, un-augmented, before training. Costs a teacher forward pass per batch.
    teacher_online: bool = False
    # "adam"; "adamw" (Adam with decoupled weight decay); "sgd" (momentum 0.9, Nesterov): give it a rate near 0.01
    optimizer: str = "adam"
    weight_decay: float = 0.0  # decoupled: each step shrinks every weight by learning rate x weight_decay x weight
    # Polyak averaging: validate and save an exponential moving average of the weights, updated every step with this
    # momentum (0.999 averages over about 1,000 steps; 0 = off). Keras' optimizer EMA and SwapEMAWeights.
    ema: float = 0.0
    # Share of training faces blurred (Gaussian, sigma drawn from BLUR_SIGMA each batch): the served model lost 21
    # points on faces blurred at sigma 1.5 (a webcam out of focus, a small face scaled up), against 7 for vgg_small_reg.
    blur: float = 0.0
    # With a votes file (`run(votes_path=...)`): train on each face's consensus label ("majority") or on its
    # annotators' vote distribution over the classes ("distribution"; fer.votes).
    vote_targets: str = "majority"
    # With class_weighting: each class's loss weight is (mean count / its count) ** this power; 0.5 balances halfway
    # (the square root of inverse frequency), 1 fully.
    class_weight_power: float = 1.0

    def __post_init__(self):
        if isinstance(self.teacher, (str, os.PathLike)):  # one teacher given as a path
            object.__setattr__(self, "teacher", (str(self.teacher),))


SCHEDULES = ("plateau", "cosine")
PRECISIONS = ("float32", "mixed_bfloat16")
OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(config: TrainConfig, learning_rate):
    """The Keras optimizer `config` names, at `learning_rate` (a float or a schedule)."""
    import keras

    if config.weight_decay < 0:
        raise ValueError(f"weight_decay must be at least 0; got {config.weight_decay}.")
    if not 0.0 <= config.ema < 1.0:
        raise ValueError(f"ema is a momentum in [0, 1), 0 for off; got {config.ema}.")
    ema = {"use_ema": True, "ema_momentum": config.ema} if config.ema else {}
    if config.optimizer == "adam":
        if config.weight_decay:
            raise ValueError("Adam takes no weight decay here; use optimizer='adamw' for Adam with weight decay.")
        return keras.optimizers.Adam(learning_rate, **ema)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay, **ema)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None,
                                    **ema)
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}.")


BLUR_SIGMA = (0.1, 2.0)  # the range `--blur` draws its sigma from, in pixels of the 48x48 face
BLUR_KERNEL = 7  # wide enough for sigma 2 (three sigma each side would be 13; 7 keeps most of the weight)


def augmenter(erasing: float = 0.0, blur: float = 0.0):
    import keras
    from keras import layers

    steps = [
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(10 / 360, fill_mode="nearest"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
        layers.RandomZoom(0.1, fill_mode="nearest"),
        layers.RandomContrast(0.2, value_range=(0, 255)),
    ]
    if erasing > 0:  # a fixed probability per face: Keras samples it from (low, high)
        steps.append(layers.RandomErasing(factor=(erasing, erasing), scale=(0.02, 0.2), value_range=(0, 255)))
    if blur > 0:  # likewise a fixed probability per face
        steps.append(layers.RandomGaussianBlur(factor=(blur, blur), kernel_size=BLUR_KERNEL, sigma=BLUR_SIGMA,
                                               value_range=(0, 255)))
    return keras.Sequential(steps, name="augment")


def make_dataset(faces: np.ndarray, labels: np.ndarray, num_classes: int, config: TrainConfig, training: bool,
                 targets: np.ndarray | None = None, teacher=None):
    """tf.data pipeline of (float32 (B, S, S, 1) in [0, 255], (B, C) targets) batches.

    Targets are the one-hot labels, or `targets` (N, C) when given (soft targets for distillation). With a `teacher`
    network, each training batch's targets become `config.teacher_weight` x its probabilities on that batch, after
    augmentation and MixUp, plus the rest of the (mixed) labels.
    """
    import tensorflow as tf

    x = faces.astype(np.float32)[..., None]
    y = np.eye(num_classes, dtype=np.float32)[labels] if targets is None else targets.astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        dataset = dataset.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(config.batch_size)
    if training and config.augment:
        augment = augmenter(config.erasing, config.blur)
        dataset = dataset.map(lambda images, targets: (tf.clip_by_value(augment(images, training=True), 0, 255), targets),
                              num_parallel_calls=tf.data.AUTOTUNE)
    if training and config.mixup > 0:
        import keras

        mix = keras.layers.MixUp(alpha=config.mixup, seed=config.seed)

        def mixed(images, targets):
            both = mix({"images": images, "labels": targets}, training=True)
            return both["images"], both["labels"]

        dataset = dataset.map(mixed, num_parallel_calls=tf.data.AUTOTUNE)
    if training and teacher is not None:
        weight = config.teacher_weight

        def taught(images, targets):
            soft = tf.cast(teacher(images, training=False), tf.float32)
            return images, weight * soft + (1.0 - weight) * targets

        dataset = dataset.map(taught)  # one batch at a time: the teacher is a whole network
    return dataset.prefetch(tf.data.AUTOTUNE)


def uses_tf_data() -> bool:
    """Whether training data flows through tf.data (Keras on TensorFlow: augmentation runs on the CPU beside the
    network). On JAX or PyTorch (a lent GPU machine has no TensorFlow) it is `numpy_batches` + `batch_augmenter`."""
    import keras

    return keras.backend.backend() == "tensorflow"


def numpy_batches(faces: np.ndarray, targets: np.ndarray, config: TrainConfig, augment=None, teacher=None):
    """Training batches for any Keras backend: a keras.utils.PyDataset of (float32 (B, S, S, 1) in [0, 255],
    (B, C) targets), reshuffled every epoch, each batch through `augment` (from `batch_augmenter`) when given, then
    MixUp (`config.mixup`) blending pairs within it: augmented faces are blended, as tf.data does. With a `teacher`
    network (`online_teacher`), the targets become `config.teacher_weight` x its probabilities on the batch as the
    student sees it, plus the rest of the labels, as in `make_dataset`.
    """
    import keras

    x, y = faces.astype(np.float32)[..., None], targets.astype(np.float32)
    batch_size, alpha = config.batch_size, config.mixup

    class FaceBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(config.seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self):
            return -(-len(x) // batch_size)

        def __getitem__(self, index):
            pick = self.order[index * batch_size:(index + 1) * batch_size]
            images, labels = x[pick], y[pick]
            if augment is not None:
                images = augment(images)
            if alpha > 0:  # MixUp: each face blended with another of the batch, weight ~ Beta(alpha, alpha)
                weight = self.rng.beta(alpha, alpha, size=len(pick)).astype(np.float32)
                partner = self.rng.permutation(len(pick))
                images = weight[:, None, None, None] * images + (1 - weight[:, None, None, None]) * images[partner]
                labels = weight[:, None] * labels + (1 - weight[:, None]) * labels[partner]
            if teacher is not None:
                soft = np.asarray(teacher.predict_on_batch(images), dtype=np.float32)
                labels = config.teacher_weight * soft + (1.0 - config.teacher_weight) * labels
            return images, labels

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

    return FaceBatches()


def batch_augmenter(config: TrainConfig, image_size: int = 48):
    """`augmenter(config.erasing, config.blur)` as a function of a float32 (B, S, S, 1) NumPy batch, for
    `numpy_batches` (clipped to [0, 255], as `make_dataset` does); None without `config.augment`. On JAX it is
    compiled once (`jax.jit` of the layers' stateless call, the random state carried from call to call) and runs on
    the accelerator.

    It runs apart from the training step because Keras' rotation, shift and zoom layers are slow inside a compiled
    JAX training step: on a lent H200 a `vgg_base` step took 525 ms with them and 4 ms without;
    `benchmarks/train_step.py --arch vgg_tiny` on CPU here: 227 ms without, 625 inside the step, 279 this way.
    """
    import threading

    import keras

    if not config.augment:
        return None
    layer = augmenter(config.erasing, config.blur)
    layer.build((None, image_size, image_size, 1))
    if keras.backend.backend() != "jax":
        return lambda batch: np.clip(keras.ops.convert_to_numpy(layer(batch, training=True)), 0, 255)
    import jax

    step = jax.jit(lambda state, batch: layer.stateless_call([], state, batch, training=True))
    state = [variable.value for variable in layer.non_trainable_variables]  # the random layers' seed state
    lock = threading.Lock()  # PyDataset may call from worker threads; each call must take the state the last left

    def augment(batch: np.ndarray) -> np.ndarray:
        nonlocal state
        with lock:
            images, state = step(state, batch)
        return np.clip(np.asarray(images), 0, 255)

    return augment


def parent_labelling(parent: dict) -> dict:
    """How the model described by `parent` (its JSON) weighed its labels: its INHERITED_LABELLING settings."""
    trained = parent.get("train_config") or {}
    return {key: trained[key] for key in INHERITED_LABELLING if key in trained}


def fine_tune_config(parent: dict, **overrides) -> TrainConfig:
    """The fine-tuning settings for a model described by `parent` (its JSON): its architecture and inference, and
    how it weighed its labels (vote targets, class weighting), so a fine-tune learns what its parent learned."""
    values = {"arch": parent.get("arch", TrainConfig.arch), "epochs": FINE_TUNE_EPOCHS,
              "learning_rate": FINE_TUNE_LEARNING_RATE,
              "flip_average": bool(parent.get("inference", {}).get("flip_average", TrainConfig.flip_average)),
              **parent_labelling(parent)}
    return TrainConfig(**{**values, **overrides})


def distillation_targets(train: FaceDataset, config: TrainConfig) -> np.ndarray:
    """(N, C) soft targets: the teachers' served probabilities (flip averaging and temperature as each ships),
    averaged over the teachers, on each training face, mixed with its target (the one-hot label, or the annotators'
    vote distribution) by `config.teacher_weight`.

    The teacher sees each face once, un-augmented; the student then trains on augmented copies against that target
    (flips, small shifts and rotations do not change an expression).
    """
    from fer.predict import load_predictor

    if not 0.0 <= config.teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must be between 0 and 1; got {config.teacher_weight}.")
    soft = np.zeros((len(train), len(train.classes)), dtype=np.float32)
    for path in config.teacher:
        teacher = load_predictor(path)
        if tuple(teacher.classes) != tuple(train.classes):
            raise ModelError(f"The teacher {path} predicts {', '.join(teacher.classes)}; the training set's "
                             f"classes are {', '.join(train.classes)}.")
        soft += teacher.predict_faces(train.images) / len(config.teacher)
    return config.teacher_weight * soft + (1.0 - config.teacher_weight) * train.target_matrix()


def online_teacher(config: TrainConfig, classes: tuple[str, ...], image_size: int):
    """The `config.teacher` networks for online distillation as one frozen network that averages their
    probabilities, computing at the training precision."""
    import keras
    from keras import layers

    from fer.model import ARCHITECTURES
    from fer.registry import load_model

    if not 0.0 <= config.teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must be between 0 and 1; got {config.teacher_weight}.")
    networks = []
    for path in config.teacher:
        network, metadata = load_model(path)
        if tuple(metadata["classes"]) != tuple(classes) or int(metadata["image_size"]) != image_size:
            raise ModelError(f"The teacher {path} predicts {', '.join(metadata['classes'])} from "
                             f"{metadata['image_size']}-pixel faces; the training set has {', '.join(classes)} "
                             f"at {image_size} pixels.")
        if config.precision != "float32" and metadata.get("arch") in ARCHITECTURES:
            network = _build(metadata["arch"], len(classes), image_size, config.precision, weights_from=network)
        networks.append(network)
    if len(networks) == 1:
        teacher = networks[0]
    else:
        for number, network in enumerate(networks, 1):  # a functional model needs unique names: same-arch teachers
            network.name = f"teacher_{number}_{network.name}"
        inputs = keras.Input(shape=(image_size, image_size, 1))
        teacher = keras.Model(inputs, layers.Average(dtype="float32")([net(inputs) for net in networks]),
                              name="ensemble_teacher")
    teacher.trainable = False
    return teacher


def restrict_outputs(model, keep: int):
    """The same network with only its first `keep` softmax outputs: its final Dense layer's first `keep` columns.

    A softmax over a subset of the logits equals the full softmax restricted to that subset and renormalised, so the
    new model's probabilities are the old one's, conditioned on the face showing one of the kept classes.
    """
    from keras import layers

    head = model.layers[-1]
    if not isinstance(head, layers.Dense) or head.get_config().get("activation") != "softmax" or not head.use_bias:
        raise ModelError(f"{model.name} does not end in a softmax Dense layer with a bias; cannot drop its outputs.")
    if not 2 <= keep <= head.units:
        raise ValueError(f"keep must be between 2 and {head.units}; got {keep}.")
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] == head.name:
            layer["config"]["units"] = keep
    smaller = model.__class__.from_config(config)
    weights = model.get_weights()
    kernel, bias = weights[-2], weights[-1]
    smaller.set_weights([*weights[:-2], kernel[:, :keep], bias[:keep]])
    return smaller


def fit(train: FaceDataset, validation: FaceDataset, config: TrainConfig, out: Path, init_from: Path | None = None,
        progress=None, backup_dir: Path | None = None):
    """Compile and fit; return the model with its best-validation weights and the per-epoch history.

    `backup_dir`, if given, receives the full training state after every epoch (Keras' BackupAndRestore): calling
    again with the same arguments resumes after the last finished epoch, and the directory is removed on success.
    Early stopping's memory of the best epoch is not part of that state: a resumed run keeps the best epoch since
    the resume (with a cosine schedule, training's last epochs are its best in practice).

    `progress(fraction, message)`, if given, is called as batches finish, with `fraction` from 0 to 1.
    """
    import keras

    from fer.registry import load_model

    keras.utils.set_random_seed(config.seed)
    num_classes = len(train.classes)
    if config.class_weighting and not uses_tf_data():  # before any model or teacher work
        raise ValueError(f"--class-weighting needs Keras on TensorFlow; this is "
                         f"{keras.backend.backend()} (set KERAS_BACKEND=tensorflow, or leave it out).")
    if config.precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {config.precision!r}; choose one of {PRECISIONS}.")
    if init_from is not None and config.precision == "float32":
        model, _ = load_model(init_from)
    else:  # a saved model keeps its float32 layers: for mixed precision, its weights go into a mixed network
        model = _build(config.arch, num_classes, train.images.shape[1], config.precision,
                       weights_from=load_model(init_from)[0] if init_from is not None else None)
    if config.schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {config.schedule!r}; choose one of {SCHEDULES}.")
    learning_rate = config.learning_rate
    if config.schedule == "cosine":
        steps_per_epoch = -(-len(train) // config.batch_size)
        learning_rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * steps_per_epoch)
    # (N, C): the one-hot labels or the vote distribution, mixed with the teachers' probabilities when distilling
    targets = (distillation_targets(train, config) if config.teacher and not config.teacher_online
               else train.target_matrix())
    teacher = online_teacher(config, train.classes, train.images.shape[1]) if config.teacher_online else None
    if uses_tf_data():
        training_data = make_dataset(train.images, train.labels, num_classes, config, training=True, targets=targets,
                                     teacher=teacher)
        validation_data = make_dataset(validation.images, validation.labels, num_classes, config, training=False)
    else:
        training_data = numpy_batches(train.images, targets, config,
                                      augment=batch_augmenter(config, train.images.shape[1]), teacher=teacher)
        validation_data = (validation.images.astype(np.float32)[..., None], validation.target_matrix())
    model.compile(
        optimizer=make_optimizer(config, learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    resuming = backup_dir is not None and Path(backup_dir).is_dir() and any(Path(backup_dir).iterdir())
    class_weight = None
    if config.class_weighting:
        counts = np.bincount(train.labels, minlength=num_classes).astype(float)
        class_weight = {i: float((counts.sum() / (num_classes * max(c, 1))) ** config.class_weight_power)
                        for i, c in enumerate(counts)}
    callbacks = [
        _epoch_timer(),  # before the CSV logger, which then records each epoch's seconds
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(beside(out, ".history.csv")), append=resuming),
    ]
    if config.ema:  # the averaged weights are in the model at each epoch's end: validated, kept as best, saved
        callbacks[0:0] = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True),
                          _refresh_before_validation(model, train.images, config.seed)]
    if backup_dir is not None:  # first, so a resumed run restores its state before the others look at it
        # Two states kept: a run killed while writing one resumes from the other.
        callbacks.insert(0, keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True))
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                           patience=max(2, config.patience // 2), min_lr=1e-5))
    if progress is not None:
        callbacks.append(_progress_callback(progress, config.epochs))
    history = model.fit(
        training_data,
        validation_data=validation_data,
        epochs=config.epochs,
        callbacks=callbacks,
        class_weight=class_weight,
        verbose=2,
    )
    if backup_dir is not None:  # a resumed run's History holds only its own epochs; the CSV holds them all
        import pandas as pd

        logged = pd.read_csv(beside(out, ".history.csv"))
        history_dict = {key: logged[key].astype(float).tolist() for key in logged.columns if key != "epoch"}
    else:
        history_dict = {key: [float(v) for v in values] for key, values in history.history.items()}
    if config.precision != "float32":  # serve float32: the same network with the trained weights
        model = _build(config.arch, num_classes, train.images.shape[1], "float32", weights_from=model)
    if config.ema:  # the moving statistics followed the raw weights; measure them again for the averaged ones
        refresh_batch_norm(model, train.images, seed=config.seed)
    return model, history_dict


REFRESH_FACES = 2048  # training faces whose batch statistics stand in for the averaged weights' at each validation


def _refresh_before_validation(model, faces: np.ndarray, seed: int):
    """A callback for `--ema`, placed after SwapEMAWeights: once the averaged weights are in `model` for validation,
    measure its batch-norm statistics again for them (`refresh_batch_norm`, on a fixed sample of `REFRESH_FACES`
    training faces), so that validation, early stopping and the kept epoch judge the average as it will be served.
    Otherwise the statistics are the raw weights', and validation reads low (0.742 against 0.771 at epoch 16 of a
    60-epoch `vgg_base` run; 0.26-0.36 over its first five epochs).

    Training is unaffected: in training mode batch norm uses each batch's own statistics. On JAX too: validation
    reads the variables after `on_test_begin`.
    """
    import keras

    sample = faces[np.random.default_rng(seed).permutation(len(faces))[:REFRESH_FACES]]

    class RefreshBatchNorm(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            refresh_batch_norm(model, sample, seed=seed)

    return RefreshBatchNorm()


def _batch_norms(layer):
    """Every BatchNormalization layer inside `layer`, nested models included."""
    import keras

    for sub in getattr(layer, "layers", ()):
        if isinstance(sub, keras.layers.BatchNormalization):
            yield sub
        else:
            yield from _batch_norms(sub)


def refresh_batch_norm(model, faces: np.ndarray, batch_size: int = 256, seed: int = 0) -> None:
    """Recompute every BatchNormalization layer's moving mean and variance as the average of its batch statistics
    over `faces` ((N, S, S) in [0, 255], un-augmented, shuffled into batches), as SWA's `update_bn` does.

    Averaged weights (`--ema`) need it: during training the moving statistics tracked the raw weights, not their
    average. The network runs in training mode (dropout on), as when the statistics were first gathered.
    """
    layers = list(_batch_norms(model))
    momenta = [layer.momentum for layer in layers]
    order = np.random.default_rng(seed).permutation(len(faces))
    try:
        for k, start in enumerate(range(0, len(faces), batch_size)):
            for layer in layers:  # moving = k/(k+1) x moving + 1/(k+1) x batch: the running average of k+1 batches
                layer.momentum = k / (k + 1)
            model(faces[order[start:start + batch_size]].astype(np.float32)[..., None], training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def _build(arch: str, num_classes: int, image_size: int, precision: str, weights_from=None):
    """`build_model` under Keras' dtype policy `precision` (the global policy is put back after), with the weights
    of `weights_from`, the same network at any precision, when given."""
    import keras

    from fer.model import build_model

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        model = build_model(arch, num_classes, image_size)
    finally:
        keras.config.set_dtype_policy(previous)
    if weights_from is not None:
        model.set_weights(weights_from.get_weights())
    return model


def _epoch_timer():
    """A Keras callback that adds `epoch_seconds` (wall time of the epoch, validation included) to each epoch's logs."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["epoch_seconds"] = time.perf_counter() - self.started

    return EpochTimer()


def _progress_callback(progress, epochs: int):
    """A Keras callback reporting (fraction of all epochs done, message) about every 20 batches and per epoch."""
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            steps = self.params.get("steps") or 0
            if steps and batch % 20 == 0:
                progress((self.epoch + (batch + 1) / steps) / epochs, f"epoch {self.epoch + 1}/{epochs}")

        def on_epoch_end(self, epoch, logs=None):
            accuracy = (logs or {}).get("val_accuracy")
            note = f", validation accuracy {accuracy:.3f}" if accuracy is not None else ""
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs} done{note}")

    return ProgressCallback()


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


def run(data_root: str | Path, out: Path, config: TrainConfig = TrainConfig(), preprocess: PreprocessConfig | None = None,
        *, labels_path: str | Path | None = None, init_from: str | Path | None = None, progress=None,
        argv: list[str] | None = None, backup_dir: str | Path | None = None, int8: bool = False,
        votes_path: str | Path | None = None) -> dict:
    """Load `data_root`'s splits, label them (`fer.votes.label_faces`: reviewers' corrections from `labels_path`,
    annotators' votes from `votes_path`, folders), train (from `init_from` if given) and write out.keras + out.json.

    With votes, faces from every folder of both splits are read and labelled by their consensus; training and the
    kept epoch use the consensus-labelled validation set, and the JSON records both validation figures (consensus,
    and the folder labels of the served classes' folders). A model trained on votes passes its votes file on to
    models fine-tuned from it unless `votes_path` names another.

    Everything that can be checked is checked before training, so a corrupt corrections or votes file or a missing
    parent model raises a FerError while nothing has been written yet. Returns the new model's JSON as a dict.
    """
    report = progress or _ignore_progress
    corrections = fer_corrections.read(labels_path) if labels_path is not None else None
    classes, parent = CLASS_NAMES, None
    if init_from is not None:
        init_from = Path(init_from)
        parent = read_metadata(init_from)
        if not init_from.is_file():
            raise ModelError(f"No model at {init_from}; its JSON is there but the .keras file is missing.")
        classes = tuple(parent["classes"])
        config = dataclasses.replace(config, arch=parent.get("arch", config.arch))
        preprocess = preprocess or PreprocessConfig.from_dict(parent["preprocess"])
        votes_path = votes_path or fer_votes.default_for(parent)
    preprocess = preprocess or PreprocessConfig()
    votes = fer_votes.read(votes_path) if votes_path is not None else None
    if votes is not None and config.extra_classes:
        raise ModelError("--votes labels the faces of every folder by their consensus; it cannot be combined with "
                         "--extra-classes.")
    if config.vote_targets not in fer_votes.TARGETS:
        raise ValueError(f"vote_targets must be one of {', '.join(fer_votes.TARGETS)}; got {config.vote_targets!r}.")
    # A model fine-tuned from one served through an int8 copy is served the same way: as fast, as close to float32
    # (a static-range copy calibrated again, on the new training faces).
    parent_weights = (parent.get("lite") or {}).get("weights") if parent is not None else None
    int8 = int8 or parent_weights in ("int8", "int8-static")
    if (corrections is not None or parent is not None) and beside(out, ".keras").exists():
        raise ModelError(f"{beside(out, '.keras')} already exists; choose a new --out so the model it would "
                         "replace stays available to the gate and to rollback.")
    report(0.0, "loading faces")
    if config.extra_classes and parent is not None:
        raise ModelError("--extra-classes trains a new network from scratch; it cannot start from --init-from.")
    if len(set(config.extra_classes)) != len(config.extra_classes):
        raise ModelError(f"--extra-classes {' '.join(config.extra_classes)}: a class is named twice.")
    overlap = sorted(set(config.extra_classes) & set(classes))
    if overlap:
        raise ModelError(f"--extra-classes {' '.join(overlap)}: already a served class ({', '.join(classes)}).")
    label_classes = classes + tuple(config.extra_classes)
    if votes is None:
        train, validation, data_summary = load_splits(data_root, label_classes, classes, preprocess)
        consensus_validation, held_out = None, set(validation.hashes())
    else:  # every folder: faces filed as angry or fear may have a served class as their consensus
        train, every_validation, data_summary = load_splits(data_root, split_classes(data_root, "train"),
                                                            split_classes(data_root, "validation"), preprocess)
        validation, _ = fer_votes.label_faces(every_validation, classes)  # folder labels: the original figure
        consensus_validation, validation_labels = fer_votes.label_faces(every_validation, classes, votes)
        held_out = set(every_validation.hashes())
        data_summary["validation_labels"] = validation_labels
    counts = train.counts()
    missing = [name for name in config.extra_classes if counts[name] == 0]
    if missing:
        raise DataError(f"{data_summary['train_dir']} has no faces for --extra-classes {' '.join(missing)}.")
    extra = {}
    if corrections is not None or votes is not None:
        data_summary["train_counts_before_corrections" if votes is None else "train_counts_by_folder"] = counts
        train, labelling = fer_votes.label_faces(train, label_classes, votes, config.vote_targets, corrections,
                                                 held_out)
        if "corrections" in labelling:
            extra["corrections"] = labelling.pop("corrections")
            logger.info("%s", fer_corrections.CorrectionSummary(**extra["corrections"]).describe())
        if votes is not None:
            data_summary["votes"] = votes.describe()
            data_summary["train_labels"] = labelling
            logger.info("labels from %s: %d faces, %d consensus labels differ from the folder, %d without one left "
                        "out", votes.path, labelling["faces"], labelling["consensus_differs_from_folder"],
                        labelling["left_out"])
    if parent is not None:
        extra["parent"] = init_from.stem
    data_summary.update({"train_counts": train.counts(), "validation_counts": validation.counts()})
    if consensus_validation is not None:
        data_summary["consensus_validation_counts"] = consensus_validation.counts()
    logger.info("train %d faces %s; validation %d faces %s", len(train), train.counts(), len(validation), validation.counts())
    out.parent.mkdir(parents=True, exist_ok=True)
    report(0.05, f"training {config.epochs} epochs on {len(train)} faces")
    started = time.time()
    model, history = fit(train, validation if consensus_validation is None else consensus_validation, config, out, init_from,
                         progress=lambda fraction, message: report(0.05 + 0.8 * fraction, message),
                         backup_dir=Path(backup_dir) if backup_dir is not None else None)
    if config.extra_classes:
        model = restrict_outputs(model, len(classes))
    # This call's time, or for a resumed run the epochs' time before and after the interruption.
    seconds = max(time.time() - started, sum(history.get("epoch_seconds", [])))
    report(0.85, "calibrating and saving")
    calibration = lite.calibration_faces(train.images) if parent_weights == "int8-static" else None
    return finish(model, config, preprocess, validation, out, data_summary, history, seconds, argv, extra=extra,
                  int8=int8, calibration=calibration, consensus=consensus_validation, votes=votes)


def split_classes(data_root: str | Path, split: str) -> tuple[str, ...]:
    """Every class folder of `split` under `data_root` (a dataset folder, or the classes packed into an .npz)."""
    from fer.data import folder_classes, packed_classes

    if is_packed(data_root):
        return packed_classes(data_root, split)
    return folder_classes(find_split(data_root, split))


def load_splits(data_root: str | Path, train_classes: tuple[str, ...], classes: tuple[str, ...],
                preprocess: PreprocessConfig) -> tuple[FaceDataset, FaceDataset, dict]:
    """The training and validation faces under `data_root` (a dataset folder, or an .npz that `fer.data --pack`
    wrote from one), and where they came from for the model's JSON: the folders, even when read from a pack."""
    if is_packed(data_root):
        train, train_dir = load_packed(data_root, "train", train_classes, preprocess)
        validation, validation_dir = load_packed(data_root, "validation", classes, preprocess)
        return train, validation, {"train_dir": train_dir, "validation_dir": validation_dir, "packed": str(data_root)}
    train_dir, validation_dir = find_split(data_root, "train"), find_split(data_root, "validation")
    train = load_faces(train_dir, train_classes, preprocess)
    validation = load_faces(validation_dir, classes, preprocess)
    return train, validation, {"train_dir": str(train_dir), "validation_dir": str(validation_dir)}


def version_name(arch: str, models_dir: Path) -> str:
    """A new version name such as `vgg_small-20260101-120000`, unused in `models_dir` and its candidates."""
    from fer.models import CANDIDATES_DIR

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name, number = f"{arch}-{stamp}", 1
    while any((folder / f"{name}.json").exists() or (folder / f"{name}.keras").exists()
              for folder in (models_dir, models_dir / CANDIDATES_DIR)):
        number += 1
        name = f"{arch}-{stamp}-{number}"
    return name


def retrain_from_corrections(labels_path: str | Path, data_root: str | Path, progress=None, *,
                             models_dir: str | Path | None = None, rule=None, config: TrainConfig | None = None,
                             name: str | None = None):
    """Fine-tune the current model on `data_root` with the corrections applied, gate it, and promote or reject it.

    `progress(fraction, message)` is called along the way (a `gr.Progress` fits). Returns a `fer.gate.GateResult`:
    `.promoted`, `.reason`, `.format()` for the side-by-side table, `.candidate` for where the new model lies.
    `config` overrides the fine-tuning settings (default: `fine_tune_config` of the current model's JSON).
    Raises FerError (DataError for an unusable corrections file, ModelError without a current model).
    """
    from fer.gate import GateRule, apply_decision, gate

    report = progress or _ignore_progress
    models_dir = Path(models_dir) if models_dir is not None else fer_config.models_dir()
    current = current_model_path(models_dir)
    parent = read_metadata(current)
    config = config or fine_tune_config(parent)
    out = models_dir / (name or version_name(config.arch, models_dir))
    argv = ["--data", str(data_root), "--labels", str(labels_path), "--init-from", str(current),
            "--epochs", str(config.epochs), "--learning-rate", str(config.learning_rate), "--out", str(out), "--gate"]
    run(data_root, out, config, labels_path=labels_path, init_from=current,
        progress=lambda fraction, message: report(0.9 * fraction, message), argv=argv)
    report(0.9, "comparing with the current model")
    result = gate(beside(out, ".keras"), current, find_split(data_root, "validation"), rule or GateRule())
    apply_decision(result, models_dir)
    report(1.0, f"{result.status}: {result.reason}")
    return result


def main(argv: list[str] | None = None) -> int:
    from fer import gate as fer_gate

    parser = argparse.ArgumentParser(prog="python -m fer.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset root with train/ and validation/ class folders, or "
                                                      "an .npz packed from one (`python -m fer.data --pack`)")
    parser.add_argument("--out", required=True, help="output stem, e.g. models/seed_cnn (writes .keras and .json)")
    defaults = TrainConfig()
    parser.add_argument("--arch", default=defaults.arch)
    parser.add_argument("--epochs", type=int, default=None, help=f"default {defaults.epochs}, or {FINE_TUNE_EPOCHS} with --fine-tune")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help=f"default {defaults.learning_rate}, or {FINE_TUNE_LEARNING_RATE} with --fine-tune")
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--no-flip-average", dest="flip_average", action="store_false")
    parser.add_argument("--class-weighting", action="store_const", const=True, default=None,
                        help="weight each class's loss by its inverse frequency (to --class-weight-power; "
                             "default: off, or as the --init-from model was trained)")
    parser.add_argument("--class-weight-power", type=float, default=None,
                        help=f"with --class-weighting: 1 balances fully, 0.5 halfway (square root); default "
                             f"{defaults.class_weight_power}, or the --init-from model's")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--teacher", nargs="+", default=[], metavar="MODEL",
                        help="trained .keras models to distil into --arch: their probabilities (averaged over "
                             "several: an ensemble) join the targets")
    parser.add_argument("--teacher-weight", type=float, default=defaults.teacher_weight,
                        help="share of the teacher's probabilities in each target; the rest is the one-hot label")
    parser.add_argument("--online-teacher", action="store_true",
                        help="the teacher scores every augmented training batch as the student sees it, instead of "
                             "each face once before training (a teacher forward pass per batch)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help="learning-rate schedule: halve on a validation plateau, or cosine decay to 0 over --epochs")
    parser.add_argument("--erasing", type=float, default=defaults.erasing,
                        help="share of training faces with a random rectangle replaced by noise (0-1; 0 = off)")
    parser.add_argument("--blur", type=float, default=defaults.blur,
                        help=f"share of training faces blurred, sigma {BLUR_SIGMA[0]}-{BLUR_SIGMA[1]} pixels "
                             "(0-1; 0 = off)")
    parser.add_argument("--mixup", type=float, default=defaults.mixup, help="MixUp alpha for training batches (0 = off)")
    parser.add_argument("--extra-classes", nargs="+", default=[], metavar="CLASS",
                        help="more class folders to train on (e.g. angry fear disgust); the saved model predicts only "
                             f"{', '.join(CLASS_NAMES)}")
    parser.add_argument("--box-margin", type=float, default=None,
                        help=f"crop margin around detected boxes, stored with the model (default {PreprocessConfig().box_margin}, "
                             "or the --init-from model's)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer,
                        help="adam; adamw (Adam with --weight-decay); sgd (Nesterov momentum 0.9: use a "
                             "--learning-rate near 0.01)")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                        help="decoupled weight decay for adamw or sgd: each step shrinks weights by rate x decay "
                             "(0.05 for adamw at 1e-3; 5e-3 for sgd at 0.01, about 5e-4 L2 with momentum; 0 = off)")
    parser.add_argument("--ema", type=float, default=defaults.ema,
                        help="validate and save an exponential moving average of the weights with this momentum per "
                             "step (e.g. 0.999; 0 = off)")
    parser.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                        help="mixed_bfloat16 trains 1.3-1.7x faster on CPUs with AMX or AVX512-BF16; "
                             "the saved model is float32 either way")
    parser.add_argument("--backup-dir", help="save the training state here after every epoch; if the run is "
                                             "interrupted, the same command with the same --backup-dir resumes it")
    parser.add_argument("--int8", action="store_true",
                        help="write the LiteRT copy with int8 weights (fer.lite --int8): it then serves every batch")
    parser.add_argument("--make-current", action="store_true", help="point models/current.json at the new model (no gate)")
    parser.add_argument("--labels", help="reviewers' corrections CSV (labels/corrections.csv) to apply to the training split")
    parser.add_argument("--votes", help="annotators' votes (../shared/data/fer2013/ferplus_votes.csv): label every "
                                        "folder's faces by their consensus and judge on consensus validation "
                                        "(fer.votes; default: the --init-from model's votes file, if it had one)")
    parser.add_argument("--vote-targets", choices=fer_votes.TARGETS, default=None,
                        help="with votes: train on the consensus label, or on the vote distribution as soft targets "
                             f"(default {defaults.vote_targets}, or as the --init-from model was trained)")
    parser.add_argument("--init-from", help="start from this model: a .keras path, a stem, or `current`")
    parser.add_argument("--fine-tune", action="store_true",
                        help=f"--init-from current (unless given), {FINE_TUNE_EPOCHS} epochs, learning rate {FINE_TUNE_LEARNING_RATE}")
    parser.add_argument("--gate", action="store_true", help="compare with the current model on validation; promote or reject")
    fer_gate.add_rule_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from fer.model import ARCHITECTURES
    from fer.models import move_pointer, resolve_model

    if args.arch not in ARCHITECTURES:
        print(f"error: unknown --arch {args.arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}", file=sys.stderr)
        return 2
    epochs = args.epochs if args.epochs is not None else FINE_TUNE_EPOCHS if args.fine_tune else defaults.epochs
    learning_rate = args.learning_rate if args.learning_rate is not None else (
        FINE_TUNE_LEARNING_RATE if args.fine_tune else defaults.learning_rate)
    if epochs < 1:
        print("error: --epochs must be at least 1", file=sys.stderr)
        return 2
    if args.online_teacher and not args.teacher:
        print("error: --online-teacher needs --teacher MODEL.keras", file=sys.stderr)
        return 2
    unknown = sorted(set(args.watch) - set(CLASS_NAMES))
    if unknown:
        print(f"error: --watch {' '.join(unknown)}: not a class ({', '.join(CLASS_NAMES)})", file=sys.stderr)
        return 2
    if args.gate and args.make_current:
        print("error: choose --gate (promote only if it passes) or --make-current (promote regardless), not both", file=sys.stderr)
        return 2
    # How labels are weighed: as given, else as the --init-from model was trained (below), else the defaults.
    inherited = {key: getattr(args, key) for key in INHERITED_LABELLING}
    config = TrainConfig(args.arch, epochs, args.batch_size, learning_rate, args.patience,
                         args.label_smoothing, args.augment, args.flip_average,
                         bool(args.class_weighting), args.seed,
                         args.schedule, tuple(args.teacher), args.teacher_weight, args.erasing, args.mixup,
                         tuple(name.lower() for name in args.extra_classes), args.precision, args.online_teacher,
                         args.optimizer, args.weight_decay, args.ema, args.blur,
                         args.vote_targets or defaults.vote_targets,
                         args.class_weight_power if args.class_weight_power is not None else defaults.class_weight_power)
    if not 0.0 <= config.ema < 1.0:
        print("error: --ema is a momentum from 0 (off) to below 1, e.g. 0.999", file=sys.stderr)
        return 2
    if not 0.0 <= config.erasing <= 1.0 or not 0.0 <= config.blur <= 1.0 or config.mixup < 0:
        print("error: --erasing and --blur must be between 0 and 1, and --mixup at least 0", file=sys.stderr)
        return 2
    if config.weight_decay < 0 or (config.weight_decay and config.optimizer == "adam"):
        print("error: --weight-decay must be at least 0, and needs --optimizer adamw or sgd", file=sys.stderr)
        return 2
    preprocess = PreprocessConfig(box_margin=args.box_margin) if args.box_margin is not None else None
    out = Path(args.out)
    if out.suffix == ".keras":
        out = out.with_name(out.stem)
    try:
        # Bare names (`current`, a version) refer to --out's folder: the models folder this command writes into.
        init_spec = args.init_from or ("current" if args.fine_tune else None)
        init_from = resolve_model(init_spec, out.parent) if init_spec else None
        if init_from is not None:
            config = dataclasses.replace(config, **{key: value for key, value in
                                                    parent_labelling(read_metadata(init_from)).items()
                                                    if inherited[key] is None})
        current = current_model_path(out.parent) if args.gate else None  # checked before training: the gate needs it
        if args.gate and beside(out, ".keras").exists():
            raise ModelError(f"{beside(out, '.keras')} already exists; the gate needs a new --out.")
        metadata = run(args.data, out, config, preprocess, labels_path=args.labels, init_from=init_from, argv=argv,
                       backup_dir=args.backup_dir, int8=args.int8, votes_path=args.votes)
        if args.make_current:
            move_pointer(beside(out, ".keras"), "use", out.parent, reason="fer.train --make-current")
            logger.info("models/current.json now points at %s", beside(out, ".keras").name)
        result = None
        if args.gate:
            result = fer_gate.gate(beside(out, ".keras"), current, metadata["data"]["validation_dir"],
                                   fer_gate.rule_from_args(args), args.votes)
            fer_gate.apply_decision(result, out.parent)
    except FerError as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    metrics = metadata["metrics"]
    for key, name in (("validation_consensus", "consensus validation"), ("validation", "validation (folder labels)")):
        if key in metrics:
            print(f"{name}: accuracy {metrics[key]['accuracy']:.4f}  macro-F1 {metrics[key]['macro_f1']:.4f}")
    print(f"({metadata['training_seconds'] / 60:.1f} min)  -> {beside(out, '.keras')}")
    if "corrections" in metadata:
        print(fer_corrections.CorrectionSummary(**metadata["corrections"]).describe())
    if result is not None:
        print()
        print(result.format())
        return 0 if result.promoted else 1
    return 0


def finish(model, config: TrainConfig, preprocess: PreprocessConfig, validation: FaceDataset, out: Path,
           data_summary: dict, history: dict, seconds: float, argv: list[str] | None, extra: dict | None = None,
           int8: bool = False, calibration: np.ndarray | None = None, consensus: FaceDataset | None = None,
           votes=None) -> dict:
    """Calibrate on validation, score through the serving path, and write NAME.keras + NAME.json, then the LiteRT
    copy (int8 weights if `int8`; int8 activations too, their ranges set on `calibration` faces, if given),
    compared with TensorFlow on the validation faces. With `consensus` (validation labelled by `votes`), the
    temperature is fitted there and the LiteRT copy checked there, and both figures are recorded (`calibrate`).

    `extra` (parent model, corrections summary) is added to the JSON as top-level keys.
    """
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
        **(extra or {}),
    }
    calibrate(model, metadata, validation, consensus, votes)
    save_weights_only_model(model, beside(out, ".keras"))
    write_json_atomic(beside(out, ".json"), metadata)
    try:
        lite.export(beside(out, ".keras"), model, int8=int8, calibration=calibration,
                    check=validation if consensus is None else consensus)  # records itself in the JSON
    except Exception as error:  # noqa: BLE001 - the model is complete without it: TensorFlow serves alone
        logger.warning("Could not write the LiteRT copy (%s); the model is served by TensorFlow alone. "
                       "Retry with `python -m fer.lite %s`.", error, beside(out, ".keras"))
    metadata = read_metadata(beside(out, ".keras"))
    plot_history(history, beside(out, ".curves.png"))
    return metadata


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
