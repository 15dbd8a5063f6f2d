"""fer.labels: the corrections CSV round trip, resolution and agreement, damaged files, concurrent and killed
writers, unwritable folders, spreadsheet-formula neutralising, and the command line."""

import csv
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from fer import labels
from fer.errors import DataError, ImageError
from fer.preprocess import face_sha256
from conftest import PROJECT_ROOT


def face(number: int) -> np.ndarray:
    """A distinct (48, 48) uint8 face for each number."""
    pixels = np.full((48, 48), number % 251, np.uint8)
    pixels[1, 1] = number // 251
    return pixels


def csv_line(values) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def run_python(script: str, *args, **popen):
    """Start `script` in a fresh interpreter with the project importable (a real, separate writer process)."""
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=environment, cwd=PROJECT_ROOT, **popen)


def test_row_round_trip_and_face_saved_once_losslessly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48)).astype(np.uint8)
    row = labels.add_correction(pixels, "sad", "ana", original_label="neutral", source="train/neutral/im1.png",
                                model_version="vgg_small", probabilities={"happy": 0.1, "sad": 0.4, "neutral": 0.45,
                                                                          "surprise": 0.05}, labels_dir=tmp_path)
    sha = face_sha256(pixels)
    assert tuple(row) == labels.CSV_HEADER
    assert (row["row_id"], row["image_sha256"], row["image_path"], row["action"]) == ("1", sha, f"faces/{sha}.png", "label")
    assert json.loads(row["model_probabilities"])["neutral"] == 0.45
    read = labels.read_corrections(labels.corrections_path(tmp_path))
    assert read.rows == [row] and read.problems == []
    with open(labels.corrections_path(tmp_path), newline="") as stream:
        assert tuple(next(csv.reader(stream))) == labels.CSV_HEADER

    saved = tmp_path / row["image_path"]
    assert np.array_equal(np.asarray(Image.open(saved)), pixels)  # lossless
    assert np.array_equal(labels.load_saved_face(sha, tmp_path), pixels)
    before = saved.stat().st_mtime_ns
    time.sleep(0.01)
    assert labels.save_face(pixels, tmp_path) == sha
    labels.add_correction(pixels, "neutral", "ben", labels_dir=tmp_path)
    assert saved.stat().st_mtime_ns == before and len(list((tmp_path / "faces").iterdir())) == 1


@pytest.mark.parametrize("call, error", [
    (lambda d: labels.add_correction(face(1), "angry", "ana", labels_dir=d), labels.LabelsError),
    (lambda d: labels.add_correction(face(1), "", "ana", labels_dir=d), labels.LabelsError),
    (lambda d: labels.add_correction(face(1), "sad", "ana", original_label="disgust", labels_dir=d), labels.LabelsError),
    (lambda d: labels.add_correction(face(1), "sad", "  \n ", labels_dir=d), labels.LabelsError),
    (lambda d: labels.add_correction(face(1), "sad", "x" * 65, labels_dir=d), labels.LabelsError),
    (lambda d: labels.add_correction(face(1), "sad", "ana", probabilities=[0.5, 0.5], labels_dir=d), labels.LabelsError),
    (lambda d: labels.add_correction(face(1), "sad", "ana", probabilities=[2, 0, 0, 0], labels_dir=d), labels.LabelsError),
    (lambda d: labels.add_correction(face(1), "sad", "ana", probabilities={"sad": 1.0}, labels_dir=d), labels.LabelsError),
    (lambda d: labels.add_correction(np.zeros((48, 40), np.uint8), "sad", "ana", labels_dir=d), ImageError),
    (lambda d: labels.add_correction(np.zeros((48, 48), np.float32), "sad", "ana", labels_dir=d), ImageError),
])
def test_bad_input_is_rejected_and_nothing_written(tmp_path, call, error):
    with pytest.raises(error) as raised:
        call(tmp_path)
    assert str(raised.value)
    assert not labels.corrections_path(tmp_path).exists() and not (tmp_path / "faces").exists()


def test_label_error_lists_the_valid_labels():
    with pytest.raises(labels.LabelsError, match="happy, sad, neutral, surprise, not_a_face"):
        labels.check_label("angry")
    assert labels.check_label(" Sad ") == "sad" and labels.NOT_A_FACE in labels.VALID_LABELS


def test_relabel_by_the_same_reviewer_supersedes_and_keeps_history(tmp_path):
    labels.add_correction(face(1), "sad", "ana", labels_dir=tmp_path)
    labels.add_correction(face(1), "neutral", "ana", labels_dir=tmp_path)
    rows = labels.read_corrections(tmp_path).rows
    assert [row["corrected_label"] for row in rows] == ["sad", "neutral"]
    assert labels.resolve_labels(rows) == {face_sha256(face(1)): "neutral"}


def test_undo_retracts_the_reviewers_latest_label_only(tmp_path):
    first, second = face_sha256(face(1)), face_sha256(face(2))
    labels.add_correction(face(1), "sad", "ana", labels_dir=tmp_path)
    labels.add_correction(face(1), "happy", "ben", labels_dir=tmp_path)
    labels.add_correction(face(2), "neutral", "ana", labels_dir=tmp_path)
    labels.add_correction(face(2), "surprise", "ana", labels_dir=tmp_path)  # supersedes ana's neutral

    undone = labels.undo_last("ana", tmp_path)
    assert (undone["action"], undone["image_sha256"], undone["corrected_label"], undone["row_id"]) == ("undo", second, "surprise", "5")
    assert labels.reviewer_labels(labels.read_corrections(tmp_path).rows)[second] == {"ana": "neutral"}  # back to before

    assert labels.undo_last("ana", tmp_path)["image_sha256"] == second
    assert labels.undo_last("ana", tmp_path)["image_sha256"] == first
    assert labels.undo_last("ana", tmp_path) is None  # nothing of ana's left in force
    rows = labels.read_corrections(tmp_path).rows
    assert len(rows) == 7
    assert labels.reviewer_labels(rows) == {first: {"ben": "happy"}}  # ben's label untouched
    assert labels.undo_last("nobody", tmp_path) is None and labels.undo_last("ana", tmp_path / "empty") is None


def test_majority_across_reviewers_and_ties_stay_unresolved(tmp_path):
    votes = {
        1: [("ana", "sad"), ("ben", "sad"), ("cy", "neutral")],  # sad 2:1
        2: [("ana", "sad"), ("ben", "neutral")],  # tie
        3: [("ana", "happy"), ("ben", "neutral"), ("cy", "neutral"), ("dee", "happy")],  # tie
        4: [("ana", labels.NOT_A_FACE), ("ben", labels.NOT_A_FACE), ("cy", "sad")],
        5: [("ana", "surprise")],
        6: [("ana", "sad"), ("ben", "neutral"), ("ben", "sad")],  # ben changes his mind: sad 2:0
    }
    for number, image_votes in votes.items():
        for reviewer, label in image_votes:
            labels.add_correction(face(number), label, reviewer, labels_dir=tmp_path)
    resolved = labels.resolve_labels(labels.read_corrections(tmp_path).rows)
    sha = lambda number: face_sha256(face(number))  # noqa: E731
    assert resolved == {sha(1): "sad", sha(4): labels.NOT_A_FACE, sha(5): "surprise", sha(6): "sad"}

    stats = labels.agreement(labels.read_corrections(tmp_path).rows)
    assert (stats["items"], stats["unresolved"], stats["multi_reviewed"]) == (6, 2, 5)
    assert stats["resolved_counts"] == {"happy": 0, "sad": 2, "neutral": 0, "surprise": 1, "not_a_face": 1}
    assert stats["reviewers"] == {"ana": 6, "ben": 5, "cy": 3, "dee": 1}
    assert sum(stats["label_counts"].values()) == stats["labels"] == 15


def test_fleiss_kappa_matches_the_worked_example(tmp_path):
    """Fleiss' kappa example on Wikipedia: 10 subjects, 14 raters, 5 categories; P = 0.378, kappa = 0.210."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    for item, counts in enumerate(table):
        raters = iter(range(14))
        for category, count in enumerate(counts):
            for _ in range(count):
                labels.add_correction(face(item), labels.VALID_LABELS[category], f"r{next(raters):02d}", labels_dir=tmp_path)
    stats = labels.agreement(labels.read_corrections(tmp_path).rows)
    assert stats["multi_reviewed"] == 10
    assert round(stats["observed_agreement"], 3) == 0.378
    assert round(stats["fleiss_kappa"], 3) == 0.210
    assert stats["cohen_kappa"] is None and len(stats["pairwise"]) == 91  # 14 reviewers: pairs, no single kappa


def test_cohen_kappa_matches_the_worked_example(tmp_path):
    """Cohen's kappa example on Wikipedia: 50 items, both yes 20, A yes B no 5, A no B yes 10, both no 15; kappa 0.4."""
    pairs = [("sad", "sad")] * 20 + [("sad", "neutral")] * 5 + [("neutral", "sad")] * 10 + [("neutral", "neutral")] * 15
    for item, (first, second) in enumerate(pairs):
        labels.add_correction(face(item), first, "ana", labels_dir=tmp_path)
        labels.add_correction(face(item), second, "ben", labels_dir=tmp_path)
    stats = labels.agreement(labels.read_corrections(tmp_path).rows)
    assert stats["pairwise"][0]["reviewers"] == ["ana", "ben"] and stats["pairwise"][0]["items"] == 50
    assert stats["pairwise"][0]["agreement"] == pytest.approx(0.7)
    assert stats["cohen_kappa"] == pytest.approx(0.4)
    assert labels.cohen_kappa(["sad"] * 3, ["sad"] * 3) is None  # chance agreement 1: undefined


def test_malformed_rows_are_reported_by_line_and_good_rows_kept(tmp_path):
    path = labels.corrections_path(tmp_path)
    labels.add_correction(face(1), "sad", "ana", labels_dir=tmp_path)  # line 2
    good = labels.read_corrections(path).rows[0]
    line = lambda **changes: csv_line({**good, **changes}.values())  # noqa: E731
    with path.open("ab") as stream:
        stream.write(b"2,not-a-hash,faces/x.png,upload,sad,angry\n")  # line 3: too few fields
        stream.write((line(corrected_label="angry") + "\n").encode())  # 4
        stream.write((line(image_sha256="f" * 63) + "\n").encode())  # 5
        stream.write(b"\n")  # 6: blank, ignored
        stream.write((line(timestamp_utc="yesterday") + "\n").encode())  # 7
        stream.write((line(action="delete") + "\n").encode())  # 8
        stream.write(b'9,"unclosed\n')  # 9
        stream.write(line(source="caf\xe9").encode("latin-1") + b"\n")  # 10: not UTF-8
        stream.write((line(image_path="../../etc/passwd") + "\n").encode())  # 11
        stream.write((line(model_probabilities='{"sad": 2}') + "\n").encode())  # 12
    labels.add_correction(face(2), "neutral", "ben", labels_dir=tmp_path)  # line 13

    read = labels.read_corrections(path)
    assert [row["reviewer"] for row in read.rows] == ["ana", "ben"]
    assert [number for number, _ in read.problems] == [3, 4, 5, 7, 8, 9, 10, 11, 12]
    reasons = [message for _, message in read.problems]
    expected = ["has 6 fields, expected 11", "corrected_label 'angry'", "image_sha256", "timestamp_utc", "action",
                "unexpected end of data", "not UTF-8", "image_path", "model_probabilities"]
    assert all(part in reason for part, reason in zip(expected, reasons)), reasons
    with pytest.raises(DataError, match=r"line 3: .*and 8 more"):
        labels.read_corrections(path, strict=True)
    summary = labels.summarize(tmp_path)
    assert [problem["line"] for problem in summary["malformed"]] == [3, 4, 5, 7, 8, 9, 10, 11, 12]


def test_spreadsheet_formulas_are_neutralised_and_text_kept_on_one_line(tmp_path):
    attacks = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1", "a\nb"]
    for number, attack in enumerate(attacks):
        labels.add_correction(face(number), "sad", attack, source=attack, model_version=attack, labels_dir=tmp_path)
    labels.add_correction(face(99), "sad", "ana", source="s" * 500, labels_dir=tmp_path)
    text = labels.corrections_path(tmp_path).read_text()
    assert len(text.splitlines()) == len(attacks) + 2  # header + one line per row
    with open(labels.corrections_path(tmp_path), newline="") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows[:-1]:
        for column in ("reviewer", "source", "model_version"):
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), row[column]
    assert rows[0]["reviewer"] == "'" + attacks[0] and rows[6]["source"] == "a b"
    assert len(rows[-1]["source"]) == labels.MAX_TEXT_LENGTH
    # The stored name is what undo and resolution compare against, whatever the caller typed.
    assert labels.undo_last("=HYPERLINK(\"http://x\",\"y\")", tmp_path)["image_sha256"] == face_sha256(face(0))


@pytest.mark.parametrize("typed, stored", [
    ("ana", "ana"), ("  ana\t lee ", "ana lee"), ("\u202eana", "ana"), ("a\u200bna\u2066", "ana"),
    ("\uff41\uff4e\uff41", "ana"), ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("'=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"), ("\t=1", "'=1"), ("a\x00\x1bna", "ana"),
])
def test_reviewer_names_are_cleaned_of_invisible_characters(typed, stored):
    assert labels.clean_reviewer(typed) == stored
    assert labels.clean_reviewer(stored) == stored  # cleaning what is stored changes nothing


@pytest.mark.parametrize("name", ["", " ", "\u202e\u200b", None, "x" * 65])
def test_reviewer_names_that_clean_to_nothing_or_too_long_are_refused(name):
    with pytest.raises(labels.LabelsError):
        labels.clean_reviewer(name)


def test_no_user_text_becomes_a_path(tmp_path):
    labels.add_correction(face(1), "sad", "../../ana", source="../../../etc/passwd", model_version="/tmp/x",
                          labels_dir=tmp_path / "labels")
    created = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*"))
    sha = face_sha256(face(1))
    assert created == ["labels", "labels/corrections.csv", "labels/corrections.csv.lock", "labels/faces",
                       f"labels/faces/{sha}.png"]
    with pytest.raises(labels.LabelsError):
        labels.face_path("../../etc/passwd", tmp_path)


WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from fer import labels
worker, count, folder, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
while not go.exists():
    time.sleep(0.005)
for index in range(count):
    pixels = np.full((48, 48), worker, np.uint8)
    pixels[0, 0], pixels[0, 1] = divmod(index, 256)
    labels.add_correction(pixels, labels.VALID_LABELS[index % 5], f"writer{worker}", source=f"{worker}:{index}",
                          labels_dir=folder)
"""


def test_eight_processes_appending_at_once_lose_and_tear_nothing(tmp_path):
    go = tmp_path / "go"
    workers = [run_python(WRITER, worker, 100, tmp_path / "labels", go) for worker in range(8)]
    time.sleep(0.5)  # let every interpreter start, then release them together
    go.touch()
    assert [worker.wait(timeout=120) for worker in workers] == [0] * 8

    path = labels.corrections_path(tmp_path / "labels")
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data.splitlines()) == 801
    read = labels.read_corrections(path, strict=True)
    assert len(read.rows) == 800 and read.problems == []
    assert sorted(int(row["row_id"]) for row in read.rows) == list(range(1, 801))
    for worker in range(8):
        sources = [row["source"] for row in read.rows if row["reviewer"] == f"writer{worker}"]
        assert sources == [f"{worker}:{index}" for index in range(100)]  # each writer's rows all there, in order
    assert len(list((tmp_path / "labels" / "faces").glob("*.png"))) == 800
    writers_in_file_order = [row["reviewer"] for row in read.rows]
    switches = sum(a != b for a, b in zip(writers_in_file_order, writers_in_file_order[1:]))
    assert switches > 7  # the writers really ran at the same time


KILLED_WRITER = """
import os, sys, time
import numpy as np
from fer import labels
folder = sys.argv[1]
labels.add_correction(np.zeros((48, 48), np.uint8), "sad", "ana", labels_dir=folder)
real_write = os.write
def torn_write(fd, data):
    written = real_write(fd, bytes(data[: len(data) // 2]))
    print("torn", flush=True)
    time.sleep(60)
    return written
os.write = torn_write
labels.add_correction(np.ones((48, 48), np.uint8), "neutral", "ana", labels_dir=folder)
"""


def test_a_writer_killed_mid_row_leaves_a_file_that_parses(tmp_path):
    writer = run_python(KILLED_WRITER, tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "torn"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    path = labels.corrections_path(tmp_path)
    assert not path.read_bytes().endswith(b"\n")

    read = labels.read_corrections(path)
    assert [row["corrected_label"] for row in read.rows] == ["sad"]
    assert [number for number, _ in read.problems] == [3] and "incomplete" in read.problems[0][1]
    with pytest.raises(DataError, match="line 3"):
        labels.read_corrections(path, strict=True)

    started = time.monotonic()
    row = labels.add_correction(face(5), "happy", "ben", labels_dir=tmp_path)  # the dead writer's lock is free
    assert time.monotonic() - started < 5
    read = labels.read_corrections(path)
    assert [r["corrected_label"] for r in read.rows] == ["sad", "happy"] and read.rows[-1] == row
    assert [number for number, _ in read.problems] == [3]  # the torn row stays a line of its own


def test_a_torn_header_is_replaced(tmp_path):
    path = labels.corrections_path(tmp_path)
    path.write_text(",".join(labels.CSV_HEADER)[:20])
    labels.add_correction(face(1), "sad", "ana", labels_dir=tmp_path)
    read = labels.read_corrections(path, strict=True)
    assert len(read.rows) == 1


def test_a_file_with_another_header_is_not_appended_to(tmp_path):
    path = labels.corrections_path(tmp_path)
    path.write_text("image,label\nx.png,sad\n")
    with pytest.raises(labels.LabelsStorageError, match="header"):
        labels.add_correction(face(1), "sad", "ana", labels_dir=tmp_path)
    assert path.read_text() == "image,label\nx.png,sad\n"
    assert labels.read_corrections(path).problems[0][0] == 1


@pytest.fixture
def read_only(monkeypatch):
    """Make writes under a folder fail with EROFS, as on a read-only mount (chmod does not stop root)."""

    def protect(folder):
        folder = str(folder)
        real_open, real_mkdir = os.open, os.mkdir
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def guarded_open(path, flags, *args, **kwargs):
            if str(path).startswith(folder) and flags & writing:
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)

        def guarded_mkdir(path, *args, **kwargs):
            if str(path).startswith(folder):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded_open)
        monkeypatch.setattr(os, "mkdir", guarded_mkdir)

    return protect


def test_read_only_folder_gives_a_clear_error_and_keeps_rows(tmp_path, read_only):
    labels.add_correction(face(1), "sad", "ana", labels_dir=tmp_path)
    before = labels.corrections_path(tmp_path).read_bytes()
    read_only(tmp_path)
    for call in (lambda: labels.add_correction(face(2), "sad", "ana", labels_dir=tmp_path),
                 lambda: labels.undo_last("ana", tmp_path),
                 lambda: labels.flag_for_review(face(3), None, "v1", "predict", labels_dir=tmp_path),
                 lambda: labels.add_correction(face(2), "sad", "ana", labels_dir=tmp_path / "new")):
        with pytest.raises(labels.LabelsStorageError, match="Cannot write to the labels folder .*FER_LABELS_DIR"):
            call()
    assert labels.corrections_path(tmp_path).read_bytes() == before
    assert len(labels.read_corrections(tmp_path).rows) == 1  # reading works without the lock


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_read_only_folder_by_permissions(tmp_path):
    labels.add_correction(face(1), "sad", "ana", labels_dir=tmp_path)
    os.chmod(tmp_path, 0o555)
    os.chmod(tmp_path / "corrections.csv", 0o444)
    try:
        with pytest.raises(labels.LabelsStorageError, match="Cannot write"):
            labels.add_correction(face(2), "sad", "ana", labels_dir=tmp_path)
        assert len(labels.read_corrections(tmp_path).rows) == 1
    finally:
        os.chmod(tmp_path, 0o755)


def test_full_disk_gives_a_clear_error_and_leaves_no_partial_row(tmp_path, monkeypatch):
    labels.add_correction(face(1), "sad", "ana", labels_dir=tmp_path)
    before = labels.corrections_path(tmp_path).read_bytes()
    real_write = os.write

    def full(fd, data):
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(labels.LabelsStorageError, match="is full"):
        labels.add_correction(face(2), "sad", "ana", labels_dir=tmp_path)
    monkeypatch.setattr(os, "write", real_write)
    assert labels.corrections_path(tmp_path).read_bytes() == before
    labels.add_correction(face(3), "sad", "ana", labels_dir=tmp_path)
    assert len(labels.read_corrections(tmp_path, strict=True).rows) == 2


def test_flagging_saves_once_per_face_and_is_capped(tmp_path, monkeypatch):
    probabilities = [0.1, 0.6, 0.2, 0.1]
    sha = labels.flag_for_review(face(1), probabilities, "vgg_small", "predict tab", labels_dir=tmp_path)
    assert labels.flag_for_review(face(1), probabilities, "vgg_small", "predict tab", labels_dir=tmp_path) == sha
    flagged = labels.read_flagged(tmp_path)
    assert [row["image_sha256"] for row in flagged.rows] == [sha] and flagged.problems == []
    assert labels.parse_probabilities(flagged.rows[0]["model_probabilities"])["sad"] == 0.6
    assert (tmp_path / flagged.rows[0]["image_path"]).is_file()

    monkeypatch.setattr(labels, "MAX_FLAGGED", 2)
    labels.flag_for_review(face(2), None, "vgg_small", "predict tab", labels_dir=tmp_path)
    with pytest.raises(labels.LabelsStorageError, match="already holds 2"):
        labels.flag_for_review(face(3), None, "vgg_small", "predict tab", labels_dir=tmp_path)
    assert not labels.face_path(face_sha256(face(3)), tmp_path).exists()
    assert len(labels.read_flagged(tmp_path).rows) == 2


# ---------------------------------------------------------------------------------------------------- CLI


def exit_status(argv) -> int:
    """main's return value, or the status argparse exits with on a usage error."""
    try:
        return labels.main(argv)
    except SystemExit as exit_:
        return exit_.code


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error, error
    return error


def test_cli_add_and_summary(tmp_path, capsys):
    image = tmp_path / "crop.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3)).astype(np.uint8)).save(image)
    folder = tmp_path / "labels"
    assert labels.main(["add", "--labels-dir", str(folder), "--image", str(image), "--label", "sad",
                        "--reviewer", "ana"]) == 0
    assert "labelled sad by ana" in capsys.readouterr().out
    assert labels.main(["add", "--labels-dir", str(folder), "--image", str(image), "--label", "Neutral",
                        "--reviewer", "ben", "--source", "=cmd"]) == 0
    rows = labels.read_corrections(folder).rows
    assert [row["source"] for row in rows] == ["crop.png", "'=cmd"]

    from fer.images import load_image
    from fer.preprocess import preprocess_face

    expected = preprocess_face(load_image(image))
    assert rows[0]["image_sha256"] == face_sha256(expected)
    assert np.array_equal(labels.load_saved_face(rows[0]["image_sha256"], folder), expected)

    with labels.corrections_path(folder).open("a") as stream:
        stream.write("junk\n")
    capsys.readouterr()
    assert labels.main(["summary", "--labels-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "2 rows" in out and "1 distinct images" in out and "unresolved" in out and "malformed: line 4" in out
    assert "ana vs ben: 1 images, agreement 0.000" in out
    assert labels.main(["summary", "--labels-dir", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["images"], summary["agreement"]["unresolved"]) == (2, 1, 1)
    assert summary["agreement"]["reviewers"] == {"ana": 1, "ben": 1}
    assert summary["malformed"] == [{"line": 4, "problem": "has 1 fields, expected 11"}]


@pytest.mark.parametrize("changes, message", [
    ({"--label": "angry"}, "Unknown label 'angry'"),
    ({"--reviewer": ""}, "reviewer name is required"),
    ({"--image": "missing.png"}, "No such file"),
    ({"--image": "not-an-image.png"}, "not an image"),
    ({"--label": None}, "the following arguments are required: --label"),
])
def test_cli_add_errors_are_one_line(tmp_path, capsys, monkeypatch, changes, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-an-image.png").write_text("hello")
    Image.fromarray(face(1)).save(tmp_path / "face.png")
    options = {"--labels-dir": str(tmp_path / "labels"), "--image": "face.png", "--label": "sad", "--reviewer": "ana",
               **changes}
    argv = ["add"] + [item for flag, value in options.items() if value is not None for item in (flag, value)]
    assert exit_status(argv) == 2
    assert message in one_line_error(capsys)
    assert not labels.corrections_path(tmp_path / "labels").exists()


def test_cli_in_a_real_process_never_shows_a_traceback(tmp_path):
    Image.fromarray(face(1)).save(tmp_path / "face.png")
    result = subprocess.run([sys.executable, "-m", "fer.labels", "add", "--labels-dir", str(tmp_path / "labels"),
                             "--image", str(tmp_path / "face.png"), "--label", "angry", "--reviewer", "ana"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: Unknown label") and result.stderr.count("\n") == 1


def test_threads_in_one_process_append_safely(tmp_path):
    """Gradio runs handlers in threads: each append takes its own lock, so threads serialise like processes."""
    from concurrent.futures import ThreadPoolExecutor

    def write(worker):
        for index in range(25):
            labels.add_correction(face(worker * 100 + index), "sad", f"thread{worker}", labels_dir=tmp_path)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(4)))
    read = labels.read_corrections(tmp_path, strict=True)
    assert sorted(int(row["row_id"]) for row in read.rows) == list(range(1, 101))
