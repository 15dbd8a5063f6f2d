"""Reviewers' labels: the append-only corrections CSV, the Predict tab's flag list, and how labels resolve.

    python -m fer.labels add --labels-dir labels --image face.png --label sad --reviewer ana [--source upload]
    python -m fer.labels summary --labels-dir labels [--json]

The labels folder ($FER_LABELS_DIR, else labels/; the format is documented in labels/README.md) holds:
  corrections.csv   one row per reviewer decision (a label, or an undo of one); rows are only ever appended
  flagged.csv       faces a visitor marked "this is wrong" on the Predict tab, at most MAX_FLAGGED rows
  faces/<sha>.png   each labelled or flagged 48x48 face, saved once, named by the SHA-256 of its pixels

Writers hold a cross-process lock (`<file>.lock`) and append each row with one write and an fsync, so reviewers in
several processes never lose or tear a row. Readers skip malformed rows (a hand edit, or a writer killed mid-row)
and report them by line number; `strict=True` turns the first one into a DataError instead.

Resolution: a reviewer's later label of an image supersedes their earlier one, an undo row retracts their latest
label, and across reviewers the most common label wins; ties stay unresolved.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import dataclasses
import datetime
import errno
import io
import itertools
import json
import logging
import math
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import filelock
import numpy as np
from PIL import Image

from fer import config
from fer.config import CLASS_NAMES, IMAGE_SIZE
from fer.errors import DataError, FerError, ImageError
from fer.images import load_image
from fer.preprocess import face_sha256, preprocess_face

logger = logging.getLogger(__name__)

NOT_A_FACE = "not_a_face"  # "not a face / unsure": retraining drops images resolved to it
VALID_LABELS: tuple[str, ...] = (*CLASS_NAMES, NOT_A_FACE)
LABEL, UNDO = "label", "undo"
ACTIONS = (LABEL, UNDO)
CSV_HEADER: tuple[str, ...] = (
    "row_id", "image_sha256", "image_path", "source", "original_label", "corrected_label",
    "model_version", "model_probabilities", "reviewer", "timestamp_utc", "action",
)
FLAGGED_HEADER: tuple[str, ...] = (
    "row_id", "image_sha256", "image_path", "source", "model_version", "model_probabilities", "timestamp_utc",
)
CORRECTIONS_FILE = "corrections.csv"
FLAGGED_FILE = "flagged.csv"
FACES_DIR = "faces"
MAX_REVIEWER_LENGTH = 64
MAX_TEXT_LENGTH = 200  # source and model version: longer values are cut, they only describe the row
MAX_FLAGGED = 10_000  # anonymous visitors can flag faces; this bounds the disk they can fill
LOCK_TIMEOUT_S = 30.0
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets evaluate at the start of a cell
# Removed from reviewer names: control, format (bidi overrides, zero-width), private-use, surrogate, unassigned.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TAIL_BYTES = 65536  # enough of the file's end to find the last row id


class LabelsError(FerError, ValueError):
    """A label, reviewer name or probability vector was rejected."""


class LabelsStorageError(FerError):
    """The labels folder could not be written: read-only, full, locked too long, or not in the expected format."""


@dataclasses.dataclass
class CorrectionsFile:
    """A labels CSV as read: the good rows in file order (dicts keyed by the header, string values) and
    (line number, message) for each malformed line, the header being line 1. Also what `read_flagged` returns."""

    path: Path
    rows: list[dict[str, str]]
    problems: list[tuple[int, str]]


# ---------------------------------------------------------------------------------------------------- validation


def check_label(label: str) -> str:
    """`label` as stored (trimmed, lower case); LabelsError unless it is a class name or NOT_A_FACE."""
    cleaned = label.strip().lower() if isinstance(label, str) else label
    if cleaned not in VALID_LABELS:
        raise LabelsError(f"Unknown label {label!r}; use one of {', '.join(VALID_LABELS)}.")
    return cleaned


def neutralize(text: str) -> str:
    """Prefix text that a spreadsheet would run as a formula (leading = + - @ tab CR) with a quote: '=1+1."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _plain(value) -> str:
    """One line of text: control characters and line breaks become spaces; trimmed."""
    return "".join(" " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in str(value)).strip()


def clean_text(value, limit: int = MAX_TEXT_LENGTH) -> str:
    """Free text as stored: one line, cut to `limit` characters, neutralised against spreadsheet formulas."""
    return neutralize(_plain(value)[:limit])


def clean_reviewer(name: str) -> str:
    """A reviewer name as stored and compared; LabelsError if empty or too long.

    NFKC-normalised (a full-width "ａｎａ" is "ana"), control and format characters removed (bidirectional overrides,
    zero-width spaces: text that would make two names look alike or a row read backwards), runs of spaces made one,
    trimmed, and neutralised against spreadsheet formulas. Two names that clean to the same text are one reviewer in
    the CSV, so fer.auth refuses accounts whose names collide.
    """
    if not isinstance(name, str):
        raise LabelsError("A reviewer name must be text.")
    text = unicodedata.normalize("NFKC", name)
    text = "".join(" " if char.isspace() else char for char in text
                   if char.isspace() or unicodedata.category(char) not in _HIDDEN_CATEGORIES)
    text = neutralize(" ".join(text.split()))
    if not text:
        raise LabelsError("A reviewer name is required; sign in or pass --reviewer NAME.")
    if len(text) - text.startswith("'") > MAX_REVIEWER_LENGTH:  # the quote neutralize may add does not count
        raise LabelsError(f"Reviewer names are at most {MAX_REVIEWER_LENGTH} characters; got {len(text)}.")
    return text


def format_probabilities(probabilities) -> str:
    """Probabilities (a {class: p} dict, or a sequence in CLASS_NAMES order) as the stored JSON; "" for None."""
    if probabilities is None:
        return ""
    if isinstance(probabilities, Mapping):
        if set(probabilities) != set(CLASS_NAMES):
            raise LabelsError(f"Probabilities must have exactly the classes {', '.join(CLASS_NAMES)}; "
                              f"got {', '.join(map(str, probabilities))}.")
        values = [probabilities[name] for name in CLASS_NAMES]
    else:
        values = list(np.asarray(probabilities, dtype=np.float64).reshape(-1))
        if len(values) != len(CLASS_NAMES):
            raise LabelsError(f"Probabilities need {len(CLASS_NAMES)} values ({', '.join(CLASS_NAMES)}); got {len(values)}.")
    try:
        values = [float(value) for value in values]
    except (TypeError, ValueError):
        raise LabelsError("Probabilities must be numbers.") from None
    if not all(math.isfinite(value) and -1e-6 <= value <= 1 + 1e-6 for value in values):
        raise LabelsError(f"Probabilities must lie in [0, 1]; got {values}.")
    return json.dumps({name: round(min(max(value, 0.0), 1.0), 6) for name, value in zip(CLASS_NAMES, values)})


def parse_probabilities(text: str) -> dict[str, float] | None:
    """The stored JSON back as {class: p}; None for ""; ValueError if it is not what format_probabilities writes."""
    if not text:
        return None
    values = json.loads(text)
    if not isinstance(values, dict) or set(values) != set(CLASS_NAMES):
        raise ValueError(f"model_probabilities must be a JSON object with keys {', '.join(CLASS_NAMES)}")
    result = {name: values[name] for name in CLASS_NAMES}
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and 0 <= p <= 1
               for p in result.values()):
        raise ValueError("model_probabilities must hold numbers in [0, 1]")
    return {name: float(p) for name, p in result.items()}


def _check_face(face) -> np.ndarray:
    array = np.asarray(face)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE) or array.dtype != np.uint8:
        raise ImageError(f"A face must be a ({IMAGE_SIZE}, {IMAGE_SIZE}) uint8 array from fer.preprocess.preprocess_face; "
                         f"got shape {array.shape} {array.dtype}.")
    return np.ascontiguousarray(array)


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise LabelsError(f"{sha!r} is not a face hash (64 lower-case hex digits).")
    return sha


# ---------------------------------------------------------------------------------------------------- files


def _folder(labels_dir: str | Path | None) -> Path:
    return Path(labels_dir) if labels_dir is not None else config.labels_dir()


def corrections_path(labels_dir: str | Path | None = None) -> Path:
    """`corrections.csv` in `labels_dir` (default $FER_LABELS_DIR, else labels/)."""
    return _folder(labels_dir) / CORRECTIONS_FILE


def flagged_path(labels_dir: str | Path | None = None) -> Path:
    return _folder(labels_dir) / FLAGGED_FILE


def face_path(sha: str, labels_dir: str | Path | None = None) -> Path:
    """Where the face with this hash is saved; the path comes from the hash alone, never from user text."""
    return _folder(labels_dir) / FACES_DIR / f"{_check_sha(sha)}.png"


def load_saved_face(sha: str, labels_dir: str | Path | None = None) -> np.ndarray:
    """The saved (S, S) uint8 face with this hash; LabelsError if it is missing or its pixels do not match."""
    path = face_path(sha, labels_dir)
    try:
        with Image.open(path) as image:
            face = np.asarray(image.convert("L"), dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise LabelsError(f"Cannot read the saved face {path} ({error}).") from None
    if face.shape != (IMAGE_SIZE, IMAGE_SIZE) or face_sha256(face) != sha:
        raise LabelsError(f"The saved face {path} does not match its name; it was changed after it was saved.")
    return face


def save_face(face, labels_dir: str | Path | None = None) -> str:
    """Save a (S, S) uint8 face as `faces/<sha>.png` (lossless, once) and return its SHA-256."""
    face = _check_face(face)
    sha = face_sha256(face)
    _save_face(face, sha, _folder(labels_dir))
    return sha


def _save_face(face: np.ndarray, sha: str, folder: Path) -> None:
    path = folder / FACES_DIR / f"{sha}.png"
    if path.is_file():
        return
    with _storage_errors(folder):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Through a temporary file and a rename: a face under its final name is always complete.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{sha}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                Image.fromarray(face).save(stream, format="PNG")
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _storage_errors(folder: Path):
    """Turn OSError into LabelsStorageError with a message saying what to do."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            message = (f"The labels folder {folder} is full ({reason}); free some space and try again. "
                       "Rows saved before are kept.")
        elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            message = (f"Cannot write to the labels folder {folder} ({reason}); make it writable or set "
                       "FER_LABELS_DIR to a writable folder.")
        else:
            message = f"Could not write to the labels folder {folder} ({reason}); check the folder and try again."
        raise LabelsStorageError(message) from None


@contextlib.contextmanager
def _locked(path: Path):
    lock_path = path.with_name(path.name + ".lock")
    lock = filelock.FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LabelsStorageError(f"{path} has been locked by another writer for {LOCK_TIMEOUT_S:.0f} s; try again "
                                 f"(if no one is writing, a stuck process holds {lock_path}).") from None
    except OSError:
        with _storage_errors(path.parent):
            raise
    try:
        yield
    finally:
        lock.release()


def _encode(values: Iterable[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _append(path: Path, header: tuple[str, ...], make_row: Callable[[int], dict | None]) -> dict | None:
    """Under the file's lock: call `make_row(next_row_id)` and append what it returns as one write + fsync.

    A failed write is cut back off, so the file keeps exactly the rows it had. A file that does not end in a newline
    (a writer killed mid-row) gets one first, so the torn row stays a line of its own that readers skip.
    """
    folder = path.parent
    with _storage_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    with _locked(path), _storage_errors(folder):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            size = _check_header(fd, size, path, header)
            row = make_row(_next_row_id(fd, size))
            if row is None:
                return None
            prefix = _encode(header) if size == 0 else b"" if os.pread(fd, 1, size - 1) == b"\n" else b"\n"
            try:
                _write_all(fd, prefix + _encode(row[name] for name in header))
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        if size == 0:
            _fsync_folder(folder)
        return row


def _fsync_folder(folder: Path) -> None:
    """Make a new file's directory entry durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_header(fd: int, size: int, path: Path, header: tuple[str, ...]) -> int:
    """The file's size after checking its first line is `header`; a torn header (only a prefix) is cut away."""
    if size == 0:
        return 0
    expected = ",".join(header).encode()
    start = os.pread(fd, min(size, len(expected) + 8), 0)
    first = start.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
    if b"\n" not in start and size == len(start) and expected.startswith(first):
        os.ftruncate(fd, 0)  # a writer died while creating the file: nothing but part of the header was written
        return 0
    if first != expected:
        raise LabelsStorageError(f"{path} does not start with the expected header ({','.join(header)}); "
                                 "move it aside (new rows go to a fresh file) or restore its first line.")
    return size


def _next_row_id(fd: int, size: int) -> int:
    """One more than the last row id near the end of the file (1 for an empty file)."""
    if size == 0:
        return 1
    start = max(0, size - _TAIL_BYTES)
    lines = os.pread(fd, size - start, start).split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first piece may be the end of a longer line
    for line in reversed(lines):
        first_field = line.split(b",", 1)[0]
        if first_field.isdigit():
            return int(first_field) + 1
    if start > 0:  # no row id in the tail (hand edits): scan the whole file
        everything = os.pread(fd, size, 0).split(b"\n")
        numbers = [int(field) for field in (line.split(b",", 1)[0] for line in everything) if field.isdigit()]
        return max(numbers, default=0) + 1
    return 1


# ---------------------------------------------------------------------------------------------------- reading


def _parse_common(values: dict[str, str]) -> dict[str, str]:
    row = dict(values)
    if not row["row_id"].isdigit():
        raise ValueError(f"row_id {row['row_id']!r} is not a number")
    sha = row["image_sha256"].lower()
    if not _SHA256.fullmatch(sha):
        raise ValueError(f"image_sha256 {row['image_sha256']!r} is not 64 hex digits")
    row["image_sha256"] = sha
    if row["image_path"] != f"{FACES_DIR}/{sha}.png":
        raise ValueError(f"image_path must be {FACES_DIR}/<image_sha256>.png")
    row["source"] = clean_text(row["source"], MAX_TEXT_LENGTH + 1)
    row["model_version"] = clean_text(row["model_version"], MAX_TEXT_LENGTH + 1)
    parse_probabilities(row["model_probabilities"])
    try:
        datetime.datetime.fromisoformat(row["timestamp_utc"])
    except ValueError:
        raise ValueError(f"timestamp_utc {row['timestamp_utc']!r} is not an ISO 8601 time") from None
    return row


def _parse_correction(values: dict[str, str]) -> dict[str, str]:
    row = _parse_common(values)
    for column in ("original_label", "corrected_label"):
        if row[column] or column == "corrected_label":
            try:
                row[column] = check_label(row[column])
            except LabelsError:
                raise ValueError(f"{column} {row[column]!r} is not one of {', '.join(VALID_LABELS)}") from None
    try:
        row["reviewer"] = clean_reviewer(row["reviewer"])
    except LabelsError as error:
        raise ValueError(str(error)) from None
    if row["action"] not in ACTIONS:
        raise ValueError(f"action {row['action']!r} is not one of {', '.join(ACTIONS)}")
    return row


def _read(path: Path, header: tuple[str, ...], parse_row: Callable[[dict], dict]) -> CorrectionsFile:
    """Parse a labels CSV without locking; each physical line is one row (writers never put a newline in a field)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return CorrectionsFile(path, [], [])
    except OSError as error:
        raise DataError(f"Cannot read {path} ({error.strerror or error}).") from None
    lines = data.split(b"\n")
    complete = len(lines) - 1  # the last piece is "" for a file that ends in a newline, else a torn row
    rows, problems = [], []
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        if last and not raw:
            break
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            problems.append((number, "is not UTF-8 text"))
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
            if text != ",".join(header):
                problems.append((1, f"header is not {','.join(header)}"))
            continue
        if not text.strip():
            continue
        try:
            values = next(csv.reader([text], strict=True))
            if len(values) != len(header):
                raise ValueError(f"has {len(values)} fields, expected {len(header)}")
            rows.append(parse_row(dict(zip(header, values))))
        except (csv.Error, ValueError) as error:
            message = str(error)
            if number > complete:
                message = f"is incomplete (a writer stopped mid-row?): {message}"
            problems.append((number, message))
    return CorrectionsFile(path, rows, problems)


def _read_locked(path: Path, header: tuple[str, ...], parse_row: Callable[[dict], dict]) -> CorrectionsFile:
    """Read under the writers' lock so no half-written row is seen; without the lock (read-only folder) read anyway."""
    if not path.is_file():
        return _read(path, header, parse_row)
    lock = filelock.FileLock(str(path.with_name(path.name + ".lock")), timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except OSError:  # includes filelock.Timeout
        logger.warning("Reading %s without its lock", path)
        return _read(path, header, parse_row)
    try:
        return _read(path, header, parse_row)
    finally:
        lock.release()


def read_corrections(path: str | Path, strict: bool = False) -> CorrectionsFile:
    """Read a corrections CSV (a labels folder means its corrections.csv); a missing file has no rows.

    Malformed lines are skipped and listed in `.problems`; with `strict=True` the first raises DataError naming its
    line, so retraining stops before it uses a file someone damaged.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CORRECTIONS_FILE
    result = _read_locked(path, CSV_HEADER, _parse_correction)
    if strict and result.problems:
        number, message = result.problems[0]
        more = f" (and {len(result.problems) - 1} more malformed lines)" if len(result.problems) > 1 else ""
        raise DataError(f"{path} line {number}: {message}{more}; fix or delete that line and try again.")
    return result


def read_flagged(labels_dir: str | Path | None = None) -> CorrectionsFile:
    """The Predict tab's flagged faces (rows keyed by FLAGGED_HEADER), oldest first."""
    return _read_locked(flagged_path(labels_dir), FLAGGED_HEADER, _parse_common)


# ---------------------------------------------------------------------------------------------------- writing


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def add_correction(face, corrected_label: str, reviewer: str, *, original_label: str = "", source: str = "",
                   model_version: str = "", probabilities=None, labels_dir: str | Path | None = None) -> dict:
    """Save the (S, S) uint8 face and append a reviewer's label for it; return the row written (string values).

    `original_label` is what the face was labelled before (its dataset folder, or the model's prediction);
    `probabilities` the model's, as a {class: p} dict or a sequence in CLASS_NAMES order.
    """
    face = _check_face(face)
    fields = {
        "original_label": check_label(original_label) if original_label else "",
        "corrected_label": check_label(corrected_label),
        "reviewer": clean_reviewer(reviewer),
        "source": clean_text(source),
        "model_version": clean_text(model_version),
        "model_probabilities": format_probabilities(probabilities),
    }
    folder = _folder(labels_dir)
    sha = face_sha256(face)
    _save_face(face, sha, folder)  # first, so no row ever names a face that is not on disk

    def make_row(row_id: int) -> dict:
        return {"row_id": str(row_id), "image_sha256": sha, "image_path": f"{FACES_DIR}/{sha}.png", **fields,
                "timestamp_utc": _now(), "action": LABEL}

    row = _append(folder / CORRECTIONS_FILE, CSV_HEADER, make_row)
    logger.info("%s labelled %s as %s (row %s)", row["reviewer"], sha[:12], row["corrected_label"], row["row_id"])
    return {name: row[name] for name in CSV_HEADER}


def undo_last(reviewer: str, labels_dir: str | Path | None = None) -> dict | None:
    """Retract the reviewer's latest label that is still in force; return the undo row, or None if there is none.

    The undo row repeats the label row it retracts (image, labels, source) with its own row id, time and action.
    """
    reviewer = clean_reviewer(reviewer)
    path = corrections_path(labels_dir)
    if not path.is_file():
        return None

    def make_row(row_id: int) -> dict | None:
        mine = _active_rows(_read(path, CSV_HEADER, _parse_correction).rows).get(reviewer)
        if not mine:
            return None
        return {**mine[-1], "row_id": str(row_id), "timestamp_utc": _now(), "action": UNDO}

    row = _append(path, CSV_HEADER, make_row)
    if row is not None:
        logger.info("%s undid their label of %s", reviewer, row["image_sha256"][:12])
    return row


def flag_for_review(face, probabilities, model_version: str, source: str,
                    labels_dir: str | Path | None = None) -> str:
    """Save a face a visitor says the model got wrong and add it to flagged.csv; return its SHA-256.

    A face already flagged is not added again. LabelsStorageError once the file holds MAX_FLAGGED rows.
    """
    face = _check_face(face)
    fields = {"source": clean_text(source), "model_version": clean_text(model_version),
              "model_probabilities": format_probabilities(probabilities)}
    folder = _folder(labels_dir)
    path = folder / FLAGGED_FILE
    sha = face_sha256(face)

    def make_row(row_id: int) -> dict | None:
        existing = _read(path, FLAGGED_HEADER, _parse_common).rows
        if any(row["image_sha256"] == sha for row in existing):
            return None
        if len(existing) >= MAX_FLAGGED:
            raise LabelsStorageError(f"{path} already holds {MAX_FLAGGED} flagged faces; reviewers should work "
                                     "through them and move the file aside before more can be flagged.")
        _save_face(face, sha, folder)
        return {"row_id": str(row_id), "image_sha256": sha, "image_path": f"{FACES_DIR}/{sha}.png", **fields,
                "timestamp_utc": _now()}

    _append(path, FLAGGED_HEADER, make_row)
    return sha


# ---------------------------------------------------------------------------------------------------- resolution


def _active_rows(rows: Iterable[Mapping[str, str]]) -> dict[str, list[Mapping[str, str]]]:
    """Each reviewer's label rows still in force, oldest first: an undo removes that reviewer's latest row for its image."""
    active: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        mine = active.setdefault(row["reviewer"], [])
        if row["action"] == UNDO:
            for index in range(len(mine) - 1, -1, -1):
                if mine[index]["image_sha256"] == row["image_sha256"]:
                    del mine[index]
                    break
        else:
            mine.append(row)
    return active


def reviewer_labels(rows: Iterable[Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """image sha256 -> {reviewer: their label in force}, after re-labels (latest wins) and undos, in file order."""
    votes: dict[str, dict[str, str]] = {}
    for reviewer, mine in _active_rows(rows).items():
        for row in mine:
            votes.setdefault(row["image_sha256"], {})[reviewer] = row["corrected_label"]
    return votes


def resolve_labels(rows: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """image sha256 -> resolved label: each reviewer's label in force, then the most common across reviewers.

    Images whose top labels tie are left out (unresolved).
    """
    resolved = {}
    for sha, votes in reviewer_labels(rows).items():
        ranked = collections.Counter(votes.values()).most_common()
        if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
            resolved[sha] = ranked[0][0]
    return resolved


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels for the same items; None when chance agreement is 1 (undefined)."""
    if len(first) != len(second) or not first:
        raise ValueError("Cohen's kappa needs two equally long, non-empty label lists.")
    count = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / count
    first_counts, second_counts = collections.Counter(first), collections.Counter(second)
    expected = sum(first_counts[label] * second_counts[label] for label in first_counts) / count**2
    return None if expected >= 1.0 else (observed - expected) / (1.0 - expected)


def fleiss_kappa(table: np.ndarray) -> tuple[float, float | None]:
    """(mean observed agreement, Fleiss' kappa) for an (items, categories) count table, each item rated >= 2 times.

    Items may have different numbers of raters: each item's agreement is computed over its own rater pairs, and the
    category shares over all ratings (the usual generalisation; equal to Fleiss (1971) when every item has n raters).
    """
    table = np.asarray(table, dtype=np.float64)
    raters = table.sum(axis=1)
    if table.ndim != 2 or len(table) == 0 or np.any(raters < 2):
        raise ValueError("Fleiss' kappa needs a non-empty (items, categories) table with at least 2 ratings per item.")
    per_item = (np.square(table).sum(axis=1) - raters) / (raters * (raters - 1))
    observed = float(per_item.mean())
    shares = table.sum(axis=0) / raters.sum()
    expected = float(np.square(shares).sum())
    return observed, (None if expected >= 1.0 else (observed - expected) / (1.0 - expected))


def agreement(rows: Iterable[Mapping[str, str]]) -> dict:
    """Label counts and inter-reviewer agreement over the labels in force (JSON-ready).

    Keys: items (images with a label), labels (labels in force), label_counts and resolved_counts per label,
    unresolved (ties), reviewers ({name: images labelled}), multi_reviewed (images with >= 2 reviewers),
    observed_agreement and fleiss_kappa over those, pairwise ([{reviewers, items, agreement, cohen_kappa}] for each
    pair of reviewers with shared images), cohen_kappa (the one pair's, when there are exactly two reviewers).
    """
    rows = list(rows)
    votes = reviewer_labels(rows)
    resolved = resolve_labels(rows)
    reviewers = collections.Counter(reviewer for image_votes in votes.values() for reviewer in image_votes)
    all_labels = collections.Counter(label for image_votes in votes.values() for label in image_votes.values())
    multi = [image_votes for image_votes in votes.values() if len(image_votes) >= 2]
    observed = kappa = None
    if multi:
        table = np.array([[list(image_votes.values()).count(label) for label in VALID_LABELS] for image_votes in multi])
        observed, kappa = fleiss_kappa(table)
    pairwise = []
    for first, second in itertools.combinations(sorted(reviewers), 2):
        shared = [image_votes for image_votes in votes.values() if first in image_votes and second in image_votes]
        if shared:
            labels_first = [image_votes[first] for image_votes in shared]
            labels_second = [image_votes[second] for image_votes in shared]
            pairwise.append({
                "reviewers": [first, second], "items": len(shared),
                "agreement": sum(a == b for a, b in zip(labels_first, labels_second)) / len(shared),
                "cohen_kappa": cohen_kappa(labels_first, labels_second),
            })
    resolved_counts = collections.Counter(resolved.values())
    return {
        "items": len(votes),
        "labels": sum(all_labels.values()),
        "label_counts": {label: all_labels[label] for label in VALID_LABELS},
        "resolved_counts": {label: resolved_counts[label] for label in VALID_LABELS},
        "unresolved": len(votes) - len(resolved),
        "reviewers": dict(sorted(reviewers.items())),
        "multi_reviewed": len(multi),
        "observed_agreement": observed,
        "fleiss_kappa": kappa,
        "pairwise": pairwise,
        "cohen_kappa": pairwise[0]["cohen_kappa"] if len(reviewers) == 2 and pairwise else None,
    }


# ---------------------------------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def summarize(labels_dir: str | Path | None = None) -> dict:
    """What `python -m fer.labels summary --json` prints: rows, images, flagged faces, agreement, malformed lines."""
    labels_dir = _folder(labels_dir)
    corrections = read_corrections(corrections_path(labels_dir))
    stats = agreement(corrections.rows)
    return {
        "corrections": str(corrections.path),
        "rows": len(corrections.rows),
        "undo_rows": sum(row["action"] == UNDO for row in corrections.rows),
        "images": len({row["image_sha256"] for row in corrections.rows}),
        "flagged": len(read_flagged(labels_dir).rows),
        "agreement": stats,
        "malformed": [{"line": number, "problem": message} for number, message in corrections.problems],
    }


def _format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_summary(summary: dict) -> None:
    stats = summary["agreement"]
    print(f"{summary['corrections']}: {summary['rows']} rows ({summary['undo_rows']} undos), "
          f"{summary['images']} distinct images, {summary['flagged']} flagged faces")
    print(f"resolved: {sum(stats['resolved_counts'].values())} images, {stats['unresolved']} unresolved (tied)")
    print("  " + ", ".join(f"{label} {count}" for label, count in stats["resolved_counts"].items()))
    print("reviewers: " + (", ".join(f"{name} {count}" for name, count in stats["reviewers"].items()) or "none"))
    print(f"agreement: {stats['multi_reviewed']} images labelled by 2+ reviewers, observed "
          f"{_format_number(stats['observed_agreement'])}, Fleiss' kappa {_format_number(stats['fleiss_kappa'])}")
    for pair in stats["pairwise"]:
        print(f"  {pair['reviewers'][0]} vs {pair['reviewers'][1]}: {pair['items']} images, agreement "
              f"{pair['agreement']:.3f}, Cohen's kappa {_format_number(pair['cohen_kappa'])}")
    for problem in summary["malformed"]:
        print(f"malformed: line {problem['line']}: {problem['problem']}")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m fer.labels", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="label one face crop (any image file, taken whole as the face)")
    add.add_argument("--labels-dir", type=Path, default=None, help="default $FER_LABELS_DIR, else labels/")
    add.add_argument("--image", required=True)
    add.add_argument("--label", required=True, help=", ".join(VALID_LABELS))
    add.add_argument("--reviewer", required=True)
    add.add_argument("--source", default=None, help="where the face came from (default: the image's file name)")
    summary = commands.add_parser("summary", help="rows, resolved labels, reviewers, agreement, malformed rows")
    summary.add_argument("--labels-dir", type=Path, default=None, help="default $FER_LABELS_DIR, else labels/")
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    labels_dir = _folder(args.labels_dir)
    try:
        if args.command == "add":
            label, reviewer = check_label(args.label), clean_reviewer(args.reviewer)  # before decoding anything
            face = preprocess_face(load_image(args.image))  # (S, S) uint8: the whole image is the face
            source = args.source if args.source is not None else Path(args.image).name
            row = add_correction(face, label, reviewer, source=source, labels_dir=labels_dir)
            print(f"row {row['row_id']}: {row['image_sha256'][:12]} labelled {row['corrected_label']} by "
                  f"{row['reviewer']} in {corrections_path(labels_dir)}")
        else:
            result = summarize(labels_dir)
            if args.json:
                print(json.dumps(result))
            else:
                _print_summary(result)
    except FerError as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
