"""benchmarks/operating_point.py's fit: bias-corrected temperature scaling recovers a known temperature and known
class offsets from labels drawn with them. The benchmark itself needs the FER2013 faces and is run by hand."""

import importlib.util
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports its sibling accuracy.py
    spec = importlib.util.spec_from_file_location("operating_point", BENCHMARKS / "operating_point.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _draw(rng, count, scale, bias):
    """Model probabilities, and labels drawn from softmax(scale * log p + bias): what the fit should find."""
    logits = rng.normal(0.0, 2.0, (count, len(bias)))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.exp(scale * np.log(probabilities) + bias)
    truth /= truth.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(len(bias), p=row) for row in truth])
    return probabilities, labels


def test_fit_offsets_recovers_temperature_and_offsets(monkeypatch):
    operating_point = _load(monkeypatch)
    rng = np.random.default_rng(0)
    bias = np.array([0.0, 0.6, -0.4, 0.3])
    probabilities, labels = _draw(rng, 20000, 1.5, bias)
    temperature, offsets = operating_point.fit_offsets(probabilities, labels)
    assert abs(temperature - 1 / 1.5) < 0.03
    np.testing.assert_allclose(offsets, bias / 1.5, atol=0.05)


def test_fit_offsets_without_temperature_keeps_it_at_one(monkeypatch):
    operating_point = _load(monkeypatch)
    rng = np.random.default_rng(1)
    bias = np.array([0.0, -0.5, 0.5, 0.0])
    probabilities, labels = _draw(rng, 20000, 1.0, bias)
    temperature, offsets = operating_point.fit_offsets(probabilities, labels, with_temperature=False)
    assert temperature == 1.0
    np.testing.assert_allclose(offsets, bias, atol=0.05)
