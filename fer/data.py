"""Folder-per-class face datasets as NumPy arrays.

Two layouts are read: FER2013's (`train/`, `validation/`, seven class folders) and the study's (`train/`,
`validation/`, `test/`, four class folders). Class folders are matched by name against the class list, never by
sort order; other folders are ignored. Every image goes through `fer.preprocess.preprocess_face`.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fer.config import CLASS_NAMES, PreprocessConfig
from fer.errors import DataError, ImageError
from fer.images import load_image
from fer.preprocess import face_sha256, preprocess_face

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
SPLIT_NAMES = {"train": ("train", "training"), "validation": ("validation", "val", "valid"), "test": ("test",)}


@dataclasses.dataclass
class FaceDataset:
    """Faces (N, S, S) uint8, integer labels (N,) indexing `classes`, and where each face came from.

    `targets` (N, C) float32, when set, are training targets other than the one-hot labels: the annotators' vote
    distribution over `classes` (`fer.votes.label_faces`). `labels` is then each face's hard label (the consensus).
    """

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    classes: tuple[str, ...]
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def target_matrix(self) -> np.ndarray:
        """(N, C) float32 training targets: `targets` when set, else the one-hot labels."""
        if self.targets is not None:
            return self.targets.astype(np.float32)
        return np.eye(len(self.classes), dtype=np.float32)[self.labels]

    def counts(self) -> dict[str, int]:
        return {name: int(np.sum(self.labels == index)) for index, name in enumerate(self.classes)}

    def hashes(self) -> list[str]:
        """SHA-256 of each face's pixels: the key that corrections in labels/ refer to."""
        return [face_sha256(face) for face in self.images]

    def subset(self, keep: np.ndarray) -> "FaceDataset":
        keep = np.asarray(keep)
        indices = np.flatnonzero(keep) if keep.dtype == bool else keep
        targets = None if self.targets is None else self.targets[indices]
        return FaceDataset(self.images[indices], self.labels[indices], [self.paths[i] for i in indices], self.classes,
                           targets)

    @staticmethod
    def concatenate(parts: list["FaceDataset"]) -> "FaceDataset":
        classes = parts[0].classes
        if any(part.classes != classes for part in parts):
            raise DataError("Cannot join datasets with different class lists.")
        soft = any(part.targets is not None for part in parts)  # one soft part: every part's targets are kept
        return FaceDataset(
            np.concatenate([part.images for part in parts]),
            np.concatenate([part.labels for part in parts]),
            [path for part in parts for path in part.paths],
            classes,
            np.concatenate([part.target_matrix() for part in parts]) if soft else None,
        )


def find_split(root: str | Path, split: str) -> Path:
    """Return the folder of `split` ('train', 'validation' or 'test') under a dataset root, or raise DataError."""
    root = Path(root)
    for name in SPLIT_NAMES[split]:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root} has no {split!r} folder (looked for {', '.join(SPLIT_NAMES[split])}).")


def folder_classes(directory: str | Path) -> tuple[str, ...]:
    """The class folders under `directory` (lower case, sorted): every subfolder, e.g. FER2013's seven. With votes
    (`fer.votes`), faces in any folder may have one of the served classes as their label."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"No such dataset folder: {directory}")
    return tuple(sorted(child.name.lower() for child in directory.iterdir() if child.is_dir()))


def list_images(directory: str | Path, classes: tuple[str, ...] = CLASS_NAMES) -> tuple[list[Path], list[int]]:
    """Image files under `directory/<class>/` for each known class, with their class indices, in a stable order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"No such dataset folder: {directory}")
    present = {child.name.lower(): child for child in directory.iterdir() if child.is_dir()}
    found = [name for name in classes if name in present]
    if not found:
        raise DataError(
            f"{directory} has none of the class folders {', '.join(classes)} "
            f"(found: {', '.join(sorted(present)) or 'no folders'}). Point --data at a folder-per-class tree."
        )
    paths, labels = [], []
    for index, name in enumerate(classes):
        if name not in present:
            continue
        for path in sorted(present[name].rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(index)
    if not paths:
        raise DataError(f"{directory} has class folders ({', '.join(found)}) but no images in them.")
    return paths, labels


def load_faces(
    directory: str | Path,
    classes: tuple[str, ...] = CLASS_NAMES,
    config: PreprocessConfig = PreprocessConfig(),
    skip_unreadable: bool = True,
) -> FaceDataset:
    """Read every image under `directory/<class>/` as a face crop (no detection) into a FaceDataset."""
    paths, labels = list_images(directory, classes)
    return load_face_files(paths, labels, classes, config, skip_unreadable, source=directory)


def load_face_files(
    paths: list[Path],
    labels: list[int],
    classes: tuple[str, ...] = CLASS_NAMES,
    config: PreprocessConfig = PreprocessConfig(),
    skip_unreadable: bool = True,
    source: str | Path | None = None,
) -> FaceDataset:
    """Read the given face-crop files, labelled by index into `classes`, into a FaceDataset (in the given order).

    Unreadable files are skipped with a warning (or raise ImageError when `skip_unreadable` is False); when none
    is readable, DataError names `source`.
    """

    def read(path: Path) -> np.ndarray | None:
        try:
            return preprocess_face(load_image(path), None, config)
        except ImageError as error:
            if not skip_unreadable:
                raise
            logger.warning("Skipping %s: %s", path, error)
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        faces = list(pool.map(read, paths))
    keep = [i for i, face in enumerate(faces) if face is not None]
    if not keep:
        raise DataError(f"No readable images under {source or 'the given files'}.")
    images = np.stack([faces[i] for i in keep]).astype(np.uint8)  # (N, S, S) uint8
    return FaceDataset(images, np.asarray([labels[i] for i in keep], dtype=np.int64), [str(paths[i]) for i in keep], classes)


# A packed dataset: both splits of a dataset root, already through preprocess_face, in one compressed .npz, so
# training can run where the folders are not (a lent GPU machine; see docs/gpu_training.md). It is a copy of the
# data: keep it in a git-ignored folder (runs/), never in the repository.
PACKED_SPLITS = ("train", "validation")


def pack(root: str | Path, path: str | Path, classes: tuple[str, ...] = CLASS_NAMES,
         config: PreprocessConfig = PreprocessConfig()) -> Path:
    """Write `root`'s train and validation faces of `classes` (those with a folder) to the .npz file `path`.

    FER2013's four served classes take 47 MiB (48x48 photos barely compress); its seven, 66 MiB.
    """
    root, path = Path(root), Path(path)
    if path.suffix != ".npz":
        raise DataError(f"A packed dataset is an .npz file; got {path}.")
    arrays: dict[str, np.ndarray] = {}
    for split in PACKED_SPLITS:
        folder = find_split(root, split)
        present = {child.name.lower() for child in folder.iterdir() if child.is_dir()}
        dataset = load_faces(folder, tuple(name for name in classes if name in present), config)
        arrays.update({f"{split}_images": dataset.images, f"{split}_labels": dataset.labels,
                       f"{split}_classes": np.array(dataset.classes), f"{split}_paths": np.array(dataset.paths),
                       f"{split}_dir": np.array(str(folder))})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, image_size=np.array(config.image_size), **arrays)
    return path


def is_packed(data: str | Path) -> bool:
    return Path(data).suffix == ".npz"


def packed_classes(path: str | Path, split: str) -> tuple[str, ...]:
    """The classes whose `split` faces an .npz from `pack` holds."""
    try:
        with np.load(path, allow_pickle=False) as packed:
            return tuple(str(name) for name in packed[f"{split}_classes"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a packed dataset with a {split!r} split ({error}); "
                        "write it again with `python -m fer.data --pack`.") from None


def load_packed(path: str | Path, split: str, classes: tuple[str, ...] = CLASS_NAMES,
                config: PreprocessConfig = PreprocessConfig()) -> tuple[FaceDataset, str]:
    """The `split` faces of the classes named, from a file `pack` wrote, and the folder they were packed from."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No packed dataset at {path}; write one with `python -m fer.data --pack DATA_ROOT {path}`.")
    try:
        with np.load(path, allow_pickle=False) as packed:
            size = int(packed["image_size"])
            images, labels = packed[f"{split}_images"], packed[f"{split}_labels"]
            packed_classes = [str(name) for name in packed[f"{split}_classes"]]
            paths, folder = [str(p) for p in packed[f"{split}_paths"]], str(packed[f"{split}_dir"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # a truncated copy, say
        raise DataError(f"{path} is not a packed dataset with a {split!r} split ({error}); "
                        "write it again with `python -m fer.data --pack`.") from None
    if size != config.image_size:
        raise DataError(f"{path} holds {size}-pixel faces; this model takes {config.image_size}. Pack it again.")
    missing = [name for name in classes if name not in packed_classes]
    if missing:
        raise DataError(f"{path} has no {split} faces of {', '.join(missing)} (it has {', '.join(packed_classes)}).")
    # Labels re-indexed by class name into `classes`; faces of other classes are left out.
    index = np.array([classes.index(name) if name in classes else -1 for name in packed_classes])
    new_labels = index[labels]
    keep = np.flatnonzero(new_labels >= 0)
    return FaceDataset(images[keep], new_labels[keep].astype(np.int64), [paths[i] for i in keep], classes), folder


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m fer.data",
                                     description="Pack a dataset root's train and validation faces into one .npz "
                                                 "that `fer.train --data` reads (for training on another machine).")
    parser.add_argument("--pack", nargs=2, metavar=("DATA_ROOT", "OUT.npz"), required=True)
    parser.add_argument("--classes", nargs="+", default=list(CLASS_NAMES), metavar="CLASS",
                        help=f"class folders to pack (default: {' '.join(CLASS_NAMES)}; add e.g. angry fear disgust "
                             "for fer.train --extra-classes)")
    args = parser.parse_args(argv)
    try:
        path = pack(*args.pack, classes=tuple(name.lower() for name in args.classes))
    except (DataError, ImageError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    with np.load(path, allow_pickle=False) as packed:
        counts = {split: len(packed[f"{split}_labels"]) for split in PACKED_SPLITS}
    print(f"{path}: {counts['train']} training and {counts['validation']} validation faces, "
          f"{path.stat().st_size / 2**20:.1f} MiB. It is a copy of the data: never commit it.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
