"""A model's LiteRT copy: NAME.tflite beside NAME.keras, run by the TFLite interpreter (XNNPACK) for small batches.

    python -m fer.lite models/vgg_small.keras     # write models/vgg_small.tflite and record it in vgg_small.json

For the batches that photos and webcam frames make (a few faces and their mirror images) the interpreter takes less
than half the time of TensorFlow's traced graph; for hundreds of faces TensorFlow is as fast, so
`fer.predict.Predictor` sends batches of up to MAX_BATCH images here and larger ones to TensorFlow. Both give the
same probabilities to within 1e-5 (tests/test_lite.py). fer.train writes the copy for every model it trains.

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

from fer.errors import FerError

logger = logging.getLogger(__name__)

MAX_BATCH = 16  # images per call (8 faces with flip averaging); larger batches go to TensorFlow, as fast there
_INTERPRETERS_KEPT = 4  # one interpreter per recent batch size: resizing one re-plans its whole graph


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(model) -> bytes:
    """A Keras model -> a float32 TFLite flatbuffer with a free batch dimension (weights frozen in)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints the exported signature
        return converter.convert()


def export(model_path: str | Path, model=None) -> Path:
    """Write NAME.tflite beside `model_path` and record it (file name, source checksum) in NAME.json.

    `model` is the loaded Keras model when the caller has it (fer.train); otherwise it is loaded from `model_path`.
    """
    from fer.registry import load_model, metadata_path, read_metadata, write_json_atomic

    model_path = Path(model_path)
    if model is None:
        model, _ = load_model(model_path)
    content = convert(model)
    lite_path = model_path.with_suffix(".tflite")
    temporary = lite_path.with_name(f".{lite_path.name}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, lite_path)
    metadata = read_metadata(model_path)
    metadata["lite"] = {"file": lite_path.name, "keras_sha256": file_sha256(model_path)}
    write_json_atomic(metadata_path(model_path), metadata)
    return lite_path


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
    try:
        return LiteForward(lite_path.read_bytes())
    except (ValueError, RuntimeError, OSError, AttributeError, ImportError) as error:  # corrupt, or no tf.lite
        logger.warning("Could not load %s (%s); serving with TensorFlow only.", lite_path, error)
        return None


def _interpreter_class():
    import tensorflow as tf

    return tf.lite.Interpreter


class LiteForward:
    """Calls the flatbuffer on float32 (N, S, S, 1) batches; returns (N, C) probabilities, or None when busy.

    An interpreter runs one call at a time. Rather than queue a second request behind the first, `try_call` returns
    None while another thread is inside, and the caller uses TensorFlow for that batch.
    """

    def __init__(self, content: bytes, num_threads: int | None = None):
        self.content = content
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
        if not self._lock.acquire(blocking=False):
            return None
        try:
            interpreter = self._interpreter(len(batch))
            interpreter.set_tensor(self._input_index, np.ascontiguousarray(batch, np.float32))
            interpreter.invoke()
            return interpreter.get_tensor(self._output_index).copy()
        finally:
            self._lock.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.lite", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help=".keras files (a version name in models/ works too)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fer.models import resolve_model

    status = 0
    for spec in args.models:
        try:
            path = export(resolve_model(spec))
        except FerError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
            continue
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return status


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
