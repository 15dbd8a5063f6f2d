"""Many photos at once: folders searched recursively, one CSV row per face (`python -m fer.predict DIR --csv OUT`).

    paths, ignored = image_files(["photos/", "extra.jpg"])     # folders walked in sorted order; files as given
    summary = write_csv(predictor, paths, "faces.csv", on_skip=print)

A file that cannot be read is reported through `on_skip` with the reason and skipped; the batch goes on. The CSV's
columns are `file, face, x, y, w, h, <classes...>, label, note`: face numbers start at 1 (largest first); a photo
without a face gets one row with note "no face found", a skipped file one row with note "skipped: <reason>", so the
CSV accounts for every file.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from fer.errors import FerError
from fer.labels import neutralize

# Files a folder search picks up. HEIC and AVIF are not read (Pillow needs plugins for them), but listing them here
# reports each one with the reason instead of passing over a phone's photos in silence.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif")


@dataclasses.dataclass
class BatchSummary:
    images: int = 0      # files read
    faces: int = 0
    no_face: int = 0     # files read in which no face was found
    skipped: int = 0     # files that could not be read


def image_files(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(image files, other files passed over): files named directly are always taken; folders are walked recursively
    (sorted, hidden files and folders left out, symbolic links to folders not followed) for IMAGE_SUFFIXES."""
    found: list[Path] = []
    ignored: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(path)  # a missing file is reported when it is read
            continue
        for folder, folders, files in os.walk(path):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                file = Path(folder) / name
                (found if file.suffix.lower() in IMAGE_SUFFIXES else ignored).append(file)
    return found, ignored


def csv_header(classes: Sequence[str]) -> list[str]:
    return ["file", "face", "x", "y", "w", "h", *classes, "label", "note"]


def write_csv(predictor, paths: Sequence[Path], csv_path: str | os.PathLike, whole_image: bool = False,
              on_skip: Callable[[Path, FerError], None] | None = None,
              progress: Callable[[int], None] | None = None) -> BatchSummary:
    """Classify every face in `paths` and write the CSV (under a temporary name, moved into place at the end).

    `on_skip(path, error)` hears of each file that could not be read; `progress(done)` after each file.
    """
    csv_path = Path(csv_path)
    classes = tuple(predictor.classes)
    summary = BatchSummary()
    handle, temporary = tempfile.mkstemp(prefix=f".{csv_path.stem}.", suffix=".csv", dir=csv_path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(csv_header(classes))
            for done, path in enumerate(paths, start=1):
                name = neutralize(str(path))
                try:
                    faces = predictor.predict(path, whole_image=whole_image)
                except FerError as error:
                    summary.skipped += 1
                    writer.writerow([name, *[""] * (6 + len(classes)), neutralize(f"skipped: {error}")])
                    if on_skip is not None:
                        on_skip(path, error)
                else:
                    summary.images += 1
                    summary.faces += len(faces)
                    summary.no_face += not faces
                    if not faces:
                        writer.writerow([name, *[""] * (6 + len(classes)), "no face found"])
                    for number, face in enumerate(faces, start=1):
                        probabilities = face["probabilities"]
                        writer.writerow([name, number, *face["box"], *(f"{probabilities[c]:.4f}" for c in classes),
                                         max(probabilities, key=probabilities.get), ""])
                if progress is not None:
                    progress(done)
        os.replace(temporary, csv_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return summary
