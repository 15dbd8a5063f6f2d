"""Reviewers' corrections applied to a training set, matched to images by the SHA-256 of their 48x48 pixels.

A resolved correction (see `fer.labels.resolve_labels`) either relabels the training images with that hash,
removes them ("not_a_face"), or, when no training image has that hash, adds the reviewer's saved crop
`faces/<sha>.png` beside the corrections file. Corrections never touch the held-out set: an image whose hash is in
it is left out of training altogether and reported, so the gate that compares models on it stays fair.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np

from fer import labels
from fer.data import FaceDataset, load_face_files
from fer.errors import DataError
from fer.preprocess import face_sha256

logger = logging.getLogger(__name__)

_READ_ATTEMPTS = 3  # re-read when a reviewer appends while we hash and parse


@dataclasses.dataclass(frozen=True)
class Corrections:
    """A corrections file read at one moment: its hash, row count and the resolved label of each image hash."""

    path: Path
    sha256: str
    rows: int
    resolved: dict[str, str]


@dataclasses.dataclass(frozen=True)
class CorrectionSummary:
    """What applying corrections did to a training set; written into the new model's JSON."""

    file: str
    sha256: str
    rows: int
    resolved_images: int
    labels_changed: int  # training images whose label changed
    confirmed: int  # training images whose label the reviewers confirmed
    removed: int  # training images dropped as not a face
    added: int  # reviewers' crops that joined the training set
    held_out: list[str]  # hashes of corrected images in the held-out set, kept out of training
    not_found: int  # relabels matching no training image and no usable saved crop

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return (f"corrections {self.rows} rows ({self.resolved_images} images): {self.labels_changed} labels changed, "
                f"{self.removed} removed, {self.added} added, {self.confirmed} confirmed, "
                f"{len(self.held_out)} held out (in validation), {self.not_found} not found")


def read(path: str | Path) -> Corrections:
    """Read and resolve a corrections CSV (or a labels folder's) strictly; raise DataError naming a bad line."""
    path = Path(path)
    if path.is_dir():
        path = labels.corrections_path(path)
    if not path.is_file():
        raise DataError(f"No corrections file at {path}; reviewers' corrections are saved to labels/corrections.csv.")
    for _ in range(_READ_ATTEMPTS):
        before = _file_sha256(path)
        corrections_file = labels.read_corrections(path, strict=True)
        if _file_sha256(path) == before:
            resolved = labels.resolve_labels(corrections_file.rows)
            return Corrections(path, before, len(corrections_file.rows), dict(resolved))
    raise DataError(f"{path} kept changing while it was read; wait for reviewers to finish and try again.")


def apply(
    train: FaceDataset,
    corrections: Corrections,
    held_out_hashes: set[str] | frozenset[str] = frozenset(),
    faces_dir: str | Path | None = None,
) -> tuple[FaceDataset, CorrectionSummary]:
    """Return the corrected training set and a summary; `train` itself is not modified.

    `faces_dir` holds reviewers' crops named `<sha>.png` (default: `faces/` beside the corrections file). Labels must
    be one of `train.classes` or "not_a_face".
    """
    faces_dir = Path(faces_dir) if faces_dir is not None else corrections.path.parent / labels.FACES_DIR
    unknown = sorted(set(corrections.resolved.values()) - set(train.classes) - {labels.NOT_A_FACE})
    if unknown:
        raise DataError(f"{corrections.path} uses labels {', '.join(unknown)} that are not classes of this model "
                        f"({', '.join(train.classes)}); fix those rows.")
    held_out = sorted(sha for sha in corrections.resolved if sha in held_out_hashes)
    active = {sha: label for sha, label in corrections.resolved.items() if sha not in held_out_hashes}

    new_labels = train.labels.copy()
    # A reviewer's label overrides the annotators' vote distribution too (fer.votes: the label rule).
    new_targets = None if train.targets is None else train.targets.copy()
    keep = np.ones(len(train), dtype=bool)
    matched: set[str] = set()
    changed = confirmed = removed = 0
    for index, sha in enumerate(train.hashes()):
        if sha in held_out_hashes and sha in corrections.resolved:
            keep[index] = False  # a copy of a corrected held-out image: keep the gate's images out of training
            continue
        label = active.get(sha)
        if label is None:
            continue
        matched.add(sha)
        if label == labels.NOT_A_FACE:
            keep[index] = False
            removed += 1
            continue
        new_label = train.classes.index(label)
        if new_label == new_labels[index]:
            confirmed += 1
        else:
            new_labels[index] = new_label
            changed += 1
        if new_targets is not None:
            new_targets[index] = np.eye(len(train.classes), dtype=new_targets.dtype)[new_label]
    corrected = FaceDataset(train.images, new_labels, train.paths, train.classes, new_targets).subset(keep)

    extra = {sha: label for sha, label in active.items() if sha not in matched and label != labels.NOT_A_FACE}
    added_set, not_found = _saved_faces(extra, faces_dir, train.classes)
    if added_set is not None:
        corrected = FaceDataset.concatenate([corrected, added_set])
    summary = CorrectionSummary(
        file=str(corrections.path), sha256=corrections.sha256, rows=corrections.rows,
        resolved_images=len(corrections.resolved), labels_changed=changed, confirmed=confirmed, removed=removed,
        added=0 if added_set is None else len(added_set), held_out=held_out, not_found=not_found,
    )
    return corrected, summary


def _saved_faces(wanted: dict[str, str], faces_dir: Path, classes: tuple[str, ...]) -> tuple[FaceDataset | None, int]:
    """Reviewers' crops for `wanted` hashes, checked against their names; returns (dataset or None, how many missing)."""
    paths = [faces_dir / f"{sha}.png" for sha in wanted if (faces_dir / f"{sha}.png").is_file()]
    if not paths:
        return None, len(wanted)
    found = load_face_files(paths, [classes.index(wanted[path.stem]) for path in paths], classes, source=faces_dir)
    # A crop whose pixels no longer hash to its name is not the image the reviewer labelled.
    matches = np.asarray([face_sha256(face) == Path(path).stem for face, path in zip(found.images, found.paths)])
    for path in np.asarray(found.paths)[~matches]:
        logger.warning("Skipping %s: its pixels do not match its name", path)
    found = found.subset(matches)
    return (found if len(found) else None), len(wanted) - len(found)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
