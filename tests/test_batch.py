"""fer.batch and `python -m fer.predict FOLDER --csv OUT.csv`: a folder of photos, one CSV row per face, bad files
reported and skipped without stopping the batch."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from fer import batch, predict
from fer.config import CLASS_NAMES

HEADER = ["file", "face", "x", "y", "w", "h", *CLASS_NAMES, "label", "note"]


@pytest.fixture
def folder(tmp_path, astronaut):
    """photos/ with faces at two depths, a photo without a face, unreadable files, a text file and hidden files."""
    root = tmp_path / "photos"
    (root / "day 2" / "morning").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    Image.fromarray(astronaut).save(root / "a.jpg")
    Image.fromarray(np.tile(astronaut, (1, 2, 1))).save(root / "day 2" / "two.png")  # two faces
    Image.fromarray(np.full((80, 80), 128, np.uint8)).save(root / "day 2" / "morning" / "wall.png")
    Image.fromarray(astronaut).save(root / "day 2" / "=sum(A1).PNG")  # a name a spreadsheet would run
    (root / "broken.jpg").write_text("not a photo")
    (root / "day 2" / "cut.png").write_bytes((root / "a.jpg").read_bytes()[:200])
    (root / "notes.txt").write_text("session notes")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    Image.fromarray(astronaut).save(root / ".thumbnails" / "a.jpg")
    return root


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    return rows[0], [dict(zip(rows[0], row)) for row in rows[1:]]


def test_image_files_walks_folders_sorted_and_skips_hidden_and_other_files(folder, tmp_path):
    extra = tmp_path / "extra.dat"  # named directly: taken whatever its extension
    extra.write_bytes(b"x")
    found, ignored = batch.image_files([folder, extra])
    relative = [str(path.relative_to(folder)) if path.is_relative_to(folder) else path.name for path in found]
    assert relative == ["a.jpg", "broken.jpg", "day 2/=sum(A1).PNG", "day 2/cut.png", "day 2/two.png",
                        "day 2/morning/wall.png", "extra.dat"]
    assert [path.name for path in ignored] == ["notes.txt"]


def test_write_csv_rows_per_face_and_every_file_accounted_for(predictor, folder, tmp_path):
    paths, _ = batch.image_files([folder])
    skipped = []
    summary = batch.write_csv(predictor, paths, tmp_path / "faces.csv", on_skip=lambda path, error: skipped.append(
        (path.name, str(error))))
    header, rows = read_rows(tmp_path / "faces.csv")
    assert header == HEADER
    assert (summary.images, summary.faces, summary.no_face, summary.skipped) == (4, 4, 1, 2)
    assert [name for name, _ in skipped] == ["broken.jpg", "cut.png"]
    assert "text file" in skipped[0][1] and "truncated" in skipped[1][1]
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"].rsplit("/", 1)[-1], []).append(row)
    assert [row["face"] for row in by_file["two.png"]] == ["1", "2"]
    for row in by_file["a.jpg"] + by_file["two.png"]:
        probabilities = [float(row[name]) for name in CLASS_NAMES]
        assert sum(probabilities) == pytest.approx(1.0, abs=2e-4) and row["note"] == ""
        assert row["label"] == CLASS_NAMES[int(np.argmax(probabilities))]
    assert by_file["wall.png"][0]["note"] == "no face found" and by_file["wall.png"][0]["face"] == ""
    assert by_file["broken.jpg"][0]["note"].startswith("skipped: ") and by_file["broken.jpg"][0]["label"] == ""
    formula = next(row for row in rows if "sum(A1)" in row["file"])
    assert not formula["file"].startswith("=")  # kept as text by a spreadsheet (fer.labels.neutralize)


def test_cli_folder_to_csv_reports_bad_files_and_goes_on(model_path, folder, tmp_path, capsys):
    status = predict.main([str(folder), "--csv", str(tmp_path / "faces.csv"), "--model", str(model_path)])
    output = capsys.readouterr()
    errors = [line for line in output.err.splitlines() if line.startswith("error: ")]
    assert status == 1 and len(errors) == 2  # two unreadable files: reported, skipped, and the batch finished
    assert "broken.jpg" in errors[0] and "cut.png" in errors[1]
    assert "passed over 1 file(s)" in output.err and "notes.txt" in output.err
    assert "4 image(s) read: 4 face(s), 1 without a face; 2 file(s) skipped" in output.err
    assert output.out == ""  # the rows went to the CSV, not to stdout
    _, rows = read_rows(tmp_path / "faces.csv")
    assert len(rows) == 4 + 1 + 2


def test_cli_folder_without_csv_prints_json_lines(model_path, folder, capsys):
    status = predict.main([str(folder / "day 2" / "morning"), "--model", str(model_path)])
    output = capsys.readouterr()
    assert status == 0 and output.out.count("\n") == 1 and '"faces": []' in output.out


def test_cli_folder_without_images_is_an_error(model_path, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert predict.main([str(tmp_path), "--csv", str(tmp_path / "out.csv"), "--model", str(model_path)]) == 2
    assert "error: no image files in" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_cli_csv_into_a_missing_folder_is_an_error(model_path, folder, tmp_path, capsys):
    status = predict.main([str(folder / "a.jpg"), "--csv", str(tmp_path / "nowhere" / "out.csv"),
                           "--model", str(model_path)])
    assert status == 2 and "error: cannot write" in capsys.readouterr().err
