"""Annotators' votes: the file format, FERPlus's majority rule, and the label rule that training, evaluation, the
gate and the review queue share."""

import json

import numpy as np
import pytest

from fer import calibrate, evaluate, gate, labels, lite, review, review_view, train, votes
from fer.config import CLASS_NAMES
from fer.corrections import read as read_corrections
from fer.data import folder_classes, load_faces
from fer.errors import DataError
from fer.predict import load_predictor
from conftest import write_face_tree

HEADER = "path,fer2013_label," + ",".join(votes.VOTE_COLUMNS)
# counts in VOTE_COLUMNS order: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
NEUTRAL_7_SAD_3 = (7, 0, 0, 3, 0, 0, 0, 0, 0, 0)
SAD_8 = (1, 0, 0, 8, 1, 0, 0, 0, 0, 0)
SPLIT = (4, 0, 0, 4, 2, 0, 0, 0, 0, 0)  # no class has more than half


def counts(*rows):
    return np.array(rows, dtype=np.int64)


def write_votes(path, rows):
    """A votes CSV: rows of (path relative to the data root, folder label, counts)."""
    lines = [HEADER] + [f"{face},{folder}," + ",".join(map(str, values)) for face, folder, values in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_consensus_follows_ferplus_majority_rule():
    found = votes.consensus(counts(
        NEUTRAL_7_SAD_3,
        (4, 0, 0, 1, 3, 2, 0, 0, 0, 0),  # the README's example: outliers dropped, neutral 4 of 9: no majority
        (5, 1, 0, 0, 0, 0, 0, 0, 4, 0),  # neutral 5 of 9 once the single happy vote is dropped: a majority
        (0, 0, 0, 2, 6, 2, 0, 0, 0, 0),  # anger: not one of the four classes
        (0, 0, 0, 0, 0, 0, 0, 0, 3, 7),  # not a face
        SPLIT,
    ))
    assert found.tolist() == [CLASS_NAMES.index("neutral"), -1, CLASS_NAMES.index("neutral"), -1, -1, -1]
    assert votes.consensus(counts((0, 0, 0, 2, 6, 2, 0, 0, 0, 0)), ("happy", "angry")).tolist() == [1]


def test_distribution_agreement_and_counts_as_people_read_them():
    shares = votes.distribution(counts((3, 1, 0, 6, 0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 9, 0, 0, 0, 1, 0)))
    np.testing.assert_allclose(shares[0], [0.0, 6 / 9, 3 / 9, 0.0], rtol=1e-6)  # happy's single vote is an outlier
    np.testing.assert_array_equal(shares[1], 0.0)  # no vote for any of the four classes
    clear = votes.agreement(counts(NEUTRAL_7_SAD_3, SAD_8)) >= votes.CLEAR_SHARE
    assert clear.tolist() == [[False, False, True, False], [False, True, False, False]]
    assert votes.format_counts(NEUTRAL_7_SAD_3) == "neutral 7 · sad 3"
    assert votes.format_counts((0,) * 8 + (2, 8)) == "not a face 8 · unknown 2"
    assert votes.split_votes(counts(SPLIT, SAD_8)).tolist() == [True, False]


def test_read_reports_malformed_rows_by_line_and_strict_stops_at_the_first(tmp_path):
    path = tmp_path / "votes.csv"
    path.write_text("\n".join([
        HEADER,
        "train/sad/a.png,sad," + ",".join(map(str, SAD_8)),
        "train/sad/b.png,sad,1,2,3",  # too few fields
        "train/sad/c.png,sad," + ",".join(["x"] * 10),  # not numbers
        "train/sad/d.png,sad," + ",".join(["-1"] * 10),  # out of range
        "Train/Sad/A.png,sad," + ",".join(map(str, SAD_8)),  # the first face again (paths compare case-blind)
    ]) + "\n")
    read = votes.read(path)
    assert len(read) == 1 and [line for line, _ in read.problems] == [3, 4, 5, 6]
    assert read.lookup(["/anywhere/data/train/sad/a.png", "train/sad/zzz.png"]).tolist() == [0, -1]
    with pytest.raises(DataError, match="line 3"):
        votes.read(path, strict=True)
    (tmp_path / "bad.csv").write_text("path,neutral\nx,1\n")
    with pytest.raises(DataError, match="lacks happiness"):
        votes.read(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="No votes file"):
        votes.read(tmp_path / "missing.csv")


@pytest.fixture
def voted_data(tmp_path):
    """A data root with four class folders and an angry one, and votes for some of its faces."""
    root = tmp_path / "data"
    write_face_tree(root / "train", per_class=6, classes=(*CLASS_NAMES, "angry"), seed=1)
    write_face_tree(root / "validation", per_class=3, classes=(*CLASS_NAMES, "angry"), seed=2)
    rows = [
        ("train/sad/face_000.png", "sad", NEUTRAL_7_SAD_3),  # filed sad, neutral to its annotators
        ("train/angry/face_000.png", "angry", SAD_8),  # filed angry, sad: joins the served classes
        ("train/angry/face_001.png", "angry", (0, 0, 0, 0, 10, 0, 0, 0, 0, 0)),  # angry: stays out
        ("train/neutral/face_000.png", "neutral", SPLIT),  # no consensus: left out, whatever its folder
        ("validation/sad/face_000.png", "sad", NEUTRAL_7_SAD_3),
        ("validation/angry/face_000.png", "angry", SAD_8),
        ("validation/happy/face_000.png", "happy", (0, 10, 0, 0, 0, 0, 0, 0, 0, 0)),
    ]
    return root, write_votes(tmp_path / "votes.csv", rows)


def test_label_faces_applies_reviewers_then_votes_then_folders(voted_data, tmp_path):
    root, votes_path = voted_data
    folders = folder_classes(root / "train")
    assert folders == ("angry", "happy", "neutral", "sad", "surprise")
    dataset = load_faces(root / "train", folders)
    read = votes.read(votes_path)
    labelled, summary = votes.label_faces(dataset, CLASS_NAMES, read, "distribution")
    label_of = {path.split("data/")[-1]: labelled.classes[label] for path, label in zip(labelled.paths, labelled.labels)}
    assert label_of["train/sad/face_000.png"] == "neutral"
    assert label_of["train/angry/face_000.png"] == "sad"
    assert "train/angry/face_001.png" not in label_of and "train/neutral/face_000.png" not in label_of
    assert label_of["train/sad/face_001.png"] == "sad"  # no votes: its folder
    assert not any(key.startswith("train/angry/") and key != "train/angry/face_000.png" for key in label_of)
    assert summary["with_votes"] == 4 and summary["no_consensus_left_out"] == 2 and len(labelled) == 24
    targets = dict(zip(labelled.paths, labelled.targets))
    sad_face = next(path for path in labelled.paths if path.endswith("train/sad/face_000.png"))
    np.testing.assert_allclose(targets[sad_face], [0.0, 0.3, 0.7, 0.0], rtol=1e-6)  # the vote distribution
    folder_face = next(path for path in labelled.paths if path.endswith("train/sad/face_001.png"))
    np.testing.assert_array_equal(targets[folder_face], [0.0, 1.0, 0.0, 0.0])

    # A reviewer overrides the annotators: the face becomes sad, with a one-hot target.
    labels_dir = tmp_path / "labels"
    labels.add_correction(dataset.images[dataset.paths.index(sad_face)], "sad", "ana", labels_dir=labels_dir)
    corrected, summary = votes.label_faces(dataset, CLASS_NAMES, read, "distribution", read_corrections(labels_dir))
    index = corrected.paths.index(sad_face)
    assert corrected.classes[corrected.labels[index]] == "sad"
    np.testing.assert_array_equal(corrected.targets[index], [0.0, 1.0, 0.0, 0.0])
    assert summary["corrections"]["labels_changed"] == 1


def test_one_extra_vote_changes_few_consensus_labels():
    assert votes.one_vote_changes(counts(NEUTRAL_7_SAD_3, SAD_8, (5, 0, 0, 4, 0, 0, 0, 0, 1, 0))) == pytest.approx(1 / 3)


def test_one_annotator_is_scored_against_the_other_annotators_consensus():
    human = votes.one_annotator(counts(
        (0, 0, 0, 10, 0, 0, 0, 0, 0, 0),  # unanimous sad: every annotator agrees with the other nine
        (2, 0, 0, 8, 0, 0, 0, 0, 0, 0),  # sad 8: a sad voter is right (0.8), a neutral voter wrong (0.2)
        SPLIT,  # no consensus: not scored
    ))
    assert human["faces"] == 2
    assert human["accuracy"] == pytest.approx(1.8 / 2)
    sad, neutral = CLASS_NAMES.index("sad"), CLASS_NAMES.index("neutral")
    assert human["confusion"][sad][sad] == pytest.approx(1.8)
    assert human["confusion"][sad][neutral] == pytest.approx(0.2)
    assert human["f1"]["sad"] == pytest.approx(2 * 1.8 / (1.8 + 2.0))
    assert human["f1"]["neutral"] == 0.0
    # a vote outside the classes counts against the annotator, in the "other" column
    other = votes.one_annotator(counts((0, 0, 0, 7, 3, 0, 0, 0, 0, 0)))
    assert other["accuracy"] == pytest.approx(0.7)
    assert other["confusion"][sad][len(CLASS_NAMES)] == pytest.approx(0.3)


def test_training_on_votes_records_both_figures_and_a_fine_tune_inherits_the_votes(voted_data, tmp_path, capsys):
    root, votes_path = voted_data
    out = tmp_path / "models" / "voted"
    assert train.main(["--data", str(root), "--votes", str(votes_path), "--vote-targets", "distribution",
                       "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "8", "--out", str(out),
                       "--class-weighting", "--class-weight-power", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "consensus validation: accuracy" in printed and "validation (folder labels): accuracy" in printed
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["data"]["votes"]["file"] == str(votes_path)
    assert metadata["train_config"]["vote_targets"] == "distribution"
    assert metadata["data"]["train_counts"] == {"happy": 6, "sad": 6, "neutral": 6, "surprise": 6}
    consensus, folder = metadata["metrics"]["validation_consensus"], metadata["metrics"]["validation"]
    assert consensus["labels"] == "consensus" and folder["labels"] == "folder"
    assert consensus["n_images"] == 13 and folder["n_images"] == 12  # + the angry face that is sad, - none
    assert set(consensus["clear_recall"]) == set(CLASS_NAMES)
    assert consensus["clear_recall"]["sad"]["support"] == 1 and consensus["clear_recall"]["neutral"]["support"] == 1
    assert metadata["lite"]["check"]["faces"] == 13  # the LiteRT copy is checked on the consensus too
    assert lite.main(["--check-data", str(root / "validation"), str(out.with_suffix(".keras"))]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["lite"]["check"]["faces"] == 13
    assert calibrate.main([str(out.with_suffix(".keras")), "--data", str(root), "--no-flip-average"]) == 0
    recalibrated = json.loads(out.with_suffix(".json").read_text())
    assert "on 13 faces" in capsys.readouterr().out and not recalibrated["inference"]["flip_average"]
    assert recalibrated["metrics"]["validation_consensus"]["n_images"] == 13
    assert recalibrated["metrics"]["validation"]["n_images"] == 12

    tuned = tmp_path / "models" / "tuned"
    assert train.main(["--data", str(root), "--init-from", str(out.with_suffix(".keras")), "--epochs", "1",
                       "--batch-size", "8", "--out", str(tuned)]) == 0
    tuned_metadata = json.loads(tuned.with_suffix(".json").read_text())
    assert tuned_metadata["data"]["votes"]["file"] == str(votes_path)
    # ... and weighs its labels as its parent did: the vote distribution, classes balanced halfway
    assert {key: tuned_metadata["train_config"][key] for key in train.INHERITED_LABELLING} == {
        "vote_targets": "distribution", "class_weighting": True, "class_weight_power": 0.5}
    config = train.fine_tune_config(metadata)
    assert (config.vote_targets, config.class_weighting, config.class_weight_power) == ("distribution", True, 0.5)


def test_a_corrupt_votes_file_stops_training_before_anything_is_written(voted_data, tmp_path, capsys):
    root, _ = voted_data
    out = tmp_path / "models" / "never"
    (tmp_path / "broken.csv").write_text("path,whatever\n")
    assert train.main(["--data", str(root), "--votes", str(tmp_path / "broken.csv"), "--epochs", "1",
                       "--out", str(out)]) == 2
    assert "is not a votes file" in capsys.readouterr().err
    assert not out.parent.exists()


def test_evaluate_scores_against_the_consensus_and_records_it(voted_data, model_path, tmp_path, capsys):
    root, votes_path = voted_data
    predictor = load_predictor(model_path)
    report = evaluate.evaluate(predictor, root / "validation", votes=votes.read(votes_path))
    assert report["labels"] == "consensus" and report["n_images"] == 13
    assert report["per_class"]["sad"]["support"] == 3 - 1 + 1 and report["per_class"]["neutral"]["support"] == 4
    assert evaluate.evaluate(predictor, root / "validation")["n_images"] == 12

    copy = tmp_path / "models"
    copy.mkdir()
    for suffix in (".keras", ".json"):
        (copy / f"m{suffix}").write_bytes(model_path.with_suffix(suffix).read_bytes())
    assert evaluate.main(["--model", str(copy / "m.keras"), "--data", str(root / "validation"),
                          "--votes", str(votes_path), "--record"]) == 0
    assert "clear recall" in capsys.readouterr().out
    recorded = json.loads((copy / "m.json").read_text())["metrics"]["validation_consensus"]
    assert recorded["n_images"] == 13 and recorded["command"].startswith("python -m fer.evaluate")


def test_gate_judges_on_the_consensus_when_the_served_model_learned_from_votes(voted_data, tmp_path):
    root, votes_path = voted_data
    models = tmp_path / "models"
    assert train.main(["--data", str(root), "--votes", str(votes_path), "--arch", "seed_cnn", "--epochs", "1",
                       "--batch-size", "8", "--out", str(models / "voted"), "--make-current"]) == 0
    assert train.main(["--data", str(root), "--arch", "seed_cnn", "--epochs", "1", "--batch-size", "8",
                       "--out", str(models / "folders")]) == 0
    result = gate.gate(models / "folders.keras", models / "voted.keras", root, gate.GateRule())
    assert result.votes == str(votes_path)
    assert result.candidate_report["labels"] == "consensus" and result.candidate_report["n_images"] == 13
    assert "consensus" in result.format() and result.to_dict()["labels"] == "consensus"


def test_review_queue_shows_the_votes_and_puts_disputed_faces_first(voted_data, predictor, tmp_path):
    root, votes_path = voted_data
    queue = review.build_queue("dataset", predictor=predictor, data_dir=root / "train", labels_dir=tmp_path / "labels",
                               focus=None, oos_path=tmp_path / "none.npz", cache_dir=tmp_path / "cache",
                               votes=votes.read(votes_path))
    disputed = {"train/sad/face_000.png", "train/angry/face_000.png", "train/neutral/face_000.png"}
    assert {item.source for item in queue[:3]} == disputed
    assert all(item.score > 1 for item in queue[:3]) and all(item.score <= 1 for item in queue[3:])
    first = next(item for item in queue if item.source == "train/sad/face_000.png")
    assert first.votes == "neutral 7 · sad 3" and first.consensus_label == "neutral" and first.given_label == "sad"
    assert first.original_label == "neutral"  # what the label rule says before review
    shown = review_view.describe_item(first)
    assert "**Annotators:** neutral 7 · sad 3 · **consensus:** neutral" in shown and "sad (folder)" in shown
    angry = next(item for item in queue if item.source == "train/angry/face_000.png")
    assert angry.consensus_label == "sad" and angry.given_label == ""
    assert any(item.source == "train/angry/face_002.png" for item in queue)  # every folder takes part

    plain = review.build_queue("dataset", predictor=predictor, data_dir=root / "train",
                               labels_dir=tmp_path / "labels", focus=None, oos_path=tmp_path / "none.npz",
                               cache_dir=tmp_path / "cache")
    assert all(item.votes == "" and not item.source.startswith("train/angry") for item in plain)


def test_model_tab_shows_consensus_figures_with_clear_recall(voted_data, tmp_path):
    root, votes_path = voted_data
    models = tmp_path / "models"
    assert train.main(["--data", str(root), "--votes", str(votes_path), "--arch", "seed_cnn", "--epochs", "1",
                       "--batch-size", "8", "--out", str(models / "voted"), "--make-current"]) == 0
    summary, per_class, confusion, history = review_view.model_overview(models)
    assert "consensus (13 faces)" in summary and "folder labels (12 faces)" in summary
    assert "recall on clear faces" in per_class.columns and per_class["support"].sum() == 13
    assert history.loc[0, "accuracy (consensus)"] is not None


def test_cli_summarises_a_split_and_the_review_queue_finds_its_votes_file(voted_data, model_path, tmp_path,
                                                                         monkeypatch, capsys, caplog):
    root, votes_path = voted_data
    assert votes.main([str(votes_path), "--data", str(root / "validation")]) == 0
    printed = capsys.readouterr().out
    assert "15 faces, 3 with votes, 3 with a consensus" in printed and "one more vote" in printed
    assert votes.main([str(tmp_path / "none.csv")]) == 2
    assert "No votes file" in capsys.readouterr().err

    predictor = load_predictor(model_path)
    monkeypatch.delenv("FER_VOTES_FILE", raising=False)
    assert review.load_votes(predictor=predictor) is None  # trained on folders: no votes
    monkeypatch.setenv("FER_VOTES_FILE", str(votes_path))
    assert len(review.load_votes(predictor=predictor)) == 7
    trained = {"data": {"votes": {"file": str(tmp_path / "moved.csv")}}}
    monkeypatch.delenv("FER_VOTES_FILE")
    assert review.load_votes(predictor=type("P", (), {"metadata": trained})()) is None
    assert "FER_VOTES_FILE" in caplog.text


def test_a_models_votes_are_found_where_they_are_now(tmp_path, monkeypatch):
    monkeypatch.delenv("FER_VOTES_FILE", raising=False)
    assert votes.default_for({"data": {}}) is None
    trained = {"data": {"votes": {"file": "tests/test_votes.py"}}}  # relative to the project root
    monkeypatch.chdir(tmp_path)
    assert votes.default_for(trained) == votes.PROJECT_ROOT / "tests" / "test_votes.py"
    monkeypatch.setenv("FER_VOTES_FILE", str(tmp_path / "copy.csv"))  # the copy on this machine wins
    assert votes.default_for(trained) == tmp_path / "copy.csv"
    assert votes.default_for({"data": {}}) is None  # but never turns a folder-label model into a votes one
