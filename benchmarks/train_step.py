"""How long one training step takes with augmentation, on whichever Keras backend is set (issue 8, GPU training).

    KERAS_BACKEND=jax python benchmarks/train_step.py [--arch vgg_base] [--steps 30]

Times `model.fit` on synthetic faces in batches of 64 (after a warm-up that compiles) three ways, in one process:
no augmentation (the baseline), augmentation inside the compiled training step (how the NumPy path worked until
2026-12-04) and augmentation of each batch before it (`fer.train.batch_augmenter`, how it works now). Prints
milliseconds a step and the ratio to the baseline. On TensorFlow, `fer.train` uses tf.data instead; the figures
there say what the layers cost, not what training does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_ms(way: str, arch: str, steps: int, faces: np.ndarray, targets: np.ndarray) -> float:
    import keras

    from fer.model import build_model
    from fer.train import TrainConfig, augmenter, batch_augmenter, numpy_batches

    config = TrainConfig(arch=arch, erasing=0.25, mixup=0.2)
    network = build_model(arch, targets.shape[1], faces.shape[1])
    model = network
    if way == "inside the step":
        inputs = keras.Input(shape=network.input_shape[1:])
        model = keras.Model(inputs, network(augmenter(config.erasing)(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    augment = batch_augmenter(config, faces.shape[1]) if way == "before each batch" else None
    data = numpy_batches(faces, targets, config, augment=augment)
    model.fit(data, epochs=1, verbose=0, steps_per_epoch=3)  # compiles
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0, steps_per_epoch=steps)
    return (time.perf_counter() - start) / steps * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/train_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vgg_base")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of 64 faces for each way")
    args = parser.parse_args(argv)

    import keras

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (64 * (args.steps + 3), 48, 48), dtype=np.uint8)
    targets = np.eye(4, dtype=np.float32)[rng.integers(0, 4, len(faces))]
    devices = keras.distribution.list_devices()
    print(f"Keras {keras.__version__} on {keras.backend.backend()}, {devices[0] if devices else 'CPU'}; "
          f"{args.arch}, batch 64, {args.steps} steps each, MixUp 0.2 and erasing 0.25 with augmentation")
    base = None
    for way in ("no augmentation", "inside the step", "before each batch"):
        ms = step_ms(way, args.arch, args.steps, faces, targets)
        base = base or ms
        print(f"  {way:18s} {ms:8.1f} ms a step   x{ms / base:5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
