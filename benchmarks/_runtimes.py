"""Alternative ways to run a Predictor's Keras model, measured by speed.py and checked by tests/test_speed_equivalence.py.

Every forward here takes what `Predictor._forward` takes, float32 (N, S, S, 1) raw pixels in [0, 255], and returns
(N, C) softmax probabilities as a NumPy array:

    KerasEager(model)         model(x, training=False), no tf.function (the plain reference)
    KerasPredict(model)       model.predict(x)
    TFLiteForward(model)      fer.lite: the TFLite/LiteRT interpreter on the converted model; quantize=True for int8 weights
    OnnxForward(model)        ONNX Runtime on the tf2onnx-converted model (needs `pip install onnxruntime tf2onnx`)

`fused_flip_probabilities(predictor, faces, forward)` is the proposed predict_faces: originals and mirror images in
one forward call of 2N instead of two calls of N.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np

from fer.metrics import apply_temperature


def input_batch(faces: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 faces -> (N, S, S, 1) float32 in [0, 255], exactly as Predictor.predict_faces builds it."""
    return np.asarray(faces).astype(np.float32)[..., None]


class KerasEager:
    name = "keras model(x), eager"

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))


class KerasPredict:
    name = "keras model.predict(x)"

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.model.predict(batch, batch_size=max(1, len(batch)), verbose=0)


class TFLiteForward:
    """fer.lite's runtime (the TFLite interpreter, XNNPACK on CPU) on a copy converted here from the model.

    `quantize=True` stores weights as int8 (dynamic-range quantization, `fer.lite --int8`): probabilities move by
    about 0.001 (at most 0.016 on validation), so a model is served this way only when its JSON says so.
    """

    def __init__(self, model, num_threads: int | None = None, quantize: bool = False):
        from fer import lite

        weights = "int8" if quantize else "float32"
        self.content = lite.convert(model, int8=quantize)
        self.forward = lite.LiteForward(self.content, num_threads, weights=weights)
        self.name = f"tflite {'int8 weights' if quantize else 'float32'}, {self.forward.num_threads} threads"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.forward.call(batch)  # never busy here: one caller


class OnnxForward:
    """The model converted by tf2onnx and run by ONNX Runtime's CPU provider. ImportError without both packages."""

    def __init__(self, model, num_threads: int | None = None, opset: int = 17):
        import onnxruntime
        import tensorflow as tf
        import tf2onnx

        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
        size = int(model.input_shape[1])
        self.name = "onnxruntime" + (f", {num_threads} threads" if num_threads else "")
        signature = (tf.TensorSpec([None, size, size, 1], tf.float32, name="face"),)
        function = tf.function(lambda batch: model(batch, training=False))  # tf2onnx supplies the signature
        with contextlib.redirect_stdout(io.StringIO()):
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
        self.content = proto.SerializeToString()
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = onnxruntime.InferenceSession(self.content, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def fused_flip_probabilities(predictor, faces: np.ndarray, forward=None) -> np.ndarray:
    """What Predictor.predict_faces returns, with originals and mirror images in one forward call.

    `faces` is (N, S, S) uint8; `forward` defaults to the predictor's tf.function. Returns (N, C) float32.
    """
    batch = input_batch(faces)  # (N, S, S, 1) float32
    forward = forward or predictor._forward
    if predictor.flip_average:
        count = len(batch)
        both = np.concatenate([batch, batch[:, :, ::-1, :]])  # (2N, S, S, 1): originals, then mirrors
        probabilities = np.asarray(forward(both))
        probabilities = 0.5 * (probabilities[:count] + probabilities[count:])
    else:
        probabilities = np.asarray(forward(batch))
    return apply_temperature(probabilities.astype(np.float64), predictor.temperature).astype(np.float32)


def reference_probabilities(predictor, faces: np.ndarray) -> np.ndarray:
    """predict_faces computed the plain way, with eager `model(x)` calls: the yardstick for every fast path."""
    batch = input_batch(faces)
    model = predictor.model
    probabilities = np.asarray(model(batch, training=False))
    if predictor.flip_average:
        probabilities = 0.5 * (probabilities + np.asarray(model(batch[:, :, ::-1, :].copy(), training=False)))
    return apply_temperature(probabilities.astype(np.float64), predictor.temperature).astype(np.float32)
