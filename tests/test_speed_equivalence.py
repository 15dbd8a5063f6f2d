"""Fast paths give the plain model's predictions: the served tf.function, the fused flip averaging and the alternative
runtimes that benchmarks/speed.py measures, all against eager `model(x)` / `model.predict`. Correctness only: no timing."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fer.faces import detect_faces
from fer.images import load_image
from fer.predict import Predictor
from fer.preprocess import preprocess_face

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
ROUNDING = 1e-5  # float32 sums in another order; a real change in a prediction is orders of magnitude larger


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runtimes = _load("_runtimes")
photos = _load("_photos")


@pytest.fixture(scope="module")
def faces(astronaut) -> np.ndarray:
    """(64, 48, 48) uint8: the astronaut's face, then random faces (the untrained model gives varied outputs on them)."""
    rgb = load_image(astronaut)
    real = preprocess_face(rgb, detect_faces(rgb)[0])
    noise = np.random.default_rng(0).integers(0, 256, size=(63, 48, 48), dtype=np.uint8)
    return np.concatenate([real[None], noise])


@pytest.fixture(scope="module")
def calibrated(predictor) -> Predictor:
    """The fixture model with a temperature other than 1, so calibration is part of what is compared."""
    metadata = {**predictor.metadata, "inference": {"flip_average": True, "temperature": 1.3}}
    return Predictor(predictor.model, metadata)


@pytest.mark.parametrize("count", [1, 5, 64])
def test_predict_faces_matches_eager_reference(calibrated, faces, count):
    fast = calibrated.predict_faces(faces[:count])
    reference = runtimes.reference_probabilities(calibrated, faces[:count])
    assert fast.shape == (count, len(calibrated.classes))
    np.testing.assert_allclose(fast, reference, rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(fast.sum(axis=1), 1.0, atol=ROUNDING)


def test_tf_function_matches_model_predict_for_every_batch_size(predictor, faces):
    for count in (1, 3, 64, 2):  # one traced graph serves every size, in any order
        batch = runtimes.input_batch(faces[:count])
        served = predictor._forward(batch)
        np.testing.assert_allclose(served, runtimes.KerasPredict(predictor.model)(batch), rtol=0, atol=ROUNDING)
        np.testing.assert_allclose(served, runtimes.KerasEager(predictor.model)(batch), rtol=0, atol=ROUNDING)


@pytest.mark.parametrize("flip_average", [True, False])
def test_fused_flip_matches_predict_faces(predictor, faces, flip_average):
    metadata = {**predictor.metadata, "inference": {"flip_average": flip_average, "temperature": 1.3}}
    served = Predictor(predictor.model, metadata)
    for count in (1, 5, 64):
        np.testing.assert_allclose(runtimes.fused_flip_probabilities(served, faces[:count]),
                                   served.predict_faces(faces[:count]), rtol=0, atol=ROUNDING)


def test_tflite_float32_matches_keras(calibrated, faces):
    tflite = runtimes.TFLiteForward(calibrated.model)
    for count in (1, 64, 5):
        batch = runtimes.input_batch(faces[:count])
        np.testing.assert_allclose(tflite(batch), runtimes.KerasEager(calibrated.model)(batch), rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(runtimes.fused_flip_probabilities(calibrated, faces, tflite),
                               runtimes.reference_probabilities(calibrated, faces), rtol=0, atol=ROUNDING)


def test_benchmark_photos_hold_one_and_five_faces():
    for photo, count in ((photos.one_face_photo(), 1), (photos.five_face_photo(), 5)):
        assert photo.shape == (480, 640, 3) and photo.dtype == np.uint8
        assert len(detect_faces(load_image(photos.encode_jpeg(photo)))) == count
