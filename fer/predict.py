"""Serving: faces in a photo -> boxes and calibrated class probabilities.

    python -m fer.predict photo.jpg [more.jpg ...] [--model models/NAME.keras] [--whole-image]
    python -m fer.predict photos/ --csv faces.csv          # a folder, searched recursively: one CSV row per face

prints one JSON line per image: {"image": PATH, "faces": [{"box": [x, y, w, h], "probabilities": {...}}, ...]},
or with --csv writes the rows fer.batch describes. Unreadable files are reported on stderr and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from fer import lite
from fer.config import PreprocessConfig
from fer.errors import FerError, ImageError
from fer.faces import detect_faces
from fer.images import ImageSource, load_image
from fer.metrics import apply_temperature
from fer.preprocess import preprocess_face
from fer.registry import current_model_path, load_model

logger = logging.getLogger(__name__)

PREDICT_CHUNK = 256  # faces per forward pass inside predict_faces


def _forward_pass(model, size: int):
    """`model`'s inference-mode forward pass, NumPy batches in and out."""
    import keras  # deferred: see fer.registry.load_model

    if keras.backend.backend() != "tensorflow":  # JAX or PyTorch (training on a lent GPU): Keras compiles it
        return model.predict_on_batch
    import tensorflow as tf

    # One traced graph for every batch size: far cheaper per call than model.predict.
    traced = tf.function(lambda batch: model(batch, training=False),
                         input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)], reduce_retracing=True)
    return lambda batch: traced(batch).numpy()


class Predictor:
    """A loaded model with the preprocessing and inference settings from its JSON."""

    def __init__(self, model, metadata: dict, path: str | Path | None = None, lite_forward=None):
        """`lite_forward` (a fer.lite.LiteForward) serves instead of the LiteRT copy that `path`'s JSON names."""
        self.model = model
        self.metadata = metadata
        self.path = Path(path) if path else None
        self.classes: tuple[str, ...] = tuple(metadata["classes"])
        self.image_size = int(metadata["image_size"])
        self.preprocess_config = PreprocessConfig.from_dict(metadata["preprocess"])
        inference = metadata.get("inference", {})
        self.flip_average = bool(inference.get("flip_average", False))
        self.temperature = float(inference.get("temperature", 1.0))
        self._forward = _forward_pass(model, self.image_size)
        # The model's LiteRT copy, when it has one (fer.lite): a float32 copy takes small batches (photos, webcam
        # frames), an int8 copy every batch.
        self._lite = lite_forward if lite_forward is not None else lite.load_for(self.path, metadata)

    @property
    def runtime(self) -> str:
        if self._lite is None:
            import keras

            return "TensorFlow" if keras.backend.backend() == "tensorflow" else f"Keras on {keras.backend.backend()}"
        if self._lite.serves_every_batch:
            return f"LiteRT {self._lite.weights} (XNNPACK, {self._lite.num_threads} threads), every batch"
        return f"LiteRT (XNNPACK, {self._lite.num_threads} threads) up to {lite.MAX_BATCH} images a call, TensorFlow above"

    @property
    def version(self) -> str:
        return str(self.metadata.get("name") or (self.path.stem if self.path else "unknown"))

    def predict_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 faces from `preprocess_face` -> (N, C) probabilities in `self.classes` order."""
        try:
            faces = np.asarray(faces)
        except ValueError:  # a list of arrays of different shapes
            raise ImageError(f"predict_faces expects an (N, {self.image_size}, {self.image_size}) array; "
                             "got a list of faces of different shapes.") from None
        if faces.ndim == 2:
            faces = faces[None]
        size = self.image_size
        if faces.ndim != 3 or faces.shape[1:] != (size, size):
            raise ImageError(f"predict_faces expects an (N, {size}, {size}) array; got shape {faces.shape}.")
        if faces.dtype != np.uint8:
            raise ImageError(f"predict_faces expects uint8 faces; got {faces.dtype}. Use fer.preprocess.preprocess_face.")
        if len(faces) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        # In chunks, so scoring a whole dataset in one call keeps memory bounded; every face is scored alone
        # (inference-mode batch norm), so chunking does not change a result.
        probabilities = np.concatenate([self._probabilities(faces[start:start + PREDICT_CHUNK])
                                        for start in range(0, len(faces), PREDICT_CHUNK)])
        probabilities = apply_temperature(probabilities.astype(np.float64), self.temperature)
        return probabilities.astype(np.float32)

    def _probabilities(self, faces: np.ndarray) -> np.ndarray:
        """Uncalibrated (N, C) probabilities of (N, S, S) uint8 faces, flip-averaged if the model's JSON says so."""
        batch = faces.astype(np.float32)[..., None]  # (N, S, S, 1) float32 in [0, 255]
        if not self.flip_average:
            return self._run(batch)
        # Faces and their mirror images in one call of 2N: one graph launch instead of two (a third less time for a
        # single face); inference-mode batch norm treats every face alone, so the result is the same.
        both = self._run(np.concatenate([batch, batch[:, :, ::-1, :]]))
        return 0.5 * (both[: len(batch)] + both[len(batch):])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass: the LiteRT copy for a small batch when it is free, else TensorFlow (same results).

        An int8 copy serves every batch, waiting when busy: TensorFlow's float32 probabilities differ a little."""
        if self._lite is not None and self._lite.serves_every_batch:
            return self._lite.call(batch)
        if self._lite is not None and len(batch) <= lite.MAX_BATCH:
            probabilities = self._lite.try_call(batch)
            if probabilities is not None:
                return probabilities
        return self._forward(batch)

    def as_dicts(self, probabilities: np.ndarray) -> list[dict[str, float]]:
        return [{name: float(p) for name, p in zip(self.classes, row)} for row in probabilities]

    def predict(self, image: ImageSource, whole_image: bool = False) -> list[dict]:
        """Every face in `image`, largest first: [{"box": [x, y, w, h], "probabilities": {class: p}}].

        `image` is anything `fer.images.load_image` accepts (arrays are RGB). No face gives []. With
        `whole_image=True` no detection runs and the whole image is classified as one face crop.
        """
        rgb = load_image(image)  # (H, W, 3) uint8
        if whole_image:
            boxes = [(0, 0, rgb.shape[1], rgb.shape[0])]
            faces = preprocess_face(rgb, None, self.preprocess_config)[None]
        else:
            boxes = detect_faces(rgb)
            if not boxes:
                return []
            faces = np.stack([preprocess_face(rgb, box, self.preprocess_config) for box in boxes])
        probabilities = self.predict_faces(faces)
        return [
            {"box": [int(v) for v in box], "probabilities": probs}
            for box, probs in zip(boxes, self.as_dicts(probabilities))
        ]


def load_predictor(path: str | Path | None = None) -> Predictor:
    """Load the model at `path`, or the one `models/current.json` names when `path` is None."""
    model_path = Path(path) if path else current_model_path()
    model, metadata = load_model(model_path)
    return Predictor(model, metadata, model_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", help="image files, or folders to search recursively for images")
    parser.add_argument("--model", help="a .keras file (default: the one models/current.json names)")
    parser.add_argument("--whole-image", action="store_true", help="classify each image as one face crop")
    parser.add_argument("--csv", help="write one row per face to this CSV instead of JSON lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fer import batch

    images, ignored = batch.image_files(args.images)
    if ignored:
        examples = ", ".join(str(path) for path in ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        print(f"note: passed over {len(ignored)} file(s) that are not images by their extension ({examples})",
              file=sys.stderr)
    if not images:
        print(f"error: no image files in {', '.join(args.images)} ({', '.join(batch.IMAGE_SUFFIXES)})",
              file=sys.stderr)
        return 2
    empty = [folder for folder in map(Path, args.images)
             if folder.is_dir() and not any(image.is_relative_to(folder) for image in images)]
    for folder in empty:
        print(f"error: {folder} is a folder without image files ({', '.join(batch.IMAGE_SUFFIXES)})", file=sys.stderr)
    try:
        predictor = load_predictor(args.model)
    except FerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.csv:
        return max(_write_csv(predictor, images, args), 1 if empty else 0)
    status = 1 if empty else 0
    for image in map(str, images):
        try:
            faces = predictor.predict(image, whole_image=args.whole_image)
        except FerError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps({"image": image, "faces": faces}))
    return status


def _write_csv(predictor: Predictor, images: list[Path], args) -> int:
    from tqdm import tqdm  # comes with gradio (through huggingface_hub)

    from fer import batch

    with tqdm(total=len(images), unit="image", file=sys.stderr, disable=None) as bar:  # no bar unless a terminal
        def skipped(path: Path, error: FerError) -> None:
            bar.write(f"error: {error}", file=sys.stderr)

        try:
            summary = batch.write_csv(predictor, images, args.csv, whole_image=args.whole_image, on_skip=skipped,
                                      progress=lambda done: bar.update(done - bar.n))
        except OSError as error:
            print(f"error: cannot write {args.csv}: {error.strerror or error}", file=sys.stderr)
            return 2
    print(f"{summary.images} image(s) read: {summary.faces} face(s), {summary.no_face} without a face; "
          f"{summary.skipped} file(s) skipped; wrote {args.csv}", file=sys.stderr)
    return 1 if summary.skipped else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
