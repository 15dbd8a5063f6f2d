"""benchmarks/peer_accuracy.py's rules, on synthetic probabilities: PyPI fer's seven classes mapped onto our four by
name, its answer the argmax among those four, a face it found nothing in counted wrong; and clear failures when its
venv is missing or is not the PyPI package. Neither the FER2013 faces nor PyPI fer's venv is needed; the benchmark
itself is run by hand."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from fer.config import CLASS_NAMES
from fer.data import FaceDataset
from fer.evaluate import score

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
PEER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # PyPI fer's order


def _load(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports its sibling _fer_pypi.py
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def peer_accuracy(monkeypatch):
    return _load("peer_accuracy", monkeypatch)


def _seven(**probabilities) -> list[float]:
    return [probabilities.get(name, 0.0) for name in PEER_LABELS]


def _dataset(labels) -> FaceDataset:
    count = len(labels)
    return FaceDataset(np.zeros((count, 48, 48), np.uint8), np.asarray(labels), [f"v/c/{i}.png" for i in range(count)],
                       CLASS_NAMES)


def test_select_classes_maps_by_name_into_our_order(peer_accuracy):
    seven = np.array([_seven(angry=0.1, disgust=0.2, fear=0.3, happy=0.4, sad=0.5, surprise=0.6, neutral=0.7)])
    four = peer_accuracy.select_classes(seven, PEER_LABELS, CLASS_NAMES)
    expected = {"happy": 0.4, "sad": 0.5, "neutral": 0.7, "surprise": 0.6}
    np.testing.assert_allclose(four, [[expected[name] for name in CLASS_NAMES]])


def test_select_classes_names_a_class_the_peer_lacks(peer_accuracy):
    with pytest.raises(ValueError, match="no class contempt"):
        peer_accuracy.select_classes(np.ones((1, 7)), PEER_LABELS, ("happy", "contempt"))


def test_answer_is_the_argmax_among_our_four_even_when_another_class_tops_all_seven(peer_accuracy):
    replies = [_seven(angry=0.6, sad=0.25, neutral=0.15),     # angry on top: its answer among ours is sad
               _seven(fear=0.5, surprise=0.3, happy=0.2),     # fear on top: surprise
               _seven(happy=0.9, neutral=0.1)]                # happy, one of ours
    labels = [CLASS_NAMES.index(name) for name in ("sad", "surprise", "happy")]
    scores, no_face, outside = peer_accuracy.peer_scores(replies, PEER_LABELS, CLASS_NAMES, np.asarray(labels))
    assert [CLASS_NAMES[index] for index in scores.argmax(axis=1)] == ["sad", "surprise", "happy"]
    assert (no_face, outside) == (0, 2)
    assert score(_dataset(labels), scores)["accuracy"] == 1.0


def test_a_face_without_an_answer_counts_as_wrong_and_is_counted(peer_accuracy):
    labels = np.arange(len(CLASS_NAMES))  # one face of each class
    replies = [None] * len(labels)
    replies[0] = _seven(**{CLASS_NAMES[0]: 1.0})  # the first right, the rest no face
    scores, no_face, outside = peer_accuracy.peer_scores(replies, PEER_LABELS, CLASS_NAMES, labels)
    assert (no_face, outside) == (len(labels) - 1, 0)
    assert np.all(scores[1:].argmax(axis=1) != labels[1:])
    report = score(_dataset(labels), scores, no_face=no_face)
    assert report["accuracy"] == pytest.approx(1 / len(labels))
    assert report["no_face"] == len(labels) - 1


def test_ratios_divide_ours_by_the_peers(peer_accuracy):
    ratio = peer_accuracy.ratios({"accuracy": 0.8, "macro_f1": 0.6}, {"accuracy": 0.4, "macro_f1": 0.3})
    assert ratio == pytest.approx({"accuracy": 2.0, "macro_f1": 2.0})


def test_cli_says_how_to_make_the_missing_peer_venv(peer_accuracy, tmp_path, capsys):
    missing = tmp_path / "no-venv" / "bin" / "python"
    assert peer_accuracy.main(["--fer-python", str(missing), "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"no Python at {missing}" in error and "benchmarks/README.md" in error


def test_runner_refuses_a_python_without_pypi_fer(monkeypatch, tmp_path):
    """Our venv's Python, from a folder outside the project, cannot import PyPI fer: the client says why, with the
    runner's own error, instead of hanging or failing later on a face."""
    fer_pypi = _load("_fer_pypi", monkeypatch)
    with pytest.raises(fer_pypi.PypiFerError, match="fer"):
        fer_pypi.PypiFer(sys.executable, tmp_path)
