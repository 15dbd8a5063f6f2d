"""The review-and-retrain loop on FER2013's real mislabels: does the queue find them, and does fixing them help?

    PYTHONPATH=. .venv/bin/python benchmarks/consensus_loop.py --data ../shared/data/fer2013 \
        --votes ../shared/data/fer2013/ferplus_votes.csv --model models/vgg_small_reg.keras --k 100 1000 5000 \
        --epochs 2 --json runs/consensus_loop.json                      # the figures in benchmarks/README.md
    PYTHONPATH=. .venv/bin/python benchmarks/consensus_loop.py --limit 300 --k 20 50 --epochs 1   # a smoke run

FERPlus's ten annotators a face (fer.votes) are the reviewers' corrections done at scale, so they can stand in for
a reviewer who agrees with the crowd. In memory and one temporary folder (nothing under data, models/ or labels/ is
written):
  1. hide     a seeded random half of the training faces lose their votes: they keep only their folder label, as
              faces nobody has reviewed. The other half keep theirs (labelled by consensus, trained on their vote
              distribution, as `fer.train --votes --vote-targets distribution` does).
  2. rank     fer.review.build_queue ranks the hidden faces (every folder, every class: K reaches 5,000) with the
              model to be fine-tuned, as the Review tab does; the same K faces are also drawn in random order from
              all hidden faces (a reviewer working without the queue).
  3. answer   a simulated reviewer gives each of the K faces its consensus label (not_a_face where the annotators
              agree on none of the four classes) through fer.review.ReviewSession, so the rows land in a labels
              CSV; fer.votes.label_faces resolves them by the label rule (a correction overrides the folder).
  4. retrain  fine-tune the model (fer.train.fine_tune_config and fit, what `fer.train --fine-tune` runs) on the
              labelled set, with no corrections (K = 0) and with each K's corrections; score each on consensus
              validation (2,600 faces): accuracy, sad and neutral F1, recall on clear sad faces.

The model must not have seen the hidden faces' votes: the default, `vgg_small_reg`, was trained on folder labels
alone (and is fast enough to fine-tune seven times). Each arm uses the same seed and settings, so the labels are the
only difference between arms.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fer import review
from retrain_loop import report
from fer import train as fer_train
from fer import votes as fer_votes
from fer.config import CLASS_NAMES, PROJECT_ROOT
from fer.corrections import read as read_corrections
from fer.data import find_split, folder_classes, list_images, load_face_files
from fer.errors import FerError
from fer.evaluate import score
from fer.labels import NOT_A_FACE
from fer.predict import Predictor, load_predictor

logger = logging.getLogger("consensus_loop")

REVIEWER = "simulated-reviewer"  # answers every face with its annotators' consensus
WATCHED = ("sad", "neutral")


def load_split(directory: Path, predictor, limit: int | None, rng: np.random.Generator):
    """Every class folder's faces as the predictor reads them (FaceDataset in the folders' own classes); with
    `limit`, a random subset of at most that many faces a folder (smoke runs)."""
    folders = folder_classes(directory)
    paths, labels = list_images(directory, folders)
    if limit:
        labels_array = np.asarray(labels)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels_array == index))[:limit]
                                       for index in range(len(folders))]))
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return load_face_files(paths, labels, folders, predictor.preprocess_config, source=directory)


def visible_votes(votes: fer_votes.Votes, hidden_paths: list[str]) -> fer_votes.Votes:
    """`votes` without the rows of the hidden faces (a new Votes in memory; the file is untouched)."""
    hidden = set(votes.lookup(hidden_paths).tolist()) - {-1}
    keep = np.array([row not in hidden for row in range(len(votes))])
    new_row = np.cumsum(keep) - 1
    rows = {key: int(new_row[row]) for key, row in votes.rows.items() if keep[row]}
    return fer_votes.Votes(votes.path, votes.sha256 + f"-without-{len(hidden)}", votes.counts[keep], rows,
                           votes.depth, [])


def answer(items: list[review.QueueItem], consensus_of: dict[str, str], labels_dir: Path) -> None:
    """The simulated reviewer: each face's consensus (not_a_face where there is none), saved as the app saves it."""
    session = review.ReviewSession(items, REVIEWER, labels_dir)
    while session.current is not None:
        session.record(consensus_of[session.current.sha256])


def fine_tune(train, consensus_validation, votes, parent: Path, epochs: int, seed: int) -> dict:
    """Fine-tune `parent` on `train` as `fer.train --fine-tune` does and score it on consensus validation."""
    metadata = load_predictor(parent).metadata
    config = fer_train.fine_tune_config(metadata, epochs=epochs, seed=seed, vote_targets="distribution")
    with tempfile.TemporaryDirectory(prefix="fer-consensus-loop-model-") as folder, \
            contextlib.redirect_stdout(sys.stderr):  # Keras's per-epoch lines are progress; stdout keeps the report
        model, _ = fer_train.fit(train, consensus_validation, config, Path(folder) / "model", init_from=parent)
    probabilities = Predictor(model, metadata).predict_faces(consensus_validation.images)
    return score(consensus_validation, probabilities, votes)


def summarize(report: dict) -> dict:
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            **{f"{name}_f1": report["per_class"][name]["f1"] for name in CLASS_NAMES},
            "clear_sad_recall": report["clear_recall"]["sad"]["recall"]}


def run(data_root: Path, votes_path: Path, model: Path, ks: list[int], epochs: int, seed: int,
        limit: int | None, workspace: Path) -> dict:
    seconds: dict[str, float] = {}
    clock = time.time()
    predictor = load_predictor(model)
    votes = fer_votes.read(votes_path)
    if fer_votes.trained_on(predictor.metadata):
        raise ValueError(f"{model.name} was trained on votes ({fer_votes.trained_on(predictor.metadata)}): it has seen "
                         "the hidden faces' consensus. Pick a model trained on folder labels (--model).")
    rng = np.random.default_rng(seed)
    train_dir, validation_dir = find_split(data_root, "train"), find_split(data_root, "validation")
    train = load_split(train_dir, predictor, limit, rng)
    validation = load_split(validation_dir, predictor, limit, rng)
    consensus_validation, _ = fer_votes.label_faces(validation, CLASS_NAMES, votes)
    seconds["load"] = time.time() - clock

    # 1. hide the votes of a random half of the training faces
    hidden = np.sort(rng.permutation(len(train))[: len(train) // 2])
    hidden_paths = [train.paths[i] for i in hidden]
    visible = visible_votes(votes, hidden_paths)
    counts, _ = votes.counts_for(hidden_paths)
    agreed = fer_votes.consensus(counts)
    shas = train.hashes()
    consensus_of = {shas[i]: CLASS_NAMES[label] if label >= 0 else NOT_A_FACE for i, label in zip(hidden, agreed)}
    folder_label = np.array([CLASS_NAMES.index(train.classes[train.labels[i]]) if train.classes[train.labels[i]]
                             in CLASS_NAMES else -1 for i in hidden])
    mislabelled = {shas[i] for i, label, folder in zip(hidden, agreed, folder_label) if label != folder}

    # 2. rank the hidden faces; and a random order of the same faces
    clock = time.time()
    queue = review.build_queue("dataset", predictor=predictor, data_dir=train_dir, labels_dir=workspace / "unused",
                               focus=None, oos_path=workspace / "none.npz", cache_dir=workspace / "cache",
                               dataset=train.subset(hidden), votes=visible)
    by_sha = {item.sha256: item for item in queue}
    shuffled = [by_sha[sha] for sha in dict.fromkeys(shas[i] for i in rng.permutation(hidden)) if sha in by_sha]
    seconds["rank"] = time.time() - clock

    # 3 + 4. answer K faces of each order, retrain, score; K = 0 is the control
    clock = time.time()
    arms = {"none": []} | {f"{order} {k}": items[:k] for k in ks
                           for order, items in (("queue", queue), ("random", shuffled))}
    results = {}
    for name, items in arms.items():
        labels_dir = workspace / name.replace(" ", "-")
        answer(items, consensus_of, labels_dir)
        corrections = read_corrections(labels_dir) if items else None
        labelled, summary = fer_votes.label_faces(train, CLASS_NAMES, visible, "distribution", corrections,
                                                  set(validation.hashes()))
        logger.info("fine-tuning %s on %d faces (%s)", model.stem, len(labelled), name)
        report = fine_tune(labelled, consensus_validation, votes, model, epochs, seed)
        found = sum(item.sha256 in mislabelled for item in items)
        results[name] = {"k": len(items), "mislabels_found": found, "train_faces": len(labelled),
                         "corrections": summary.get("corrections"), **summarize(report)}
        logger.info("%s: %s", name, results[name])
    seconds["retrain"] = time.time() - clock
    before = score(consensus_validation, predictor.predict_faces(consensus_validation.images), votes)
    return {"setup": {"data": str(data_root), "votes": str(votes_path), "model": model.stem, "epochs": epochs,
                      "seed": seed, "limit": limit, "train_faces": len(train), "hidden_faces": len(hidden),
                      "hidden_mislabelled": len(mislabelled), "queue_faces": len(queue),
                      "consensus_validation_faces": len(consensus_validation)},
            "before": summarize(before), "arms": results, "seconds": seconds}


def format_results(results: dict) -> str:
    setup = results["setup"]
    lines = [f"consensus loop: {setup['model']} fine-tuned {setup['epochs']} epoch(s), seed {setup['seed']}; "
             f"{setup['hidden_faces']} of {setup['train_faces']} training faces hidden, {setup['hidden_mislabelled']} "
             f"of them mislabelled (folder label differs from the consensus, or none)",
             f"scored on {setup['consensus_validation_faces']} consensus-validation faces", "",
             f"  {'arm':<14}{'K':>6}{'mislabels':>11}{'accuracy':>10}{'macro-F1':>10}{'sad F1':>8}{'neut. F1':>10}"
             f"{'clear sad':>11}"]
    rows = [("before", {"k": 0, "mislabels_found": 0, **results["before"]})]
    rows += list(results["arms"].items())
    for name, row in rows:
        share = f"{row['mislabels_found'] / row['k']:.0%}" if row["k"] else "-"
        lines.append(f"  {name:<14}{row['k']:>6}{share:>11}{row['accuracy']:>10.4f}{row['macro_f1']:>10.4f}"
                     f"{row['sad_f1']:>8.3f}{row['neutral_f1']:>10.3f}{row['clear_sad_recall']:>11.3f}")
    lines += ["", "mislabels: share of the K faces whose folder label was not their consensus (what a reviewer fixes)",
              "runtime: " + ", ".join(f"{name} {value / 60:.1f} min" for name, value in results["seconds"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/consensus_loop.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=review.default_data_dir().parent)
    parser.add_argument("--votes", type=Path, default=review.default_data_dir().parent / "ferplus_votes.csv")
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "models" / "vgg_small_reg.keras",
                        help="a model trained on folder labels (it is read, never written)")
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1000, 5000], help="faces the reviewer answers")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="at most this many faces a folder (smoke runs)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if min(args.k) < 1 or args.epochs < 1:
        parser.error("--k and --epochs must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="fer-consensus-loop-") as workspace:
            results = run(args.data, args.votes, args.model, sorted(args.k), args.epochs, args.seed, args.limit,
                          Path(workspace))
    except (FerError, ValueError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    results["seconds"]["total"] = time.time() - started
    report(format_results(results), results, args.json)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
