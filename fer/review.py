"""The review queue: which faces a reviewer should see first, and a session that records their decisions.

    python -m fer.review queue --source dataset --data ../shared/data/fer2013/train --limit 20
    python -m fer.review oos --data ../shared/data/fer2013/train --folds 5 --epochs 8 --out cache/oos.npz

Three queues, most doubtful face first (`build_queue(source=...)`):
  dataset     a labelled folder-per-class tree (default the training split), or a labelled FaceDataset in memory
              (`dataset=`), ranked by how much more the model believes another label than the given one:
              score = p(other) - p(given), `other` being the likeliest focus class that is not the given label (for
              sad/neutral: the other of the pair). By default only faces given or predicted sad or neutral.
              With annotators' votes (`votes=`, fer.votes; the served model's votes file in the app), the face's
              label is its consensus, faces from every folder take part, and disputed faces come first: those
              whose consensus differs from their folder or whose annotators split (no class has 70% of the votes),
              the ones the model reads as neither the consensus nor the folder first of all (`vote_scores`).
  flagged     faces visitors marked "this is wrong" on the Predict tab (labels/flagged.csv), oldest first, with the
              probabilities the model gave when they were flagged.
  unlabelled  a folder of face crops, ranked by how close sad and neutral are: score = 1 - |p(sad) - p(neutral)|.

The served model trained on the training faces, so it believes their labels more than it should and a mislabelled
face can hide. `oos` trains K small models, each on all folds but one, and saves every face's probabilities from the
model that did not see it (keyed by face SHA-256, with the settings that produced them). The dataset queue uses
those out-of-fold probabilities where the cache covers a face, and the served model's (marked in-sample) elsewhere;
those are cached under cache/review/, keyed by model version and a fingerprint of the faces.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from fer import labels
from fer.config import CLASS_NAMES, PROJECT_ROOT, PreprocessConfig
from fer.data import IMAGE_SUFFIXES, FaceDataset, load_face_files, load_faces
from fer.errors import DataError, FerError

logger = logging.getLogger(__name__)

QUEUE_SOURCES = ("dataset", "flagged", "unlabelled")
DEFAULT_FOCUS = ("sad", "neutral")  # the pair models confuse most: the dataset queue keeps faces given or predicted these
BATCH_SIZE = 256  # faces per forward pass when scoring a dataset
DEFAULT_OOS_PATH = PROJECT_ROOT / "cache" / "oos.npz"
DEFAULT_CACHE_DIR = PROJECT_ROOT / "cache"  # git-ignored


def default_data_dir() -> Path:
    """The training split: $FER_DATA_DIR/train, else ../shared/data/fer2013/train beside the project."""
    return Path(os.environ.get("FER_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data" / "fer2013") / "train"


@dataclasses.dataclass
class QueueItem:
    """One face to review, with everything the UI shows about it."""

    sha256: str
    face: np.ndarray  # (48, 48) uint8
    source: str  # "train/sad/im12.png", the flag's source, or a file in the unlabelled folder
    queue: str  # "dataset", "flagged" or "unlabelled"
    given_label: str  # the dataset folder's class; "" for flagged and unlabelled faces
    probabilities: dict[str, float]  # class -> p, in CLASS_NAMES order
    score: float  # higher: review sooner
    in_sample: bool  # the probabilities come from a model that trained on this face (optimistic about its label)
    model_version: str  # the model (or "out-of-fold ...") the probabilities came from
    others: dict[str, str]  # other reviewers' labels in force for this face: {reviewer: label}
    votes: str = ""  # the annotators' counts, "neutral 7 · sad 3"; "" without a votes file listing the face
    consensus_label: str = ""  # their majority label (fer.votes); "" for none among the classes, or no votes

    @property
    def predicted_label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def original_label(self) -> str:
        """What the face was labelled before review (the label rule, fer.votes): the annotators' consensus, else its
        dataset folder, else the model's prediction."""
        return self.consensus_label or self.given_label or self.predicted_label

    def to_dict(self) -> dict:
        """Everything but the pixels, JSON-ready."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "face"}
        return {**values, "predicted_label": self.predicted_label}


# ---------------------------------------------------------------------------------------------------- probabilities


def _fingerprint(shas: list[str]) -> str:
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()


def _column_order(predictor) -> list[int]:
    """Indices that put the predictor's output columns in CLASS_NAMES order."""
    classes = tuple(getattr(predictor, "classes", CLASS_NAMES))
    missing = [name for name in CLASS_NAMES if name not in classes]
    if missing:
        raise DataError(f"The model has no output for {', '.join(missing)}; review needs {', '.join(CLASS_NAMES)}.")
    return [classes.index(name) for name in CLASS_NAMES]


def predict_in_batches(predictor, faces: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 -> (N, C) float32 probabilities in CLASS_NAMES order, BATCH_SIZE faces per call."""
    order = _column_order(predictor)
    parts = [np.asarray(predictor.predict_faces(faces[start:start + BATCH_SIZE]))[:, order]
             for start in range(0, len(faces), BATCH_SIZE)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, len(CLASS_NAMES)), np.float32)


def _model_key(predictor) -> str:
    metadata = getattr(predictor, "metadata", None) or {}
    return f"{predictor.version}\n{metadata.get('created', '')}"  # a retrained model under the same name is new


def model_probabilities(predictor, faces: np.ndarray, shas: list[str], cache_dir: str | Path | None = None) -> np.ndarray:
    """The model's (N, C) probabilities for these faces, from cache_dir/review/*.npz when scored before.

    The cache file is named by a hash of the model version and the faces' fingerprint, never by user text.
    """
    fingerprint = _fingerprint(shas)
    key = hashlib.sha256(f"{_model_key(predictor)}\n{fingerprint}".encode()).hexdigest()[:24]
    path = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR) / "review" / f"probabilities-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                if str(cached["fingerprint"]) == fingerprint and cached["probabilities"].shape == (len(shas), len(CLASS_NAMES)):
                    return cached["probabilities"].astype(np.float32)
        except (OSError, ValueError, KeyError) as error:
            logger.warning("Ignoring the unreadable cache %s (%s)", path, error)
    probabilities = predict_in_batches(predictor, faces)
    try:
        _save_npz(path, fingerprint=np.array(fingerprint), version=np.array(str(predictor.version)),
                  probabilities=probabilities)
    except OSError as error:
        logger.warning("Could not cache probabilities in %s (%s)", path, error)
    return probabilities


def _save_npz(path: Path, **arrays) -> None:
    """np.savez through a temporary file and a rename, so a reader never sees half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclasses.dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold probabilities as `python -m fer.review oos` saves them."""

    sha256: np.ndarray  # (N,) str
    probabilities: np.ndarray  # (N, C) float32 in `classes` order; NaN rows for folds not yet trained
    config: dict  # arch, folds, epochs, seed, data, data_fingerprint, folds_done, created

    def lookup(self, shas: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found (M,) bool, probabilities (M, C)) for these hashes; rows not found are NaN."""
        index = {sha: row for row, sha in enumerate(self.sha256.tolist()) if np.all(np.isfinite(self.probabilities[row]))}
        rows = np.array([index.get(sha, -1) for sha in shas], dtype=np.int64)
        found = rows >= 0
        result = np.full((len(shas), len(CLASS_NAMES)), np.nan, dtype=np.float32)
        result[found] = self.probabilities[rows[found]]
        return found, result

    def describe(self) -> str:
        done = len(self.config.get("folds_done", []))
        return (f"out-of-fold {self.config.get('arch', '?')} ({done}/{self.config.get('folds', '?')} folds, "
                f"{self.config.get('epochs', '?')} epochs)")


def read_out_of_fold(path: str | Path) -> OutOfFold:
    """Load an `oos` cache; DataError if it is unreadable or its classes are not CLASS_NAMES."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            classes = tuple(stored["classes"].tolist())
            result = OutOfFold(stored["sha256"].astype(str), stored["probabilities"].astype(np.float32),
                               json.loads(str(stored["config"])))
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"Cannot read the out-of-fold cache {path} ({error}); run `python -m fer.review oos` again.") from None
    if classes != CLASS_NAMES:
        raise DataError(f"{path} holds classes {', '.join(classes)}, not {', '.join(CLASS_NAMES)}; run oos again.")
    return result


def save_out_of_fold(path: str | Path, shas: list[str], probabilities: np.ndarray, label_indices: np.ndarray,
                     folds: np.ndarray, config: dict) -> Path:
    """Write an `oos` cache (atomically): one row per face, NaN probabilities where its fold is not done yet."""
    path = Path(path)
    _save_npz(path, sha256=np.asarray(shas, dtype="<U64"), probabilities=np.asarray(probabilities, np.float32),
              labels=np.asarray(label_indices, np.int64), fold=np.asarray(folds, np.int16),
              classes=np.asarray(CLASS_NAMES), config=np.array(json.dumps(config)))
    return path


def _trained_on(predictor, data_dir: Path) -> bool:
    """Whether the model trained on `data_dir`; True when its JSON does not say (assume the optimistic case)."""
    train_dir = ((getattr(predictor, "metadata", None) or {}).get("data") or {}).get("train_dir")
    if not train_dir:
        return True
    try:
        return Path(train_dir).resolve() == data_dir.resolve()
    except OSError:
        return True


def load_votes(path: str | Path | None = None, predictor=None):
    """The votes the review queue uses: `path`, else $FER_VOTES_FILE, else the file the model was trained on
    (`fer.votes.default_for`); None when there is none or it is not there."""
    from fer.votes import default_for, read

    if path is None:
        path = os.environ.get("FER_VOTES_FILE") or default_for(getattr(predictor, "metadata", None) or {})
        if path is None:
            return None
        if not Path(path).is_file():
            logger.warning("The votes file %s is not here; the review queue uses the folder labels alone. Set "
                           "FER_VOTES_FILE to its location.", path)
            return None
    return read(path)


# ---------------------------------------------------------------------------------------------------- queues


def _load_predictor(predictor):
    if predictor is not None:
        return predictor
    from fer.predict import load_predictor

    return load_predictor()


def _probability_dicts(probabilities: np.ndarray) -> list[dict[str, float]]:
    return [{name: float(p) for name, p in zip(CLASS_NAMES, row)} for row in probabilities]


def doubt_scores(probabilities: np.ndarray, given: np.ndarray, focus: tuple[str, ...] | None) -> np.ndarray:
    """(N, C) probabilities in CLASS_NAMES order and (N,) given-label indices -> (N,) review priority, in [-1, 1].

    score = p(other) - p(given), where `other` is the likeliest class of `focus` that is not the given label (all
    classes when `focus` is None, or when the given label is its only class). With the sad/neutral focus that is the
    other class of the pair: a face labelled sad that the model reads as neutral comes first; one it reads as happy
    scores about 0, after the sad/neutral doubts but before every face whose label the model agrees with (about -1).

    Why this score: on 200 sad<->neutral flips injected into FER2013's training labels (benchmarks/retrain_loop.py;
    figures in benchmarks/README.md), its precision@K was 1.5 to 3 times that of 1 - p(given), the former score,
    in every queue (in-sample, out-of-fold, validation), and level with p(other) alone (whose AUC was lower).
    1 - p(given) also ranks high the many clean sad and neutral faces the model reads as happy or surprise.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    rows = np.arange(len(given))
    in_focus = np.array([focus is None or name in focus for name in CLASS_NAMES])
    candidates = np.repeat(in_focus[None], len(given), axis=0)  # (N, C) bool
    candidates[rows, given] = False
    lonely = ~candidates.any(axis=1)  # the given label is the only focus class: compare with every other class
    candidates[lonely] = True
    candidates[rows[lonely], given[lonely]] = False
    other = np.where(candidates, probabilities, -np.inf).max(axis=1)
    return other - probabilities[rows, given]


def vote_scores(probabilities: np.ndarray, folder: np.ndarray, counts: np.ndarray, listed: np.ndarray,
                focus: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """Review priority with annotators' votes, and each face's label by the rule (consensus, else folder; -1: none).

    (N, C) probabilities in CLASS_NAMES order, (N,) folder label indices (-1 for a folder that is not a class),
    (N, 10) vote counts and the (N,) mask of faces the votes list. A face is disputed when its consensus differs
    from its folder or its annotators split (`fer.votes.split_votes`). Disputed faces the model reads as neither
    the consensus nor the folder score 4 more, other disputed faces 2 more, than `doubt_scores` (in [-1, 1]) against
    the face's label, so they come first in that order, each tier most doubtful first.
    """
    from fer.votes import consensus, split_votes

    agreed = np.where(listed, consensus(counts), -1)
    label = np.where(listed, agreed, folder)
    predicted = np.asarray(probabilities).argmax(axis=1)
    reference = np.where(label >= 0, label, np.where(folder >= 0, folder, predicted))
    disputed = listed & ((agreed != folder) | split_votes(counts))
    apart = disputed & (predicted != agreed) & (predicted != folder)
    return doubt_scores(probabilities, reference, focus) + 2.0 * disputed + 2.0 * apart, label


def _dataset_items(predictor, data_dir: Path, focus, oos_path, cache_dir,
                   dataset: FaceDataset | None = None, votes=None) -> list[QueueItem]:
    from fer.data import folder_classes
    from fer.votes import format_counts

    if dataset is None:  # with votes, every folder: a face filed as angry may be sad to its annotators
        dataset = load_faces(data_dir, folder_classes(data_dir) if votes is not None else CLASS_NAMES)
    unknown = sorted(set(dataset.classes) - set(CLASS_NAMES))
    if unknown and votes is None:
        raise DataError(f"The dataset has classes {', '.join(unknown)} that review does not know; "
                        f"its classes must be among {', '.join(CLASS_NAMES)}.")
    shas = dataset.hashes()
    probabilities = np.full((len(dataset), len(CLASS_NAMES)), np.nan, dtype=np.float32)
    found = np.zeros(len(dataset), dtype=bool)
    oos_path = Path(oos_path) if oos_path is not None else DEFAULT_OOS_PATH
    oos_name = ""
    if oos_path.is_file():
        oos = read_out_of_fold(oos_path)
        found, probabilities = oos.lookup(shas)
        oos_name = oos.describe()
        logger.info("%d of %d faces have out-of-fold probabilities from %s", found.sum(), len(shas), oos_path)
    missing = np.flatnonzero(~found)
    if len(missing):
        probabilities[missing] = model_probabilities(predictor, dataset.images[missing], [shas[i] for i in missing],
                                                     cache_dir)
    in_sample_model = _trained_on(predictor, data_dir)
    folder_index = np.array([CLASS_NAMES.index(name) if name in CLASS_NAMES else -1 for name in dataset.classes])
    given_index = folder_index[dataset.labels]  # (N,) -1: a folder that is not a class (with votes only)
    if votes is None:
        counts, listed = np.zeros((len(dataset), 0), dtype=np.int64), np.zeros(len(dataset), dtype=bool)
        scores, label_index = doubt_scores(probabilities, given_index, focus), given_index  # (N,)
    else:
        counts, listed = votes.counts_for(dataset.paths)
        scores, label_index = vote_scores(probabilities, given_index, counts, listed, focus)
    items = []
    for index, sha in enumerate(shas):
        given = CLASS_NAMES[given_index[index]] if given_index[index] >= 0 else ""
        agreed = CLASS_NAMES[label_index[index]] if listed[index] and label_index[index] >= 0 else ""
        row = probabilities[index]
        predicted = CLASS_NAMES[int(np.argmax(row))]
        if focus and not {given, agreed, predicted} & set(focus):
            continue
        items.append(QueueItem(
            sha256=sha, face=dataset.images[index], source=_relative(dataset.paths[index], data_dir),
            queue="dataset", given_label=given, probabilities=_probability_dicts(row[None])[0],
            score=float(scores[index]),
            in_sample=bool(not found[index] and in_sample_model),
            model_version=oos_name if found[index] else str(predictor.version), others={},
            votes=format_counts(counts[index]) if listed[index] else "", consensus_label=agreed,
        ))
    return items


def _relative(path: str, root: Path) -> str:
    try:
        return f"{root.name}/{Path(path).relative_to(root).as_posix()}"
    except ValueError:
        return Path(path).name


def _flagged_items(labels_dir) -> list[QueueItem]:
    flagged = labels.read_flagged(labels_dir)
    for number, message in flagged.problems:
        logger.warning("%s line %d: %s", flagged.path, number, message)
    items = []
    for position, row in enumerate(flagged.rows):
        try:
            face = labels.load_saved_face(row["image_sha256"], labels_dir)
        except FerError as error:
            logger.warning("Skipping a flagged face: %s", error)
            continue
        probabilities = labels.parse_probabilities(row["model_probabilities"]) or {name: 0.0 for name in CLASS_NAMES}
        items.append(QueueItem(
            sha256=row["image_sha256"], face=face, source=row["source"], queue="flagged", given_label="",
            probabilities=probabilities, score=float(len(flagged.rows) - position),  # oldest first
            in_sample=False, model_version=row["model_version"], others={},
        ))
    return items


def _unlabelled_items(predictor, folder: Path, cache_dir) -> list[QueueItem]:
    if not folder.is_dir():
        raise DataError(f"No such folder of faces: {folder}")
    paths = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    dataset: FaceDataset = load_face_files(paths, [0] * len(paths), CLASS_NAMES, PreprocessConfig(), source=folder)
    shas = dataset.hashes()
    probabilities = model_probabilities(predictor, dataset.images, shas, cache_dir)
    sad, neutral = CLASS_NAMES.index("sad"), CLASS_NAMES.index("neutral")
    return [
        QueueItem(sha256=sha, face=dataset.images[index], source=_relative(dataset.paths[index], folder),
                  queue="unlabelled", given_label="", probabilities=_probability_dicts(probabilities[index][None])[0],
                  score=float(1.0 - abs(probabilities[index, sad] - probabilities[index, neutral])),
                  in_sample=False, model_version=str(predictor.version), others={})
        for index, sha in enumerate(shas)
    ]


def build_queue(source: str = "dataset", *, predictor=None, data_dir: str | Path | None = None,
                folder: str | Path | None = None, labels_dir: str | Path | None = None, reviewer: str | None = None,
                skip_reviewed: bool = True, focus: tuple[str, ...] | None = DEFAULT_FOCUS,
                oos_path: str | Path | None = None, cache_dir: str | Path | None = None,
                limit: int | None = None, dataset: FaceDataset | None = None, votes=None) -> list[QueueItem]:
    """The faces of one queue, highest score first, each face once.

    `source`: "dataset" (the folder-per-class tree `data_dir`, default `default_data_dir()`), "flagged" (the labels
    folder's flagged.csv) or "unlabelled" (every image under `folder`). With `dataset`, a labelled FaceDataset in
    memory (say, with corrections applied, or a benchmark's injected label noise), the dataset queue ranks its faces
    and labels instead of reading `data_dir`, which then only names the folder they came from (for each item's
    `source` and whether the model trained on them). `predictor` is anything with
    `predict_faces((N, S, S) uint8) -> (N, C)` and `version` (default: the served model; not needed for "flagged").
    `focus` keeps dataset faces given or predicted one of these classes (None: all). With `reviewer` and
    `skip_reviewed`, faces that reviewer has a label in force for are left out; `others` on each item holds the
    other reviewers' labels. `oos_path` defaults to DEFAULT_OOS_PATH, used when it exists. `votes` (a
    `fer.votes.Votes`) gives dataset faces their annotators' counts and consensus and ranks disputed faces first.
    """
    if source not in QUEUE_SOURCES:
        raise ValueError(f"Unknown queue {source!r}; choose one of {', '.join(QUEUE_SOURCES)}.")
    if dataset is not None and source != "dataset":
        raise ValueError(f"dataset= is ranked by the dataset queue; the {source} queue has its own faces.")
    focus = tuple(labels.check_label(name) for name in focus) if focus else None
    reviewer = labels.clean_reviewer(reviewer) if reviewer else None
    if source == "dataset":
        data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        items = _dataset_items(_load_predictor(predictor), data_dir, focus, oos_path, cache_dir, dataset, votes)
    elif source == "flagged":
        items = _flagged_items(labels_dir)
    else:
        if folder is None:
            raise ValueError("The unlabelled queue needs a folder of face images.")
        items = _unlabelled_items(_load_predictor(predictor), Path(folder), cache_dir)

    reviewed = labels.reviewer_labels(labels.read_corrections(labels.corrections_path(labels_dir)).rows)
    items.sort(key=lambda item: (-item.score, item.source))
    queue, seen = [], set()
    for item in items:
        if item.sha256 in seen:  # FER2013 holds duplicate faces, some in two class folders: show each face once
            continue
        seen.add(item.sha256)
        image_labels = reviewed.get(item.sha256, {})
        if reviewer and skip_reviewed and reviewer in image_labels:
            continue
        item.others = {name: label for name, label in image_labels.items() if name != reviewer}
        queue.append(item)
        if limit is not None and len(queue) >= limit:
            break
    return queue


# ---------------------------------------------------------------------------------------------------- session


class ReviewSession:
    """One reviewer's pass through a queue. Plain data, so the app can keep one per browser session in gr.State."""

    def __init__(self, items: list[QueueItem], reviewer: str, labels_dir: str | Path | None = None):
        self.items = list(items)
        self.reviewer = labels.clean_reviewer(reviewer)
        self.labels_dir = labels_dir
        self.position = 0
        self.decisions: dict[str, str] = {}  # sha256 -> label recorded in this session
        self.skipped: set[str] = set()
        self._skip_decided()

    @property
    def current(self) -> QueueItem | None:
        """The face to review now; None when the queue is done."""
        return self.items[self.position] if self.position < len(self.items) else None

    @property
    def finished(self) -> bool:
        return self.position >= len(self.items)

    def progress(self) -> dict:
        return {"position": min(self.position + 1, len(self.items)), "total": len(self.items),
                "labelled": len(self.decisions), "skipped": len(self.skipped - set(self.decisions))}

    def describe_progress(self) -> str:
        progress = self.progress()
        if self.finished:
            return f"done: {progress['labelled']} labelled, {progress['skipped']} skipped of {progress['total']}"
        return (f"{progress['position']} of {progress['total']} · {progress['labelled']} labelled · "
                f"{progress['skipped']} skipped")

    def _skip_decided(self) -> None:
        while self.position < len(self.items) and self.items[self.position].sha256 in self.decisions:
            self.position += 1

    def skip(self) -> QueueItem | None:
        """Leave the current face unlabelled and move on; returns the next face."""
        if self.current is not None:
            self.skipped.add(self.current.sha256)
            self.position += 1
            self._skip_decided()
        return self.current

    def back(self) -> QueueItem | None:
        """Go back one face (to look again or change the label)."""
        self.position = max(0, self.position - 1)
        return self.current

    def record(self, label: str) -> dict:
        """Save the reviewer's label for the current face (fer.labels.add_correction) and move on; returns the row."""
        item = self.current
        if item is None:
            raise labels.LabelsError("This queue is done; build a new one to review more faces.")
        row = labels.add_correction(item.face, label, self.reviewer, original_label=item.original_label,
                                    source=item.source, model_version=item.model_version,
                                    probabilities=item.probabilities, labels_dir=self.labels_dir)
        self.decisions[item.sha256] = row["corrected_label"]
        self.position += 1
        self._skip_decided()
        return row

    def undo(self) -> dict | None:
        """Retract the reviewer's latest label (fer.labels.undo_last); if that face is in this queue, go back to it."""
        row = labels.undo_last(self.reviewer, self.labels_dir)
        if row is None:
            return None
        self.decisions.pop(row["image_sha256"], None)
        for index, item in enumerate(self.items):
            if item.sha256 == row["image_sha256"]:
                self.position = index
                break
        return row


# ---------------------------------------------------------------------------------------------------- out of fold


def assign_folds(shas: list[str], label_indices: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) fold of each face, stratified by label; copies of one face (same hash) share a fold, so no model
    is scored on a face it trained on."""
    first_label: dict[str, int] = {}
    for sha, label in zip(shas, label_indices):
        first_label.setdefault(sha, int(label))
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    unique = list(first_label)
    for label in sorted(set(first_label.values())):
        members = [sha for sha in unique if first_label[sha] == label]
        for position, index in enumerate(rng.permutation(len(members))):
            fold_of[members[index]] = position % folds
    return np.array([fold_of[sha] for sha in shas], dtype=np.int16)


def out_of_fold(data_dir: str | Path, out: str | Path, *, folds: int = 5, epochs: int = 8, arch: str = "vgg_small",
                batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 1337,
                dataset: FaceDataset | None = None) -> Path:
    """Train `folds` models, each on all folds but one, and save each face's probabilities from the model that did
    not see it to `out` (after every fold, so an interrupted run resumes where it stopped).

    `dataset`, if given, is trained on and scored instead of reading `data_dir` (which then only names it)."""
    import keras

    from fer.model import build_model
    from fer.predict import Predictor
    from fer.train import TrainConfig, make_dataset

    if folds < 2:
        raise DataError("--folds must be at least 2.")
    if epochs < 1:
        raise DataError("--epochs must be at least 1.")
    data_dir, out = Path(data_dir), Path(out)
    if dataset is None:
        dataset = load_faces(data_dir)
    if tuple(dataset.classes) != CLASS_NAMES:
        raise DataError(f"Out-of-fold models learn {', '.join(CLASS_NAMES)} in that order; the dataset's classes are "
                        f"{', '.join(dataset.classes)}.")
    shas = dataset.hashes()
    fold = assign_folds(shas, dataset.labels, folds, seed)
    config = {"arch": arch, "folds": folds, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
              "seed": seed, "data": str(data_dir), "data_fingerprint": _fingerprint(shas),
              # the labels too: after corrections change them, folds trained on the old labels must not be reused
              "labels_fingerprint": _fingerprint([str(int(label)) for label in dataset.labels]), "faces": len(shas),
              "flip_average": True, "calibrated": False, "folds_done": []}
    probabilities = np.full((len(shas), len(CLASS_NAMES)), np.nan, dtype=np.float32)
    if out.is_file():
        previous = read_out_of_fold(out)
        # The same settings on the same faces (wherever the folder now lies): keep the folds already trained.
        varying = ("folds_done", "created", "data")
        if ({key: value for key, value in previous.config.items() if key not in varying}
                == {key: value for key, value in config.items() if key not in varying}):
            probabilities = previous.probabilities
            config["folds_done"] = list(previous.config.get("folds_done", []))
            logger.info("Resuming %s: folds %s already done", out, config["folds_done"])
        else:
            logger.warning("%s was made with other settings or data; starting over", out)
    metadata = {"name": f"oos-{arch}", "classes": list(CLASS_NAMES), "image_size": int(dataset.images.shape[1]),
                "preprocess": PreprocessConfig().to_dict(), "inference": {"flip_average": True, "temperature": 1.0}}
    for k in range(folds):
        if k in config["folds_done"]:
            continue
        train_config = TrainConfig(arch=arch, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                   seed=seed + k)
        keras.utils.set_random_seed(train_config.seed)
        model = build_model(arch, len(CLASS_NAMES), dataset.images.shape[1])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                      metrics=["accuracy"])
        held_out = fold == k
        logger.info("fold %d/%d: training on %d faces, scoring %d", k + 1, folds, int((~held_out).sum()), int(held_out.sum()))
        model.fit(make_dataset(dataset.images[~held_out], dataset.labels[~held_out], len(CLASS_NAMES), train_config, True),
                  epochs=epochs, shuffle=False, verbose=2)  # make_dataset shuffles
        predictor = Predictor(model, metadata)
        probabilities[held_out] = predict_in_batches(predictor, dataset.images[held_out])
        # A model stopped too early (seed_cnn and vgg_small after one epoch on FER2013) gives every face one class;
        # its probabilities then follow the given label, not the face, and the queue they rank is no better than chance.
        held_labels = dataset.labels[held_out]
        accuracy = float(np.mean(probabilities[held_out].argmax(axis=1) == held_labels))
        majority = float(np.bincount(held_labels, minlength=len(CLASS_NAMES)).max() / len(held_labels))
        logger.info("fold %d/%d: accuracy %.3f on its held-out faces (largest class %.3f)", k + 1, folds, accuracy,
                    majority)
        if accuracy <= majority:
            logger.warning("fold %d/%d model is no better than always answering the largest class (accuracy %.3f <= "
                           "%.3f): its out-of-fold ranking is close to chance; train more --epochs.", k + 1, folds,
                           accuracy, majority)
        config["folds_done"] = sorted(config["folds_done"] + [k])
        config["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        save_out_of_fold(out, shas, probabilities, dataset.labels, fold, config)
        keras.backend.clear_session()
    return out


# ---------------------------------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m fer.review", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    queue = commands.add_parser("queue", help="print the top of a review queue, one JSON line per face")
    queue.add_argument("--source", choices=QUEUE_SOURCES, default="dataset")
    queue.add_argument("--data", type=Path, default=None, help="folder-per-class tree (default: the training split)")
    queue.add_argument("--folder", type=Path, default=None, help="folder of unlabelled faces (--source unlabelled)")
    queue.add_argument("--labels-dir", type=Path, default=None)
    queue.add_argument("--reviewer", default=None, help="leave out faces this reviewer has labelled")
    queue.add_argument("--all-classes", action="store_true", help=f"not only faces given or predicted {' or '.join(DEFAULT_FOCUS)}")
    queue.add_argument("--model", default=None, help="a .keras file (default: the served model)")
    queue.add_argument("--oos", type=Path, default=None, help=f"out-of-fold cache (default {DEFAULT_OOS_PATH} if present)")
    queue.add_argument("--limit", type=int, default=20)
    queue.add_argument("--votes", type=Path, default=None,
                       help="annotators' votes file: show their counts, label faces by consensus, disputed faces "
                            "first (default: the model's votes file, if it was trained on one)")
    oos = commands.add_parser("oos", help="out-of-fold probabilities for every face of a folder-per-class tree")
    oos.add_argument("--data", type=Path, required=True, help="folder-per-class tree, e.g. ../shared/data/fer2013/train")
    oos.add_argument("--folds", type=int, default=5)
    oos.add_argument("--epochs", type=int, default=8)
    oos.add_argument("--out", type=Path, default=DEFAULT_OOS_PATH)
    oos.add_argument("--arch", default="vgg_small")
    oos.add_argument("--batch-size", type=int, default=64)
    oos.add_argument("--learning-rate", type=float, default=1e-3)
    oos.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "oos":
            from fer.model import ARCHITECTURES

            if args.arch not in ARCHITECTURES:
                raise DataError(f"Unknown --arch {args.arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}.")
            path = out_of_fold(args.data, args.out, folds=args.folds, epochs=args.epochs, arch=args.arch,
                               batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed)
            print(f"out-of-fold probabilities -> {path}")
            return 0
        predictor = None
        if args.source != "flagged":
            from fer.predict import load_predictor

            predictor = load_predictor(args.model)
        votes = load_votes(args.votes, predictor)
        items = build_queue(args.source, predictor=predictor, data_dir=args.data, folder=args.folder,
                            labels_dir=args.labels_dir, reviewer=args.reviewer,
                            focus=None if args.all_classes else DEFAULT_FOCUS, oos_path=args.oos, limit=args.limit,
                            votes=votes)
        for item in items:
            print(json.dumps(item.to_dict()))
    except (FerError, ValueError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
