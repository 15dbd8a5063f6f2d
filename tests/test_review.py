"""fer.review: the three queues, their ranking, the probability caches, out-of-fold scoring and a review session.

Ranking tests use stub predictors with known probabilities; one test trains two tiny fold models for real."""

import dataclasses
import shutil

import numpy as np
import pytest
from PIL import Image

from fer import labels, review
from fer.config import CLASS_NAMES
from fer.data import FaceDataset, load_faces
from fer.errors import DataError
from fer.preprocess import face_sha256
from conftest import write_face_tree


class BrightnessPredictor:
    """Probabilities from a face's mean brightness: the nearest class mean of write_face_tree's faces wins."""

    classes = CLASS_NAMES

    def __init__(self, means, version="stub-1", metadata=None):
        self.means = np.asarray(means, dtype=np.float64)
        self.version = version
        self.metadata = metadata or {"name": version, "created": "2026-01-01T00:00:00+00:00"}
        self.batches = []

    def predict_faces(self, faces):
        self.batches.append(len(faces))
        brightness = faces.reshape(len(faces), -1).mean(axis=1)
        logits = -np.square((brightness[:, None] - self.means[None, :]) / 10.0)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class TablePredictor:
    """Probabilities looked up by face hash (uniform for faces not in the table), in a shuffled class order."""

    classes = ("surprise", "neutral", "sad", "happy")
    version = "table-1"

    def __init__(self, table):
        self.table = table

    def predict_faces(self, faces):
        rows = [self.table.get(face_sha256(face), {name: 0.25 for name in CLASS_NAMES}) for face in faces]
        return np.array([[row[name] for name in self.classes] for row in rows], dtype=np.float32)


FLIPS = {  # file -> the wrong folder it is moved to
    "sad/face_000.png": "neutral",
    "neutral/face_001.png": "sad",
    "happy/face_002.png": "sad",
    "surprise/face_003.png": "happy",  # outside the default sad/neutral focus
}


@pytest.fixture
def flipped(tmp_path):
    """A training tree where four faces sit in the wrong class folder, and a predictor that knows the right class."""
    root = write_face_tree(tmp_path / "data" / "train", per_class=6)
    clean = load_faces(root)
    means = [clean.images[clean.labels == k].mean() for k in range(len(CLASS_NAMES))]
    for relative, wrong in FLIPS.items():
        source = root / relative
        shutil.move(source, root / wrong / f"flip_{source.parent.name}.png")
    return root, BrightnessPredictor(means)


def flip_names(root):
    return {f"train/{wrong}/flip_{relative.split('/')[0]}.png" for relative, wrong in FLIPS.items()}


def test_injected_label_flips_rank_first(flipped, tmp_path):
    root, predictor = flipped
    queue = review.build_queue(predictor=predictor, data_dir=root, labels_dir=tmp_path / "labels",
                               cache_dir=tmp_path / "cache", oos_path=tmp_path / "none.npz")
    in_focus = flip_names(root) - {"train/happy/flip_surprise.png"}
    assert {item.source for item in queue[:3]} == in_focus
    # The two sad<->neutral flips first (p(other of the pair) ~ 1); then the happy face filed as sad (neither sad nor
    # neutral, so ~0); then every face whose label the model agrees with (~ -1).
    assert {item.source for item in queue[:2]} == {"train/neutral/flip_sad.png", "train/sad/flip_neutral.png"}
    assert all(item.score > 0.9 for item in queue[:2]) and abs(queue[2].score) < 0.1
    assert all(item.score < -0.9 for item in queue[3:])
    assert all(item.given_label in review.DEFAULT_FOCUS or item.predicted_label in review.DEFAULT_FOCUS for item in queue)
    assert [item.score for item in queue] == sorted((item.score for item in queue), reverse=True)
    top = queue[0]
    assert top.face.shape == (48, 48) and top.face.dtype == np.uint8 and top.sha256 == face_sha256(top.face)
    assert list(top.probabilities) == list(CLASS_NAMES) and sum(top.probabilities.values()) == pytest.approx(1, abs=1e-5)
    other = "neutral" if top.given_label == "sad" else "sad"
    assert top.score == pytest.approx(top.probabilities[other] - top.probabilities[top.given_label], abs=1e-6)
    assert top.in_sample and top.model_version == "stub-1" and top.queue == "dataset"
    assert set(top.to_dict()) >= {"sha256", "source", "given_label", "probabilities", "score", "in_sample", "others"}

    everything = review.build_queue(predictor=predictor, data_dir=root, focus=None, labels_dir=tmp_path / "labels",
                                    cache_dir=tmp_path / "cache", oos_path=tmp_path / "none.npz")
    assert {item.source for item in everything[:4]} == flip_names(root) and len(everything) == 24


def test_model_probabilities_are_cached_by_model_and_data(flipped, tmp_path):
    root, predictor = flipped
    options = dict(data_dir=root, labels_dir=tmp_path / "labels", cache_dir=tmp_path / "cache", oos_path=tmp_path / "x")
    first = review.build_queue(predictor=predictor, **options)
    calls = len(predictor.batches)
    second = review.build_queue(predictor=predictor, **options)
    assert len(predictor.batches) == calls  # served from cache/review/*.npz
    assert [item.sha256 for item in first] == [item.sha256 for item in second]
    assert len(list((tmp_path / "cache" / "review").glob("probabilities-*.npz"))) == 1

    newer = BrightnessPredictor(predictor.means, version="stub-2",
                                metadata={"name": "stub-2", "data": {"train_dir": str(tmp_path / "elsewhere")}})
    queue = review.build_queue(predictor=newer, **options)
    assert newer.batches and len(list((tmp_path / "cache" / "review").glob("*.npz"))) == 2
    assert not any(item.in_sample for item in queue)  # this model says it trained on another folder


def test_predictions_go_in_batches_of_256():
    predictor = BrightnessPredictor([40, 95, 150, 200])
    probabilities = review.predict_in_batches(predictor, np.zeros((600, 48, 48), np.uint8))
    assert predictor.batches == [256, 256, 88] and probabilities.shape == (600, 4)


def test_out_of_fold_probabilities_are_used_where_the_cache_covers_a_face(flipped, tmp_path):
    root, predictor = flipped
    dataset = load_faces(root)
    shas = dataset.hashes()
    flip_index = next(i for i, path in enumerate(dataset.paths) if path.endswith("neutral/flip_sad.png"))
    probabilities = np.full((len(shas), 4), np.nan, np.float32)
    probabilities[flip_index] = [0.0, 0.02, 0.98, 0.0]  # out of fold, the model agrees with the folder: neutral
    oos_path = review.save_out_of_fold(tmp_path / "oos.npz", shas, probabilities, dataset.labels,
                                       np.zeros(len(shas)), {"arch": "stub", "folds": 5, "epochs": 1, "folds_done": [0]})
    queue = review.build_queue(predictor=predictor, data_dir=root, labels_dir=tmp_path / "labels",
                               cache_dir=tmp_path / "cache", oos_path=oos_path)
    item = next(item for item in queue if item.source == "train/neutral/flip_sad.png")
    assert not item.in_sample and item.model_version.startswith("out-of-fold stub")
    assert item.score == pytest.approx(0.02 - 0.98) and item not in queue[:2]
    assert sum(predictor.batches) == len(shas) - 1  # the model scored only the faces the cache lacks
    assert all(other.in_sample for other in queue if other is not item)


def test_an_in_memory_dataset_is_ranked_by_its_own_labels(tmp_path):
    root = write_face_tree(tmp_path / "data" / "train", per_class=6)
    clean = load_faces(root)
    means = [clean.images[clean.labels == k].mean() for k in range(len(CLASS_NAMES))]
    sad, neutral = CLASS_NAMES.index("sad"), CLASS_NAMES.index("neutral")
    flips = np.array([np.flatnonzero(clean.labels == sad)[0], np.flatnonzero(clean.labels == neutral)[2]])
    noisy_labels = clean.labels.copy()
    noisy_labels[flips] = np.where(clean.labels[flips] == sad, neutral, sad)
    noisy = FaceDataset(clean.images, noisy_labels, clean.paths, clean.classes)
    options = dict(predictor=BrightnessPredictor(means), data_dir=root, labels_dir=tmp_path / "labels",
                   cache_dir=tmp_path / "cache", oos_path=tmp_path / "none.npz")

    queue = review.build_queue(dataset=noisy, **options)
    flipped = {clean.hashes()[i] for i in flips}
    assert {item.sha256 for item in queue[:2]} == flipped and all(item.score > 0.9 for item in queue[:2])
    assert {(item.source, item.given_label) for item in queue[:2]} == {("train/sad/face_000.png", "neutral"),
                                                                      ("train/neutral/face_002.png", "sad")}
    assert queue[0].original_label == queue[0].given_label  # what a correction records as the label it replaces
    from_disk = review.build_queue(**options)  # the folders still hold the clean labels: nothing stands out
    assert all(item.score < -0.9 for item in from_disk)


def test_an_in_memory_dataset_is_checked(tmp_path):
    faces = np.zeros((2, 48, 48), np.uint8)
    with pytest.raises(ValueError, match="dataset queue"):
        review.build_queue("flagged", dataset=FaceDataset(faces, np.zeros(2, np.int64), ["a", "b"], CLASS_NAMES),
                           labels_dir=tmp_path)
    strange = FaceDataset(faces, np.array([0, 1]), ["a", "b"], ("happy", "angry"))
    with pytest.raises(DataError, match="angry"):
        review.build_queue(dataset=strange, predictor=BrightnessPredictor([40, 95, 150, 200]), data_dir=tmp_path,
                           labels_dir=tmp_path, cache_dir=tmp_path, oos_path=tmp_path / "none.npz")


def test_doubt_score_is_the_margin_of_the_other_focus_class_over_the_given_one():
    happy, sad, neutral, surprise = (CLASS_NAMES.index(name) for name in ("happy", "sad", "neutral", "surprise"))
    probabilities = np.zeros((4, 4))
    probabilities[0, [happy, sad, neutral]] = [0.90, 0.05, 0.05]  # filed sad, reads happy
    probabilities[1, [happy, sad, neutral]] = [0.10, 0.30, 0.60]  # filed sad, reads neutral
    probabilities[2, [happy, sad, neutral]] = [0.20, 0.70, 0.10]  # filed happy, reads sad (in the queue for that)
    probabilities[3, [sad, neutral, surprise]] = [0.10, 0.20, 0.70]  # filed neutral, reads surprise
    given = np.array([sad, sad, happy, neutral])

    pair = review.doubt_scores(probabilities, given, ("sad", "neutral"))
    assert pair == pytest.approx([0.0, 0.3, 0.5, -0.1])
    assert np.argsort(-pair)[:2].tolist() == [2, 1]  # 1 - p(given) would put face 0 (0.95) before face 1 (0.7)
    assert review.doubt_scores(probabilities, given, None) == pytest.approx([0.85, 0.3, 0.5, 0.5])
    assert review.doubt_scores(probabilities, given, ("sad",)) == pytest.approx([0.85, 0.3, 0.5, -0.1])
    assert np.all(np.abs(review.doubt_scores(np.eye(4)[[0, 1, 2, 3]], np.array([1, 1, 1, 1]), None)) <= 1)


def test_out_of_fold_trains_on_an_in_memory_dataset(tmp_path):
    root = write_face_tree(tmp_path / "train", per_class=4)
    clean = load_faces(root)
    noisy = FaceDataset(clean.images, (clean.labels + 1) % len(CLASS_NAMES), clean.paths, clean.classes)
    out = review.out_of_fold(root, tmp_path / "oos.npz", folds=2, epochs=1, batch_size=8, dataset=noisy)
    with np.load(out) as stored:
        assert stored["labels"].tolist() == noisy.labels.tolist()  # trained on these labels, not the folders'
    assert sorted(review.read_out_of_fold(out).sha256.tolist()) == sorted(clean.hashes())


def test_oos_command_trains_fold_models_and_resumes(tmp_path, capsys):
    root = write_face_tree(tmp_path / "train", per_class=4)
    out = tmp_path / "cache" / "oos.npz"
    argv = ["oos", "--data", str(root), "--folds", "2", "--epochs", "1", "--batch-size", "8", "--out", str(out)]
    assert review.main(argv) == 0
    oos = review.read_out_of_fold(out)
    assert oos.probabilities.shape == (16, 4) and np.all(np.isfinite(oos.probabilities))
    assert np.allclose(oos.probabilities.sum(axis=1), 1, atol=1e-4)
    assert sorted(oos.sha256.tolist()) == sorted(load_faces(root).hashes())
    assert oos.config["folds_done"] == [0, 1] and oos.config["arch"] == "vgg_small" and oos.config["epochs"] == 1
    before = out.stat().st_mtime_ns
    assert review.main(argv) == 0  # every fold done: nothing retrained, nothing rewritten
    assert out.stat().st_mtime_ns == before
    dataset = load_faces(root)
    relabelled = dataclasses.replace(dataset, labels=np.roll(dataset.labels, 1))  # as corrections would change them
    review.out_of_fold(root, out, folds=2, epochs=1, batch_size=8, dataset=relabelled)
    assert out.stat().st_mtime_ns != before  # folds trained on the old labels were not reused
    assert review.main(["oos", "--data", str(root), "--folds", "1", "--out", str(out)]) == 2
    assert "folds must be at least 2" in capsys.readouterr().err


def test_fold_assignment_is_stratified_and_keeps_copies_together():
    shas = [f"{i:064x}" for i in range(40)] + [f"{0:064x}"]  # face 0 appears twice
    label_of = np.array([i % 2 for i in range(40)] + [1])
    folds = review.assign_folds(shas, label_of, 4, seed=0)
    assert folds[0] == folds[40]
    for label in (0, 1):
        assert sorted(np.bincount(folds[:40][label_of[:40] == label], minlength=4)) == [5, 5, 5, 5]


def test_unlabelled_folder_ranks_by_the_sad_neutral_margin(tmp_path):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    margins = {"even.png": (0.45, 0.45), "close.png": (0.40, 0.50), "sure.png": (0.95, 0.05), "happy.png": (0.0, 0.2)}
    table = {}
    for number, (name, (sad, neutral)) in enumerate(margins.items()):
        pixels = np.full((48, 48), 10 + number, np.uint8)
        Image.fromarray(pixels).save(folder / name)
        table[face_sha256(pixels)] = {"happy": 1 - sad - neutral, "sad": sad, "neutral": neutral, "surprise": 0.0}
    queue = review.build_queue("unlabelled", predictor=TablePredictor(table), folder=folder,
                               labels_dir=tmp_path / "labels", cache_dir=tmp_path / "cache")
    assert [item.source for item in queue] == ["unlabelled/even.png", "unlabelled/close.png", "unlabelled/happy.png",
                                               "unlabelled/sure.png"]
    assert queue[1].score == pytest.approx(0.9) and queue[1].probabilities["sad"] == pytest.approx(0.4)
    assert queue[0].given_label == "" and queue[0].original_label == "sad"
    with pytest.raises(DataError, match="No such folder"):
        review.build_queue("unlabelled", predictor=TablePredictor({}), folder=tmp_path / "missing")


def test_flagged_faces_queue_oldest_first_without_a_model(tmp_path):
    folder = tmp_path / "labels"
    first = labels.flag_for_review(np.full((48, 48), 1, np.uint8), [0.1, 0.5, 0.3, 0.1], "v1", "predict tab", folder)
    second = labels.flag_for_review(np.full((48, 48), 2, np.uint8), None, "v2", "predict tab", folder)
    queue = review.build_queue("flagged", labels_dir=folder)
    assert [item.sha256 for item in queue] == [first, second]
    assert queue[0].probabilities["sad"] == 0.5 and queue[0].model_version == "v1" and queue[0].queue == "flagged"
    assert np.array_equal(queue[1].face, np.full((48, 48), 2, np.uint8))


def test_other_reviewers_labels_are_shown_and_own_labels_skipped(flipped, tmp_path):
    root, predictor = flipped
    folder = tmp_path / "labels"
    options = dict(predictor=predictor, data_dir=root, labels_dir=folder, cache_dir=tmp_path / "cache",
                   oos_path=tmp_path / "x")
    top = review.build_queue(**options)[0]
    labels.add_correction(top.face, "sad", "ben", labels_dir=folder)
    assert review.build_queue(reviewer="ana", **options)[0].others == {"ben": "sad"}
    labels.add_correction(top.face, "neutral", "ana", labels_dir=folder)
    assert top.sha256 not in {item.sha256 for item in review.build_queue(reviewer="ana", **options)}
    again = review.build_queue(reviewer="ana", skip_reviewed=False, **options)
    assert again[0].sha256 == top.sha256 and again[0].others == {"ben": "sad"}
    assert len(review.build_queue(reviewer="ana", limit=2, **options)) == 2


def test_duplicate_faces_appear_once(flipped, tmp_path):
    root, predictor = flipped
    shutil.copy(root / "sad" / "face_002.png", root / "neutral" / "copy.png")
    queue = review.build_queue(predictor=predictor, data_dir=root, labels_dir=tmp_path / "l", cache_dir=tmp_path / "c",
                               oos_path=tmp_path / "x")
    assert len({item.sha256 for item in queue}) == len(queue)


def test_review_session_records_skips_and_undoes(flipped, tmp_path):
    root, predictor = flipped
    folder = tmp_path / "labels"
    items = review.build_queue(predictor=predictor, data_dir=root, labels_dir=folder, cache_dir=tmp_path / "cache",
                               oos_path=tmp_path / "x", limit=5)
    session = review.ReviewSession(items, "ana", labels_dir=folder)
    assert session.current is items[0] and session.describe_progress() == "1 of 5 · 0 labelled · 0 skipped"

    row = session.record("sad")
    assert (row["image_sha256"], row["original_label"], row["source"]) == (items[0].sha256, items[0].given_label,
                                                                            items[0].source)
    assert labels.parse_probabilities(row["model_probabilities"]) == pytest.approx(items[0].probabilities, abs=1e-6)
    assert session.skip() is items[2]
    session.record("neutral")
    assert session.progress() == {"position": 4, "total": 5, "labelled": 2, "skipped": 1}

    undone = session.undo()
    assert undone["image_sha256"] == items[2].sha256 and session.current is items[2]
    assert labels.resolve_labels(labels.read_corrections(folder).rows) == {items[0].sha256: "sad"}
    session.record("happy")
    assert session.current is items[3]
    session.record(labels.NOT_A_FACE)
    session.skip()
    assert session.finished and session.current is None and session.describe_progress() == "done: 3 labelled, 2 skipped of 5"
    with pytest.raises(labels.LabelsError):
        session.record("sad")
    assert session.back() is items[4]
