"""A model's LiteRT copy: NAME.tflite beside NAME.keras, run by the TFLite interpreter (XNNPACK).

    python -m fer.lite models/NAME.keras     # write models/NAME.tflite (float32) and record it in NAME.json
    python -m fer.lite --int8 --check-data ../shared/data/fer2013/validation models/vgg_small_reg.keras

For the batches that photos and webcam frames make (a few faces and their mirror images) the interpreter takes less
than half the time of TensorFlow's traced graph; for hundreds of faces TensorFlow is as fast, so
`fer.predict.Predictor` sends batches of up to MAX_BATCH images here and larger ones to TensorFlow. Both give the
same probabilities to within 1e-5 (tests/test_lite.py). fer.train writes the copy for every model it trains.

`--int8` stores the weights as int8 instead (dynamic-range quantization: activations are quantized on the fly, so
the convolutions run as int8 arithmetic). That copy is several times faster at every batch size, so it serves every
batch, never TensorFlow: the same face always gets the same probabilities. They differ from the float32 network's
by a little (vgg_small_reg on the 2,372 validation faces: 0.001 on average, at most 0.016; the same accuracy);
`--check-data` measures that on a folder of faces and records it in the JSON.

`--int8 --calibration-data DIR` quantizes the activations too, with fixed ranges calibrated on CALIBRATION_FACES
faces from DIR (the training split, so validation stays unseen): static-range quantization. In the interpreter at
INT8_CHUNK images a call on two cores of an Intel CPU with AMX it does vgg_small 5,647 images/s against the
int8-weights copy's 5,482, and the reference-size vgg_base 2,730 against 2,062 (on a two-core AMD EPYC without AMX,
the trained vgg_base did only 1,368: measure on the machine you serve from); served end to end, vgg_small_reg does
2,804 faces/s against 2,455 (benchmarks/speed.py), with the same accuracy to within two faces of 2,372.

The JSON records the SHA-256 of the .keras file the copy was made from: a copy that does not match (the .keras was
replaced, say) is ignored with a warning, and TensorFlow serves alone. FER_LITE=0 turns the copy off.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import os
import sys
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from fer.config import PreprocessConfig
from fer.errors import FerError

logger = logging.getLogger(__name__)

MAX_BATCH = 16  # images per call (8 faces with flip averaging); larger batches go to TensorFlow, as fast there
# Images per interpreter call for an int8 copy, which serves every batch. Near the best throughput on two cores
# (images/s at 16/32/64/128 a call, int8 weights: vgg_small 5,264/5,482/5,260/3,900; vgg_base 2,137/2,062/1,720/1,387).
INT8_CHUNK = 32
# "int8": int8 weights, activations quantized on the fly; "int8-static": int8 weights and activations, fixed ranges
WEIGHTS = ("float32", "int8", "int8-static")
CALIBRATION_FACES = 256  # faces whose activations set the static ranges: 1,024 gave the same accuracy
_INTERPRETERS_KEPT = 4  # one interpreter per recent batch size: resizing one re-plans its whole graph


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(model, int8: bool = False, calibration: np.ndarray | None = None) -> bytes:
    """A Keras model -> a TFLite flatbuffer with a free batch dimension (weights frozen in; int8 weights if asked).

    With `calibration`, (N, S, S) uint8 faces, the activations are int8 too, their ranges set on those faces.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None and not int8:
        raise ValueError("calibration faces set int8 activation ranges: they need int8=True.")
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # without calibration: dynamic-range quantization
    if calibration is not None:
        images = np.asarray(calibration, dtype=np.float32)[..., None]
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"calibration must be (N, S, S) faces, N >= 1; got shape {np.shape(calibration)}.")
        converter.representative_dataset = lambda: ([images[start:start + 16]] for start in range(0, len(images), 16))
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints the exported signature
        return converter.convert()


def calibration_faces(images: np.ndarray, count: int = CALIBRATION_FACES, seed: int = 0) -> np.ndarray:
    """`count` of these (N, S, S) faces, drawn at random with a fixed seed: the static int8 ranges' sample."""
    if len(images) <= count:
        return np.asarray(images)
    return np.asarray(images)[np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))]


def export(model_path: str | Path, model=None, *, int8: bool = False, calibration: np.ndarray | None = None,
           check=None) -> Path:
    """Write NAME.tflite beside `model_path` and record it (file name, weights, source checksum) in NAME.json.

    `model` is the loaded Keras model when the caller has it (fer.train); otherwise it is loaded from `model_path`.
    `calibration` (with `int8`): faces that set the activations' int8 ranges (`convert`); the copy is "int8-static".
    `check`, a `fer.data.FaceDataset`, is scored through the new copy and through TensorFlow, and how far they differ
    goes into the JSON (`compare`).
    """
    from fer.registry import load_model, metadata_path, read_metadata, write_json_atomic

    model_path = Path(model_path)
    if model is None:
        model, _ = load_model(model_path)
    content = convert(model, int8=int8, calibration=calibration)
    lite_path = model_path.with_suffix(".tflite")
    temporary = lite_path.with_name(f".{lite_path.name}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, lite_path)
    metadata = read_metadata(model_path)
    weights = "int8-static" if calibration is not None else "int8" if int8 else "float32"
    metadata["lite"] = {"file": lite_path.name, "weights": weights,
                        "keras_sha256": file_sha256(model_path)}
    if check is not None:
        metadata["lite"]["check"] = compare(model, metadata, LiteForward(content, weights=metadata["lite"]["weights"]),
                                            check)
    write_json_atomic(metadata_path(model_path), metadata)
    return lite_path


def compare(model, metadata: dict, forward: "LiteForward", dataset) -> dict:
    """How the copy's served probabilities differ from TensorFlow's on `dataset`'s faces (flip averaging and
    temperature as the JSON says): largest and mean absolute difference, share of faces whose top class is the same,
    and each path's accuracy against the dataset's labels."""
    from fer.metrics import confusion_matrix
    from fer.predict import Predictor

    if tuple(dataset.classes) != tuple(metadata["classes"]):
        raise ValueError(f"The check faces' classes {dataset.classes} are not the model's {metadata['classes']}.")
    float_probabilities = Predictor(model, metadata).predict_faces(dataset.images)  # in memory: TensorFlow alone
    lite_probabilities = Predictor(model, metadata, lite_forward=forward).predict_faces(dataset.images)
    difference = np.abs(float_probabilities.astype(np.float64) - lite_probabilities)
    labels = np.asarray(dataset.labels)
    return {
        "faces": int(len(dataset)),
        "max_abs_difference": round(float(difference.max(initial=0.0)), 5),
        "mean_abs_difference": round(float(difference.mean()) if difference.size else 0.0, 6),
        "same_top_class": round(float(np.mean(float_probabilities.argmax(1) == lite_probabilities.argmax(1))), 5),
        "accuracy": {"tensorflow": round(float(np.mean(float_probabilities.argmax(1) == labels)), 5),
                     "lite": round(float(np.mean(lite_probabilities.argmax(1) == labels)), 5)},
        # rows: true class, columns: the copy's top class
        "lite_confusion": confusion_matrix(labels, lite_probabilities.argmax(1), len(dataset.classes)).tolist(),
    }


def load_for(model_path: str | Path | None, metadata: dict) -> "LiteForward | None":
    """The LiteRT copy recorded in `metadata` for the model at `model_path`, or None (no copy, stale, FER_LITE=0)."""
    entry = metadata.get("lite")
    if model_path is None or not entry or os.environ.get("FER_LITE", "1") == "0":
        return None
    model_path = Path(model_path)
    name = str(entry.get("file") or "") if isinstance(entry, dict) else ""
    # A file name beside the model, nothing else (Path.with_name raises on "" or a path with folders in it).
    if not name or Path(name).name != name or not model_path.with_name(name).is_file():
        logger.warning("%s names a LiteRT copy %r that is not a file beside it; serving with TensorFlow only. "
                       "Recreate it with `python -m fer.lite %s`.", model_path.with_suffix(".json").name, name, model_path)
        return None
    lite_path = model_path.with_name(name)
    if file_sha256(model_path) != entry.get("keras_sha256"):
        logger.warning("%s was made from another version of %s; serving with TensorFlow only. "
                       "Recreate it with `python -m fer.lite %s`.", lite_path.name, model_path.name, model_path)
        return None
    weights = entry.get("weights", "float32")
    if weights not in WEIGHTS:
        logger.warning("%s says its LiteRT copy has %r weights (expected one of %s); serving with TensorFlow only. "
                       "Recreate it with `python -m fer.lite %s`.", model_path.with_suffix(".json").name, weights,
                       ", ".join(WEIGHTS), model_path)
        return None
    try:
        return LiteForward(lite_path.read_bytes(), weights=weights)
    except (ValueError, RuntimeError, OSError, AttributeError, ImportError) as error:  # corrupt, or no tf.lite
        logger.warning("Could not load %s (%s); serving with TensorFlow only.", lite_path, error)
        return None


def _interpreter_class():
    import tensorflow as tf

    return tf.lite.Interpreter


class LiteForward:
    """Calls the flatbuffer on float32 (N, S, S, 1) batches; returns (N, C) probabilities.

    An interpreter runs one call at a time. For a float32 copy, rather than queue a second request behind the first,
    `try_call` returns None while another thread is inside, and the caller uses TensorFlow for that batch (the same
    probabilities). An int8 copy's probabilities differ a little from TensorFlow's, so it serves every batch
    (`serves_every_batch`): `call` waits its turn, and takes large batches INT8_CHUNK images at a time.
    """

    def __init__(self, content: bytes, num_threads: int | None = None, weights: str = "float32"):
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}; got {weights!r}.")
        self.content = content
        self.weights = weights
        self.serves_every_batch = weights != "float32"
        self.num_threads = num_threads or max(1, min(4, os.cpu_count() or 1))
        self._interpreters: OrderedDict[int, object] = OrderedDict()
        self._lock = threading.Lock()
        first = self._interpreter(1)  # fail now, at load time, on a corrupt file
        # Tensor indices belong to the flatbuffer, the same in every interpreter made from it: look them up once.
        self._input_index = first.get_input_details()[0]["index"]
        self._output_index = first.get_output_details()[0]["index"]

    def _interpreter(self, batch_size: int):
        interpreter = self._interpreters.get(batch_size)
        if interpreter is not None:
            self._interpreters.move_to_end(batch_size)
            return interpreter
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated": it is what TensorFlow 2.21 ships
            interpreter = _interpreter_class()(model_content=self.content, num_threads=self.num_threads)
        details = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(details["index"], [batch_size, *details["shape"][1:]])
        interpreter.allocate_tensors()
        self._interpreters[batch_size] = interpreter
        if len(self._interpreters) > _INTERPRETERS_KEPT:
            self._interpreters.popitem(last=False)
        return interpreter

    def try_call(self, batch: np.ndarray) -> np.ndarray | None:
        """The batch's probabilities, or None if another thread is using the interpreter."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._invoke(batch)
        finally:
            self._lock.release()

    def call(self, batch: np.ndarray) -> np.ndarray:
        """The batch's probabilities, waiting for the interpreter if another thread is using it."""
        with self._lock:
            if len(batch) <= INT8_CHUNK:
                return self._invoke(batch)
            return np.concatenate([self._invoke(batch[start:start + INT8_CHUNK])
                                   for start in range(0, len(batch), INT8_CHUNK)])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter(len(batch))
        interpreter.set_tensor(self._input_index, np.ascontiguousarray(batch, np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(self._output_index).copy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.lite", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help=".keras files (a version name in models/ works too)")
    parser.add_argument("--int8", action="store_true",
                        help="int8 weights: several times faster, probabilities within about 0.01 of the float32 network")
    parser.add_argument("--calibration-data", metavar="DIR",
                        help=f"with --int8: int8 activations too, their ranges set on {CALIBRATION_FACES} faces from "
                             "these class folders (the training split); 1.1-1.3x the throughput of int8 weights")
    parser.add_argument("--check-data", metavar="DIR",
                        help="class folders of faces (e.g. the validation split) to compare the copy with TensorFlow "
                             "on; a model trained on votes is scored against their consensus (fer.votes)")
    args = parser.parse_args(argv)
    if args.calibration_data and not args.int8:
        parser.error("--calibration-data sets int8 activation ranges: add --int8")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fer.data import folder_classes, load_faces
    from fer.models import resolve_model
    from fer.votes import default_for, label_faces
    from fer.votes import read as read_votes
    from fer.registry import read_metadata

    status = 0
    for spec in args.models:
        try:
            path = resolve_model(spec)
            check = calibration = None
            metadata = read_metadata(path)
            classes, preprocess = tuple(metadata["classes"]), PreprocessConfig.from_dict(metadata["preprocess"])
            if args.check_data:  # labelled as the model learned: by the annotators' consensus if it had votes
                votes_path = default_for(metadata)
                if votes_path is None:
                    check = load_faces(args.check_data, classes, preprocess)
                else:
                    every = load_faces(args.check_data, folder_classes(args.check_data), preprocess)
                    check, _ = label_faces(every, classes, read_votes(votes_path))
            if args.calibration_data:
                calibration = calibration_faces(load_faces(args.calibration_data, classes, preprocess).images)
            lite_path = export(path, int8=args.int8, calibration=calibration, check=check)
        except FerError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
            continue
        entry = read_metadata(path)["lite"]
        print(f"wrote {lite_path} ({lite_path.stat().st_size / 1e6:.1f} MB, {entry['weights']} weights)")
        if "check" in entry:
            found = entry["check"]
            print(f"  on {found['faces']} faces: probabilities differ by {found['mean_abs_difference']:.4f} on average, "
                  f"{found['max_abs_difference']:.4f} at most; same top class {found['same_top_class']:.2%}; accuracy "
                  f"{found['accuracy']['lite']:.4f} (TensorFlow {found['accuracy']['tensorflow']:.4f})")
    return status


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
