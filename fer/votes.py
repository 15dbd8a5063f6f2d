"""Annotators' votes (the FERPlus CSV format), and the one rule that gives a face its label from its sources.

    python -m fer.votes ../shared/data/fer2013/ferplus_votes.csv --data ../shared/data/fer2013/validation

A votes file has one row per face: `path`, relative to the dataset root (`train/sad/Training_00001.png`), the folder
label `fer2013_label`, and vote counts for neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
unknown and NF (not a face): FERPlus's ten crowd annotators for every FER2013 face (Barsoum et al., ICMI 2016).
A face is matched to its row by the last parts of its path (`train/sad/Training_00001.png`), so the same file serves
the folders, a packed copy of them, and the app's review queue.

**The label rule** (`label_faces`, used by fer.train, fer.evaluate, fer.gate, fer.calibrate and the review queue).
A face's label is the first of these that gives one:
1. **Reviewers' corrections** (`fer.labels`, resolved among reviewers by majority): a correction overrides the
   votes and the folder; `not_a_face` removes the face. A reviewer is deliberate about one face, and an extra
   vote could not fix what the crowd got wrong: one more vote for another class changes the consensus of 5.9% of
   FER2013's validation faces and 8.0% of its training faces (`python -m fer.votes VOTES --data SPLIT` prints it),
   so more than nine in ten corrections would count for nothing.
2. **Annotators' votes**: the consensus (`consensus`, FERPlus's majority rule: a class with a single vote counts 0,
   then the class with more than half of the remaining votes, unknown and not-a-face included). A face with votes
   and no consensus among the served classes has no label and is left out, whatever its folder says. Training
   targets are then that consensus (`targets="majority"`) or the faces' vote distribution over the served classes
   (`targets="distribution"`, `distribution`): a face with 6 sad and 4 neutral votes is 60% sad.
3. **Its folder**, for a face the votes file does not list.

"Clear" faces are those where at least `CLEAR_SHARE` of all annotators chose the class (`agreement`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import os
import sys
from pathlib import Path, PurePath

import numpy as np

from fer.config import CLASS_NAMES, PROJECT_ROOT
from fer.data import FaceDataset
from fer.errors import DataError

VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
# Our class (folder) names for FERPlus's vote columns; unknown and NF are no class.
COLUMN_CLASSES = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
                  "anger": "angry", "disgust": "disgust", "fear": "fear", "contempt": "contempt",
                  "unknown": "unknown", "NF": "not a face"}
CLEAR_SHARE = 0.7  # a "clear" face: at least this share of all its annotators chose the class
TARGETS = ("majority", "distribution")
MAX_VOTES = 100  # per class and face: more is not an annotator count


@dataclasses.dataclass(frozen=True)
class Votes:
    """A votes file as read: counts (R, 10) int in VOTE_COLUMNS order, the row of each face key, the file's hash and
    (line, message) for each malformed line (the header is line 1)."""

    path: Path
    sha256: str
    counts: np.ndarray
    rows: dict[str, int]
    depth: int  # parts in each `path` (3: split/class/file)
    problems: list[tuple[int, str]]

    def __len__(self) -> int:
        return len(self.counts)

    def lookup(self, paths) -> np.ndarray:
        """(N,) row index of each face path in `counts`, -1 for a face the file does not list."""
        return np.fromiter((self.rows.get(face_key(path, self.depth), -1) for path in paths), dtype=np.int64,
                           count=len(paths))

    def counts_for(self, paths) -> tuple[np.ndarray, np.ndarray]:
        """(N, 10) vote counts of each face path (zeros where unlisted) and the (N,) mask of listed faces."""
        rows = self.lookup(paths)
        counts = np.zeros((len(rows), len(VOTE_COLUMNS)), dtype=np.int64)
        listed = rows >= 0
        counts[listed] = self.counts[rows[listed]]
        return counts, listed

    def describe(self) -> dict:
        """For a model's JSON: which file, which version of it."""
        return {"file": str(self.path), "sha256": self.sha256, "faces": len(self)}


def trained_on(metadata: dict) -> str | None:
    """The votes file a model was trained on (its JSON's `data.votes.file`), or None for folder labels."""
    return ((metadata.get("data") or {}).get("votes") or {}).get("file")


def default_for(metadata: dict) -> Path | None:
    """Where the votes a model was trained on are now, for fine-tuning it and judging it: $FER_VOTES_FILE (their
    copy on this machine), else the recorded path (relative paths from the working folder, else the project root,
    where fer.train ran). None for a model trained on folder labels."""
    recorded = trained_on(metadata)
    if recorded is None:
        return None
    if os.environ.get("FER_VOTES_FILE"):
        return Path(os.environ["FER_VOTES_FILE"])
    path = Path(recorded)
    if not path.is_absolute() and not path.is_file() and (PROJECT_ROOT / path).is_file():
        return PROJECT_ROOT / path
    return path


def face_key(path, depth: int = 3) -> str:
    """The last `depth` parts of a face's path, lower case: `train/sad/training_00001.png`."""
    return "/".join(PurePath(str(path).replace("\\", "/")).parts[-depth:]).lower()


def read(path: str | Path, strict: bool = False) -> Votes:
    """Read a votes CSV. Malformed rows (a wrong column count, a count that is not a whole number from 0 to 100, a
    face listed twice) are skipped and reported in `problems`; `strict=True` raises DataError at the first, naming
    its line. A missing file or header raises DataError saying what the file must hold."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No votes file at {path}; pass --votes with a CSV of annotators' votes "
                        f"(columns path, fer2013_label, {', '.join(VOTE_COLUMNS)}; see fer/votes.py).")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; a votes file is a CSV.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    missing = [] if header is None else [name for name in ("path", *VOTE_COLUMNS) if name not in header]
    if header is None or missing:
        raise DataError(f"{path} is not a votes file: its header lacks {', '.join(missing or ['everything'])} "
                        f"(expected path, fer2013_label, {', '.join(VOTE_COLUMNS)}).")
    path_column, vote_columns = header.index("path"), [header.index(name) for name in VOTE_COLUMNS]
    counts, rows, problems, depths = [], {}, [], set()
    for line, row in enumerate(reader, start=2):
        problem = None
        if not row:
            continue
        if len(row) != len(header):
            problem = f"has {len(row)} fields, expected {len(header)}"
        else:
            try:
                values = [int(row[column]) for column in vote_columns]
            except ValueError:
                problem = "has a vote count that is not a whole number"
            else:
                if any(not 0 <= value <= MAX_VOTES for value in values):
                    problem = f"has a vote count outside 0-{MAX_VOTES}"
                elif not row[path_column].strip():
                    problem = "has no path"
        if problem is None:
            depth = len(PurePath(row[path_column].strip().replace("\\", "/")).parts)
            key = face_key(row[path_column].strip(), depth)
            if key in rows:
                problem = f"lists {row[path_column]} again (first on an earlier line)"
        if problem is not None:
            if strict:
                raise DataError(f"{path}, line {line}: {problem}; fix or delete that row.")
            problems.append((line, problem))
            continue
        depths.add(depth)
        rows[key] = len(counts)
        counts.append(values)
    if not counts:
        raise DataError(f"{path} has no usable rows of votes.")
    if len(depths) > 1:
        raise DataError(f"{path}: paths have different depths ({sorted(depths)}); give every path as "
                        "split/class/file relative to the dataset root.")
    return Votes(path, hashlib.sha256(data).hexdigest(), np.asarray(counts, dtype=np.int64), rows, depths.pop(),
                 problems)


def _class_columns(classes) -> list[int]:
    """Each class's column in VOTE_COLUMNS; DataError for a class the annotators could not choose."""
    by_class = {name: index for index, name in enumerate(COLUMN_CLASSES[column] for column in VOTE_COLUMNS)}
    unknown = [name for name in classes if name not in by_class]
    if unknown:
        raise DataError(f"The votes have no column for {', '.join(unknown)}; they cover "
                        f"{', '.join(COLUMN_CLASSES[column] for column in VOTE_COLUMNS[:8])}.")
    return [by_class[name] for name in classes]


def _without_outliers(counts: np.ndarray) -> np.ndarray:
    """FERPlus's outlier rule: a class with a single vote counts 0."""
    counts = np.asarray(counts)
    return np.where(counts <= 1, 0, counts)


def consensus(counts: np.ndarray, classes=CLASS_NAMES) -> np.ndarray:
    """(N,) index into `classes` of each face's majority label, -1 where there is none among them.

    FERPlus's rule on (N, 10) counts: drop outlier votes, then the column with more than half of the remaining
    votes (unknown and not-a-face count among them), if that column is one of `classes`.
    """
    kept = _without_outliers(counts)
    top = kept.argmax(axis=1)
    majority = 2 * kept.max(axis=1) > kept.sum(axis=1)
    index_of = np.full(len(VOTE_COLUMNS), -1)
    index_of[_class_columns(classes)] = np.arange(len(classes))
    return np.where(majority, index_of[top], -1)


def distribution(counts: np.ndarray, classes=CLASS_NAMES) -> np.ndarray:
    """(N, C) float32: each face's votes for `classes`, outliers dropped, as shares of their sum (zeros where the
    face has no such votes). A face with 6 sad, 3 neutral and 1 happy vote is sad 0.67, neutral 0.33."""
    kept = _without_outliers(counts)[:, _class_columns(classes)].astype(np.float32)
    total = kept.sum(axis=1, keepdims=True)
    return np.divide(kept, total, out=np.zeros_like(kept), where=total > 0)


def agreement(counts: np.ndarray, classes=CLASS_NAMES) -> np.ndarray:
    """(N, C) float: the share of all of a face's annotators (unknown and not-a-face included) who chose each class."""
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=1, keepdims=True)
    return np.divide(counts[:, _class_columns(classes)], total, out=np.zeros((len(counts), len(classes))),
                     where=total > 0)


def format_counts(counts) -> str:
    """One face's votes as people read them, largest first: "neutral 7 · sad 3" ("" for no votes)."""
    pairs = sorted(((int(count), COLUMN_CLASSES[column]) for column, count in zip(VOTE_COLUMNS, counts) if count),
                   key=lambda pair: -pair[0])
    return " · ".join(f"{name} {count}" for count, name in pairs)


def split_votes(counts: np.ndarray) -> np.ndarray:
    """(N,) bool: the annotators split (no class holds CLEAR_SHARE of the votes)."""
    counts = np.asarray(counts, dtype=float)
    total = np.maximum(counts.sum(axis=1), 1)
    return counts.max(axis=1) / total < CLEAR_SHARE


def label_faces(dataset: FaceDataset, classes: tuple[str, ...] = CLASS_NAMES, votes: Votes | None = None,
                targets: str = "majority", corrections=None, held_out: set[str] | frozenset[str] = frozenset(),
                ) -> tuple[FaceDataset, dict]:
    """`dataset` (folder labels indexing its own classes, e.g. FER2013's seven folders) labelled by the rule in this
    module's docstring, in `classes`; faces left without a label are dropped. Returns the labelled set and a summary
    for the model's JSON.

    `targets="distribution"` sets the returned set's `targets` to each voted face's vote distribution (one-hot for
    faces labelled by their folder or by a reviewer). `corrections` (a `fer.corrections.Corrections`) are applied
    last, as `fer.corrections.apply` does, keeping corrected faces in `held_out` (hashes) out of the set.
    """
    from fer import corrections as fer_corrections

    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {', '.join(TARGETS)}; got {targets!r}.")
    folder_index = np.array([classes.index(name) if name in classes else -1 for name in dataset.classes])
    folder = folder_index[dataset.labels] if len(dataset) else np.zeros(0, dtype=np.int64)
    labels, soft = folder.copy(), None
    summary: dict = {"faces": len(dataset)}
    if votes is not None:
        counts, listed = votes.counts_for(dataset.paths)
        agreed = consensus(counts[listed], classes)
        labels[listed] = agreed
        summary.update({
            "votes": votes.describe(), "targets": targets, "with_votes": int(listed.sum()),
            "consensus_differs_from_folder": int(np.sum(agreed != folder[listed])),
            "no_consensus_left_out": int(np.sum(agreed < 0)),
        })
        if targets == "distribution":
            soft = np.eye(len(classes), dtype=np.float32)[np.maximum(labels, 0)]
            soft[listed] = distribution(counts[listed], classes)
    summary["folder_only"] = int(len(dataset) - summary.get("with_votes", 0))
    keep = labels >= 0
    summary["left_out"] = int(np.sum(~keep))
    labelled = FaceDataset(dataset.images, labels, dataset.paths, tuple(classes), soft).subset(keep)
    if corrections is not None:
        labelled, applied = fer_corrections.apply(labelled, corrections, held_out)
        summary["corrections"] = applied.to_dict()
    summary["counts"] = labelled.counts()
    return labelled, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.votes",
                                     description="Check a votes file and summarise what it says of a folder of faces.")
    parser.add_argument("votes", help="a votes CSV (../shared/data/fer2013/ferplus_votes.csv)")
    parser.add_argument("--data", help="a split folder of class folders (e.g. ../shared/data/fer2013/validation)")
    args = parser.parse_args(argv)
    from fer.data import folder_classes, list_images

    try:
        votes = read(args.votes)
        print(f"{votes.path}: {len(votes)} faces, {len(votes.problems)} malformed rows")
        for line, problem in votes.problems[:20]:
            print(f"  line {line}: {problem}")
        if args.data:
            paths, folder_labels = list_images(args.data, folder_classes(args.data))
            counts, listed = votes.counts_for(paths)
            counts = counts[listed]
            agreed = consensus(counts)
            print(f"{args.data}: {len(paths)} faces, {int(listed.sum())} with votes, {int(np.sum(agreed >= 0))} with a "
                  f"consensus among {', '.join(CLASS_NAMES)}")
            for index, name in enumerate(CLASS_NAMES):
                clear = int(np.sum(agreement(counts)[:, index] >= CLEAR_SHARE))
                print(f"  {name:<9} consensus {int(np.sum(agreed == index)):>6}   clear (>= {CLEAR_SHARE:.0%} agree) {clear:>6}")
            print(f"  one more vote for another class changes the consensus of "
                  f"{one_vote_changes(counts):.1%} of them (why a reviewer's label overrides instead)")
            human = one_annotator(counts)
            print(f"  one annotator against the others' consensus (a human baseline): accuracy {human['accuracy']:.1%}, "
                  "F1 " + ", ".join(f"{name} {value:.3f}" for name, value in human["f1"].items()))
    except DataError as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    return 0


def one_vote_changes(counts: np.ndarray, classes=CLASS_NAMES) -> float:
    """Share of faces with a consensus among `classes` whose consensus one extra vote for some other class of
    `classes` would change (to another label or to none): how much a reviewer's label counted as a vote could do."""
    before = consensus(counts, classes)
    voted = counts[before >= 0]
    changed = np.zeros(len(voted), dtype=bool)
    for column in _class_columns(classes):
        extra = voted.copy()
        extra[:, column] += 1
        after = consensus(extra, classes)
        changed |= (after != before[before >= 0]) & (np.asarray(_class_columns(classes))[before[before >= 0]] != column)
    return float(changed.mean()) if len(voted) else 0.0


def one_annotator(counts: np.ndarray, classes=CLASS_NAMES) -> dict:
    """How one annotator, picked at random, scores against the consensus of the same face's other annotators: a
    human baseline for a model's consensus figures. Over the faces with a consensus among `classes`, each face
    weighing one, shared among its annotators; an annotator whose face the others leave without a consensus is
    skipped. Returns accuracy, per-class F1 (`{class: f1}`) and the expected confusion matrix (rows: the others'
    consensus; columns: `classes`, then "other" for a vote outside them)."""
    counts = np.asarray(counts, dtype=np.int64)
    counts = counts[consensus(counts, classes) >= 0]
    n = len(classes)
    chosen = np.full(len(VOTE_COLUMNS), n)  # the annotator's vote, as a column of the confusion matrix
    chosen[_class_columns(classes)] = np.arange(n)
    total = np.maximum(counts.sum(axis=1), 1)
    confusion = np.zeros((n, n + 1))
    for column in range(len(VOTE_COLUMNS)):
        voted = counts[:, column] > 0
        others = counts[voted].copy()
        others[:, column] -= 1
        agreed = consensus(others, classes)
        kept = agreed >= 0
        np.add.at(confusion, (agreed[kept], chosen[column]), (counts[voted, column] / total[voted])[kept])
    f1 = {}
    for index, name in enumerate(classes):
        found, relevant = confusion[:n, index].sum(), confusion[index].sum()
        f1[name] = float(2 * confusion[index, index] / (found + relevant)) if found + relevant else 0.0
    return {"accuracy": float(np.trace(confusion[:, :n]) / confusion.sum()) if confusion.sum() else 0.0,
            "f1": f1, "confusion": confusion.tolist(), "faces": int(len(counts))}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
