"""Simulate issue 5's review-and-retrain loop on FER2013: does the queue find label noise, and does fixing it help?

    PYTHONPATH=. .venv/bin/python benchmarks/retrain_loop.py --data ../shared/data/fer2013 --k 200 --epochs 1 \
        --repeats 1 --oos-epochs 8 --json runs/retrain_loop.json          # the figures in benchmarks/README.md
    PYTHONPATH=. .venv/bin/python benchmarks/retrain_loop.py --k 200 --oos cache/oos.npz   # with a `fer.review oos` cache
    PYTHONPATH=. .venv/bin/python benchmarks/retrain_loop.py --limit 300 --k 40 --epochs 1      # a quick smoke run

Four steps, all in memory or in one temporary folder (the data folder, models/, labels/ and cache/ are not written):
  1. noise    flip K training labels, seeded: half sad -> neutral, half neutral -> sad. Only faces that occur once in
              train and never in validation are flipped, so a correction (keyed by the face's hash) fixes one image.
  2. detect   rank the noisy training set with fer.review.build_queue(dataset=noisy) (the "dataset" queue: faces
              given or predicted sad/neutral, most doubtful first; it is checked to carry the flipped labels) and
              count the flips in its top K, 2K, 5K, with the ranking's AUC, beside a random order of the same queue
              and beside the same queue ordered by other scores (1 - p(given), the former score; p(other)). The
              served model trained on the clean labels of these faces, which flatters it (in-sample); so the same
              share of validation labels is flipped and ranked too: faces the model never fitted (out of sample).
              --oos PATH (a `fer.review oos` cache) or --oos-epochs N (2-fold models trained here on the noisy
              labels) also ranks the training set out of fold, and the reviewer then works from that queue, as the
              app does once cache/oos.npz exists, unless its models answer one class for every face (then the
              in-sample queue). Last, each queue's scores are compared over --draws fresh sets of K flips (the
              probabilities do not depend on a face's own label), steadier than the one draw above.
  3. correct  a simulated reviewer gives the top K faces their true labels through fer.review.ReviewSession (which
              appends with fer.labels.add_correction) in a temporary labels folder; fer.corrections resolves them and
              applies them to the noisy training set, as `fer.train --labels` does.
  4. retrain  fine-tune a copy of the current model (fer.train.fine_tune_config, fit, finish: what `fer.train
              --fine-tune --labels` runs) on the corrected labels and, as the control, on the noisy labels, with the
              same seed and settings; --repeats seeds of each. Score them and the model before on validation, and
              apply the gate's rule (fer.gate.decide) to each.

--oos reads an out-of-fold cache if you have one (it is optional; without it the reviewer works from the in-sample
queue). Runtime on two shared CPU cores with seed_cnn, full data and the defaults (--epochs 1, --repeats 2): 15.5
minutes, of which 14 are the four fine-tuning epochs over 20k faces (2 to 4.5 minutes each); --repeats 1 halves that.
`fer.train --fine-tune` itself runs 3 epochs. --oos-epochs N adds about 2 x N epochs over half the faces: with
vgg_small on two idle cores, --repeats 1 took 9.7 minutes with --oos-epochs 4 and 16.8 with --oos-epochs 8. Fold
models need those epochs: after one epoch from scratch they answer one class for every face.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fer import corrections as fer_corrections
from fer import gate as fer_gate
from fer import review
from fer import train as fer_train
from fer.config import CLASS_NAMES, PreprocessConfig, models_dir
from fer.data import FaceDataset, find_split, list_images, load_face_files
from fer.errors import FerError
from fer.metrics import classification_report
from fer.predict import load_predictor
from fer.registry import current_model_path, read_metadata, set_current

logger = logging.getLogger("retrain_loop")

NOISE_PAIR = ("sad", "neutral")  # the flips: sad -> neutral and neutral -> sad
REVIEWER = "simulated-reviewer"  # writes the true labels of the faces the queue shows first
OOS_FOLDS = 2  # out-of-fold models for --oos-epochs: two keeps the cost at two models, each on half the faces
CUTOFFS = (1, 2, 5)  # detection is reported in the queue's top K, 2K and 5K faces
WATCHED = ("sad", "neutral")


@dataclasses.dataclass(frozen=True)
class Detection:
    """Where one ordering of a queue puts the flipped faces: how many in its top K, 2K, 5K (K = flips), its AUC."""

    ordering: str
    faces: int  # faces in the ordering
    flips: int  # flipped faces among them: K
    cutoffs: tuple[int, ...]
    hits: tuple[int, ...]  # flips in the first cutoffs[i] faces
    auc: float  # chance that a flipped face comes before an unflipped one (0.5: random order)
    median_rank: float | None  # 1-based; None when no flip is in the ordering

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------- data


def load_split(directory: Path, predictor, per_class: int | None, rng: np.random.Generator) -> FaceDataset:
    """The faces of a folder-per-class split as the predictor reads them; with `per_class`, a random subset of each
    class (in folder order), so smoke runs do not decode every file."""
    paths, labels = list_images(directory, predictor.classes)
    if per_class:
        labels_array = np.asarray(labels)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels_array == index))[:per_class]
                                       for index in range(len(predictor.classes))]))
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return load_face_files(paths, labels, predictor.classes, predictor.preprocess_config, source=directory)


def _once_and_not_in(shas: list[str], excluded: set[str]) -> set[str]:
    """Hashes that occur once in `shas` and not in `excluded`: the faces choose_flips may flip."""
    copies = collections.Counter(shas)
    return {sha for sha in shas if copies[sha] == 1 and sha not in excluded}


def choose_flips(dataset: FaceDataset, shas: list[str], excluded: set[str], k: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(K,) indices to flip: ceil(K/2) sad and floor(K/2) neutral faces, each occurring once in `dataset` and with a
    hash not in `excluded` (the other split), so one correction by hash fixes exactly that face."""
    copies = collections.Counter(shas)
    chosen = []
    for name, count in zip(NOISE_PAIR, ((k + 1) // 2, k // 2)):
        index = dataset.classes.index(name)
        eligible = [i for i in np.flatnonzero(dataset.labels == index)
                    if copies[shas[i]] == 1 and shas[i] not in excluded]
        if len(eligible) < count:
            raise ValueError(f"Flipping {k} labels needs {count} {name} faces that occur once in their split and not "
                             f"in the other; there are {len(eligible)}. Lower --k or raise --limit.")
        chosen.append(rng.choice(eligible, size=count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def flip_labels(dataset: FaceDataset, flips: np.ndarray) -> FaceDataset:
    """The dataset with sad and neutral swapped at `flips`; images and paths are shared, labels copied."""
    first, second = (dataset.classes.index(name) for name in NOISE_PAIR)
    labels = dataset.labels.copy()
    labels[flips] = np.where(dataset.labels[flips] == first, second, first)
    return FaceDataset(dataset.images, labels, dataset.paths, dataset.classes)


# ---------------------------------------------------------------------------------------------------- detection


def check_out_of_fold(path: Path, shas: list[str]) -> review.OutOfFold:
    """The cache at `path`, if it is complete and covers every training face; ValueError otherwise.

    build_queue falls back to the served model for faces a cache lacks, which would mix in-sample scores into an
    out-of-fold ranking.
    """
    oos = review.read_out_of_fold(path)
    found, _ = oos.lookup(shas)
    if not found.all():
        raise ValueError(f"{path} has out-of-fold probabilities for {int(found.sum())} of the {len(shas)} training "
                         f"faces ({oos.describe()}); finish `python -m fer.review oos` for this split or drop --oos.")
    return oos


def detection(ordering: str, queue_shas: list[str], flipped: set[str]) -> Detection:
    """Where the flipped hashes fall in `queue_shas`, an ordering of face hashes (first reviewed first)."""
    is_flip = np.array([sha in flipped for sha in queue_shas], dtype=bool)  # (faces,)
    flips, faces = int(is_flip.sum()), len(queue_shas)
    cutoffs = tuple(multiple * flips for multiple in CUTOFFS)
    hits = tuple(int(is_flip[:cutoff].sum()) for cutoff in cutoffs)
    # Unflipped faces after each flip, over all (flip, unflipped) pairs.
    unflipped_after = np.cumsum(~is_flip[::-1])[::-1]
    pairs = flips * (faces - flips)
    auc = float(unflipped_after[is_flip].sum() / pairs) if pairs else float("nan")
    ranks = np.flatnonzero(is_flip) + 1
    return Detection(ordering, faces, flips, cutoffs, hits, auc, float(np.median(ranks)) if flips else None)


def ranked_queue(predictor, folder: Path, noisy: FaceDataset, labels_dir: Path, cache_dir: Path,
                 oos_path: Path, flipped: set[str]) -> list[review.QueueItem]:
    """fer.review's dataset queue over `noisy` (faces from `folder`, labels in memory), every face, first to review
    first. Raises ValueError unless every flipped face is in the queue under its flipped label: a queue that read the
    folder's clean labels would rank the flips as ordinary faces and report chance."""
    queue = review.build_queue("dataset", predictor=predictor, data_dir=folder, labels_dir=labels_dir,
                               focus=review.DEFAULT_FOCUS, oos_path=oos_path, cache_dir=cache_dir, dataset=noisy)
    noisy_label = {sha: noisy.classes[label] for sha, label in zip(noisy.hashes(), noisy.labels)}
    shown = {item.sha256: item.given_label for item in queue if item.sha256 in flipped}
    if len(shown) != len(flipped) or any(noisy_label[sha] != label for sha, label in shown.items()):
        raise ValueError(f"The queue over {folder} holds {len(shown)} of the {len(flipped)} flipped faces, not all "
                         "under their flipped labels: it did not rank the noisy labels.")
    return queue


def _p_given(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    return probabilities[np.arange(len(given)), given]


# Other review priorities, from (N, C) probabilities and (N,) given-label indices; higher: review sooner. `other` is
# the queue's: the likeliest focus class that is not the given label (for sad or neutral, the other of the pair).
ALTERNATIVE_SCORES = {
    "1 - p(given)": lambda probabilities, given: 1.0 - _p_given(probabilities, given),  # the queue's former score
    "p(other)": lambda probabilities, given: (review.doubt_scores(probabilities, given, review.DEFAULT_FOCUS)
                                              + _p_given(probabilities, given)),
}


def compare_scores(name: str, queue: list[review.QueueItem], flipped: set[str]) -> list[Detection]:
    """The same queue (same faces, probabilities and given labels) reordered by each score: which finds flips?"""
    probabilities = np.array([[item.probabilities[c] for c in CLASS_NAMES] for item in queue], np.float64)  # (N, C)
    given = np.array([CLASS_NAMES.index(item.given_label) for item in queue], np.int64)
    sources = np.array([item.source for item in queue])
    rows = [detection(f"{name}, p(other) - p(given) *", [item.sha256 for item in queue], flipped)]
    for label, score in ALTERNATIVE_SCORES.items():
        order = np.lexsort((sources, -score(probabilities, given)))  # ties by source, as build_queue breaks them
        rows.append(detection(f"{name}, {label}", [queue[i].sha256 for i in order], flipped))
    return rows


def score_draws(name: str, queue: list[review.QueueItem], true_label: dict[str, str], eligible: set[str], k: int,
                draws: int, rng: np.random.Generator) -> dict:
    """Precision@K of each score over `draws` fresh sets of K flips within the same queue, for a steadier comparison
    than one draw. Valid without re-ranking: a sad<->neutral swap keeps a face in the queue, and its probabilities do
    not depend on its own label (the served model learned the clean one; an out-of-fold model never saw the face)."""
    probabilities = np.array([[item.probabilities[c] for c in CLASS_NAMES] for item in queue], np.float64)  # (N, C)
    true = np.array([CLASS_NAMES.index(true_label[item.sha256]) for item in queue], np.int64)
    sources = np.array([item.source for item in queue])
    can_flip = np.array([item.sha256 in eligible for item in queue], dtype=bool)
    first, second = (CLASS_NAMES.index(class_name) for class_name in NOISE_PAIR)
    pools = [np.flatnonzero(can_flip & (true == index)) for index in (first, second)]
    scores = {"p(other) - p(given) *": lambda probabilities, given: review.doubt_scores(probabilities, given,
                                                                                       review.DEFAULT_FOCUS),
              **ALTERNATIVE_SCORES}
    hits: dict[str, list[int]] = {label: [] for label in scores}
    for _ in range(draws):
        flips = np.concatenate([rng.choice(pool, size=count, replace=False)
                                for pool, count in zip(pools, ((k + 1) // 2, k // 2))])
        given = true.copy()
        given[flips] = np.where(true[flips] == first, second, first)
        is_flip = np.zeros(len(queue), dtype=bool)
        is_flip[flips] = True
        for label, score in scores.items():
            order = np.lexsort((sources, -score(probabilities, given)))
            hits[label].append(int(is_flip[order[:k]].sum()))
    return {"queue": name, "faces": len(queue), "k": k, "draws": draws, "random": k / len(queue),
            "precision_at_k": {label: float(np.mean(found) / k) for label, found in hits.items()},
            "sd": {label: float(np.std(found) / k) for label, found in hits.items()}}


def fold_accuracy(oos: review.OutOfFold, train: FaceDataset, shas: list[str]) -> dict:
    """How good the out-of-fold models are, on the training faces' clean labels: accuracy, sad/neutral recall, and
    the accuracy of always answering the largest class (a model at or below it ranks by given label, not face)."""
    _, probabilities = oos.lookup(shas)  # (N, C) in CLASS_NAMES order
    correct = probabilities.argmax(axis=1) == train.labels
    recall = {f"{name}_recall": float(correct[train.labels == CLASS_NAMES.index(name)].mean()) for name in WATCHED}
    majority = float(np.bincount(train.labels, minlength=len(CLASS_NAMES)).max() / len(train))
    return {"accuracy": float(correct.mean()), **recall, "majority": majority}


# ---------------------------------------------------------------------------------------------------- retraining


def fine_tune(name: str, train: FaceDataset, validation: FaceDataset, parent: Path, epochs: int, seed: int,
              data_summary: dict, extra: dict) -> dict:
    """Fine-tune `parent` on `train` as `fer.train --fine-tune` does; write NAME.keras/.json beside it and return
    the JSON (its metrics.validation is the report)."""
    parent_metadata = read_metadata(parent)
    config = fer_train.fine_tune_config(parent_metadata, epochs=epochs, seed=seed)
    out = parent.parent / name
    started = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # Keras's per-epoch lines are progress; stdout keeps the report
        model, history = fer_train.fit(train, validation, config, out, init_from=parent)
    seconds = time.time() - started
    argv = ["--fine-tune", "--init-from", parent.name, "--epochs", str(epochs), "--seed", str(seed), "--out", str(out)]
    return fer_train.finish(model, config, PreprocessConfig.from_dict(parent_metadata["preprocess"]), validation, out,
                            {**data_summary, "train_counts": train.counts()}, history, seconds, argv, extra=extra)


def _report(predictor, validation: FaceDataset) -> dict:
    probabilities = review.predict_in_batches(predictor, validation.images)  # (N, C) in CLASS_NAMES order
    report = classification_report(validation.labels, probabilities.argmax(axis=1), CLASS_NAMES)
    report["n_images"] = len(validation)
    return report


# ---------------------------------------------------------------------------------------------------- output


def _found(hits: int, flips: int) -> str:
    return f"{hits} ({hits / flips:.0%})" if flips else "n/a"


def format_results(results: dict) -> str:
    """The figures as the report prints them: setup, then one block per step."""
    k, setup, noise, seeds = results["k"], results["setup"], results["noise"], results["fine_tune_seeds"]
    limit = f"  (--limit {setup['limit']} per class)" if setup["limit"] else ""
    header = (f"   {'ordering':<34}{'faces':>7}{'K':>5}"
              + "".join(f"{f'top {c}K' if c > 1 else 'top K':>12}" for c in CUTOFFS) + f"{'AUC':>7}{'median rank':>13}")

    def detection_row(row: dict, width: int = 34) -> str:
        median = f"{row['median_rank']:.0f}" if row["median_rank"] is not None else "n/a"
        found = "".join(f"{_found(hits, row['flips']):>12}" for hits in row["hits"])
        return f"   {row['ordering']:<{width}}{row['faces']:>7}{row['flips']:>5}{found}{row['auc']:>7.3f}{median:>13}"

    lines = [
        f"retrain loop on {setup['data']}: train {setup['train_faces']} faces, validation "
        f"{setup['validation_faces']}{limit}",
        f"model {setup['model']}, K={k}, seed {results['seed']}, fine-tuning {setup['epochs']} epoch(s) at learning "
        f"rate {setup['learning_rate']:g}",
        "",
        f"1. noise: flipped {noise['sad_to_neutral']} sad -> neutral and {noise['neutral_to_sad']} neutral -> sad "
        f"training labels ({k / setup['train_faces']:.1%} of all, {k / noise['sad_neutral_faces']:.1%} of "
        "sad+neutral)",
        "",
        "2. detection: fer.review.build_queue's dataset queue (faces given or predicted sad/neutral, most doubtful "
        "first) over the noisy labels",
        header,
    ]
    lines += [detection_row(row) for row in results["detection"]]
    first = results["detection"][0]
    lines.append(f"   top K: flips found (precision@K = recall@K: K faces reviewed, K flipped); a random order finds "
                 f"{first['flips'] ** 2 / first['faces']:.1f} on average in the training queue's top K")
    lines += [f"   caveat: {caveat}" for caveat in results["caveats"]]
    if results.get("oos_accuracy"):
        fold = results["oos_accuracy"]
        lines.append(f"   out-of-fold models on the clean training labels: accuracy {fold['accuracy']:.3f}, "
                     + ", ".join(f"{name} recall {fold[f'{name}_recall']:.3f}" for name in WATCHED))
    lines += ["", "   scores: each queue above reordered by other review priorities (* the queue's own); other = "
              "the other class of the sad/neutral pair", header.replace(f"{'ordering':<34}", f"{'ordering':<44}")]
    lines += [detection_row(row, 44) for row in results.get("scores", [])]
    draws = results.get("score_draws", [])
    if draws:
        labels = list(draws[0]["precision_at_k"])
        lines += ["", f"   precision@K over {draws[0]['draws']} fresh draws of the flips in each queue (mean ± sd)",
                  f"   {'queue':<22}{'faces':>7}{'K':>5}{'random':>8}" + "".join(f"{label:>24}" for label in labels)]
        for row in draws:
            cells = [f"{row['precision_at_k'][label]:.1%} ± {row['sd'][label]:.1%}" for label in labels]
            lines.append(f"   {row['queue']:<22}{row['faces']:>7}{row['k']:>5}{row['random']:>8.1%}"
                         + "".join(f"{cell:>24}" for cell in cells))
    fix = results["corrections"]
    lines += [
        "",
        f"3. corrections: {REVIEWER} gave the top {k} of the {results['review_queue']} training queue their true "
        "labels (ReviewSession.record -> fer.labels.add_correction); fer.corrections applied them",
        f"   {fix['describe']}",
        f"   flipped labels left in training: {results['noise_left']['corrected']} of {k} after the corrections "
        f"({results['noise_left']['noisy']} without)",
        "",
        f"4. validation ({results['reports']['before']['n_images']} faces): the model before; fine-tuned on the noisy "
        f"labels (control); fine-tuned on the corrected labels. Fine-tuned columns: mean over seeds {seeds}",
        f"   {'metric':<12}{'before':>10}{'noisy':>10}{'corrected':>11}{'corr-noisy':>12}{'corr-before':>13}"
        + (f"{'corr-noisy per seed':>22}{'noisy range':>13}" if len(seeds) > 1 else ""),
    ]
    before = results["reports"]["before"]
    noisy, corrected = results["reports"]["noisy"], results["reports"]["corrected"]  # one report per seed

    def row(label: str, value) -> str:
        b = value(before)
        n, c = np.array([value(report) for report in noisy]), np.array([value(report) for report in corrected])
        text = (f"   {label:<12}{b:>10.4f}{n.mean():>10.4f}{c.mean():>11.4f}{(c - n).mean():>+12.4f}"
                f"{c.mean() - b:>+13.4f}")
        if len(seeds) > 1:
            text += f"{' '.join(f'{d:+.4f}' for d in c - n):>22}{n.max() - n.min():>13.4f}"
        return text

    def class_f1(name: str):
        return lambda report: report["per_class"][name]["f1"]

    lines += [row(f"{name} F1", class_f1(name)) for name in WATCHED]
    lines.append(row("macro-F1", lambda report: report["macro_f1"]))
    lines.append(row("accuracy", lambda report: report["accuracy"]))
    lines += [row(f"{name} F1", class_f1(name)) for name in CLASS_NAMES if name not in WATCHED]
    for key in ("noisy", "corrected"):
        for seed, verdict in zip(seeds, results["gate"][key]):
            decision = "passes" if verdict["passed"] else "REJECTED"
            lines.append(f"   fer.gate rule, {key} (seed {seed}) vs before: {decision}: {verdict['reason']}")
    lines += [f"   note: {note}" for note in results["notes"]]
    lines += ["", "runtime: " + ", ".join(f"{name} {value / 60:.1f} min" for name, value in results["seconds"].items())]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- main


def run(data_root: Path, k: int, seed: int, epochs: int, repeats: int, limit: int | None, oos_epochs: int,
        oos_cache: Path | None, source_models: Path, workspace: Path, draws: int = 100) -> dict:
    """All four steps in `workspace` (a temporary folder); returns the figures as a JSON-ready dict."""
    seconds: dict[str, float] = {}
    clock = time.time()
    models, labels_dir, cache_dir = workspace / "models", workspace / "labels", workspace / "cache"
    models.mkdir()
    served = current_model_path(source_models)
    for suffix in (".keras", ".json"):
        shutil.copy2(served.with_suffix(suffix), models / served.with_suffix(suffix).name)
    parent = models / served.name
    set_current(parent, models)
    parent_metadata = read_metadata(parent)
    predictor = load_predictor(parent)
    if predictor.classes != CLASS_NAMES:
        raise ValueError(f"{served.name} predicts {', '.join(predictor.classes)}; the review queue needs "
                         f"{', '.join(CLASS_NAMES)} in that order. Pick another model with --models.")

    logger.info("loading faces from %s", data_root)
    train_dir, validation_dir = find_split(data_root, "train"), find_split(data_root, "validation")
    rng = np.random.default_rng(seed)
    train = load_split(train_dir, predictor, limit, rng)  # images (N, 48, 48) uint8
    validation = load_split(validation_dir, predictor, limit, rng)
    shas, validation_shas = train.hashes(), validation.hashes()
    seconds["load"] = time.time() - clock

    # 1. noise, in the training labels; and, to measure detection out of sample, the same share in validation's
    pair = [train.classes.index(name) for name in NOISE_PAIR]
    flips = choose_flips(train, shas, set(validation_shas), k, rng)
    noisy = flip_labels(train, flips)
    flipped = {shas[i] for i in flips}
    validation_k = max(2, round(k * np.isin(validation.labels, pair).sum() / np.isin(train.labels, pair).sum()))
    validation_flips = choose_flips(validation, validation_shas, set(shas), validation_k, rng)
    noisy_validation = flip_labels(validation, validation_flips)

    # 2. detection
    clock = time.time()
    logger.info("ranking %d training faces with %s (in-sample)", len(train), predictor.version)
    queues = {"in-sample": ranked_queue(predictor, train_dir, noisy, labels_dir, cache_dir, workspace / "none.npz",
                                        flipped)}
    if oos_epochs:
        oos_cache = workspace / "oos.npz"
        logger.info("training %d out-of-fold models on the noisy labels, %d epoch(s) each", OOS_FOLDS, oos_epochs)
        with contextlib.redirect_stdout(sys.stderr):
            review.out_of_fold(train_dir, oos_cache, folds=OOS_FOLDS, epochs=oos_epochs,
                               arch=parent_metadata.get("arch", "seed_cnn"), seed=seed, dataset=noisy)
    oos_accuracy = None
    if oos_cache is not None:
        oos = check_out_of_fold(oos_cache, shas)
        queues["out-of-fold"] = ranked_queue(predictor, train_dir, noisy, labels_dir, cache_dir, oos_cache, flipped)
        oos_accuracy = fold_accuracy(oos, train, shas)
    # Degenerate fold models (one class for every face) would send the reviewer to a chance-level queue.
    oos_usable = oos_accuracy is not None and oos_accuracy["accuracy"] > oos_accuracy["majority"]
    review_queue = "out-of-fold" if oos_usable else "in-sample"
    rows = [detection(f"train, {name} queue", [item.sha256 for item in queue], flipped)
            for name, queue in queues.items()]
    pool = [item.sha256 for item in queues[review_queue]]
    rows.append(detection("train, random order", [pool[i] for i in rng.permutation(len(pool))], flipped))
    logger.info("ranking %d validation faces with %s (out of sample)", len(validation), predictor.version)
    validation_flipped = {validation_shas[i] for i in validation_flips}
    validation_items = ranked_queue(predictor, validation_dir, noisy_validation, labels_dir, cache_dir,
                                    workspace / "none.npz", validation_flipped)
    validation_queue = [item.sha256 for item in validation_items]
    rows.append(detection("validation, queue (out of sample)", validation_queue, validation_flipped))
    shuffled = [validation_queue[i] for i in rng.permutation(len(validation_queue))]
    rows.append(detection("validation, random order", shuffled, validation_flipped))
    scores = [row for name, queue in queues.items() for row in compare_scores(f"train, {name}", queue, flipped)]
    scores += compare_scores("validation", validation_items, validation_flipped)
    true_train = {sha: train.classes[label] for sha, label in zip(shas, train.labels)}
    true_validation = {sha: validation.classes[label] for sha, label in zip(validation_shas, validation.labels)}
    eligible_train = _once_and_not_in(shas, set(validation_shas))
    many = [score_draws(f"train, {name}", queue, true_train, eligible_train, k, draws, rng)
            for name, queue in queues.items()]
    many += [score_draws("validation", validation_items, true_validation,
                         _once_and_not_in(validation_shas, set(shas)), validation_k, draws, rng)]
    in_sample_top_k = sum(item.in_sample for item in queues["in-sample"][:k])
    caveats = [
        f"train, in-sample: {predictor.version} trained on the clean labels of these same faces (fer.review marks "
        f"{in_sample_top_k} of the top {k} in_sample), so it remembers the true label of a flipped face and this row "
        "is optimistic: noise a model has trained on is harder to find.",
        f"validation: the same queue code and model on validation faces, {validation_k} flipped (the same share of "
        f"sad+neutral labels). {predictor.version} never fitted these faces (it did pick its best epoch and "
        "temperature on them), so this row is the out-of-sample estimate; compare AUC, which does not depend on K. "
        f"With {validation_k} flips it is noisy: its random row shows by how much.",
    ]
    if oos_epochs:
        caveats.append(f"train, out-of-fold: {OOS_FOLDS} models trained from scratch on the noisy labels for "
                       f"{oos_epochs} epoch(s), each ranking the half it did not see; weaker than the served model, "
                       "so this row understates what a fully trained out-of-fold cache finds.")
    elif oos_cache is not None:
        caveats.append(f"train, out-of-fold: {oos.describe()} from {oos_cache}, each fold model scoring faces it "
                       "never trained on. They trained on the clean labels of the other folds; training on the "
                       f"{k} flips instead would change them little. Weaker models than {predictor.version} rank "
                       "worse, so this row is if anything pessimistic.")
    if oos_accuracy is not None and not oos_usable:
        caveats.append(f"the out-of-fold models are no better than always answering the largest class (accuracy "
                       f"{oos_accuracy['accuracy']:.3f} <= {oos_accuracy['majority']:.3f} on the clean labels): "
                       "their queue ranks faces by given label, not by face, so the reviewer works from the in-sample "
                       "queue instead. Raise --oos-epochs (on the full data seed_cnn and vgg_small answer one class "
                       "after one epoch over 20k faces; each fold sees half).")
    if oos_cache is None:
        caveats.append("the training queue has no out-of-fold row: `fer.review oos` trains 5 models for 8 epochs "
                       "(hours on 2 CPU cores); pass its cache with --oos PATH, or --oos-epochs N for a 2-fold "
                       "version trained here.")
    seconds["detect"] = time.time() - clock

    # 3. corrections: the reviewer sees the top K and gives each its folder (true) label
    clock = time.time()
    true_label = {f"{train_dir.name}/{Path(path).relative_to(train_dir).as_posix()}": train.classes[label]
                  for path, label in zip(train.paths, train.labels)}
    session = review.ReviewSession(queues[review_queue][:k], REVIEWER, labels_dir)
    while session.current is not None:
        session.record(true_label[session.current.source])
    corrections = fer_corrections.read(labels_dir)
    corrected, summary = fer_corrections.apply(noisy, corrections, set(validation_shas))
    clean_by_path = dict(zip(train.paths, train.labels))
    noise_left = {
        "noisy": k,
        "corrected": int(sum(clean_by_path[path] != label for path, label in zip(corrected.paths, corrected.labels))),
    }
    seconds["correct"] = time.time() - clock

    # 4. retraining: each seed fine-tunes both arms with the same settings, so the labels are the only difference
    clock = time.time()
    before = _report(predictor, validation)
    data_summary = {"train_dir": str(train_dir), "validation_dir": str(validation_dir), "simulated": True}
    seeds = [seed + repeat for repeat in range(repeats)]
    arms = {"noisy": (noisy, {"simulation": f"{k} sad/neutral flips, no corrections"}),
            "corrected": (corrected, {"simulation": f"{k} sad/neutral flips, top {k} reviewed",
                                      "corrections": summary.to_dict()})}
    reports: dict = {"before": before, "noisy": [], "corrected": []}
    gate: dict = {"noisy": [], "corrected": []}
    for fine_tune_seed in seeds:
        for name, (dataset, extra) in arms.items():
            logger.info("fine-tuning %s on the %s labels (%d faces, %d epoch(s), seed %d)", parent.stem, name,
                        len(dataset), epochs, fine_tune_seed)
            metadata = fine_tune(f"{parent.stem}-{name}-seed{fine_tune_seed}", dataset, validation, parent, epochs,
                                 fine_tune_seed, data_summary, {**extra, "parent": parent.stem})
            report = metadata["metrics"]["validation"]
            passed, checks, reason = fer_gate.decide(before, report)
            reports[name].append(report)
            gate[name].append({"passed": passed, "reason": reason, "checks": checks})
    seconds["fine-tune"] = time.time() - clock

    notes = [
        f"{predictor.version} already learned the clean labels, and the {k} flips are {k / len(train):.1%} of the "
        f"training set: {epochs} fine-tuning epoch(s) on them can move validation only a little either way. A model "
        "trained from scratch on noisy labels has more to gain from corrections.",
        "each seed fine-tunes both arms alike (same shuffling and augmentation), so corr-noisy is a paired difference"
        + ("; noisy range is how far the control alone moves between seeds: a corr-noisy well inside it cannot be "
           "told from run-to-run variation."
           if repeats > 1 else "; with one seed, run-to-run variation is not measured (--repeats 2 measures it), so "
           "treat differences of a few thousandths as noise."),
    ]
    if epochs > 1:
        notes.append("fit keeps the best epoch by validation accuracy, picked on the faces scored here (both arms).")
    learning_rate = fer_train.fine_tune_config(parent_metadata, epochs=epochs).learning_rate
    return {
        "k": k, "seed": seed, "fine_tune_seeds": seeds,
        "setup": {"data": str(data_root), "limit": limit, "train_faces": len(train),
                  "validation_faces": len(validation), "model": served.stem, "epochs": epochs,
                  "learning_rate": learning_rate, "oos_epochs": oos_epochs,
                  "oos_cache": str(oos_cache) if oos_cache is not None and not oos_epochs else None},
        "noise": {"sad_to_neutral": int(np.sum(train.labels[flips] == pair[0])),
                  "neutral_to_sad": int(np.sum(train.labels[flips] == pair[1])),
                  "sad_neutral_faces": int(np.isin(train.labels, pair).sum()), "validation_flips": validation_k},
        "review_queue": review_queue,
        "detection": [row.to_dict() for row in rows],
        "scores": [row.to_dict() for row in scores],
        "score_draws": many,
        "oos_accuracy": oos_accuracy,
        "caveats": caveats,
        "corrections": {**summary.to_dict(), "describe": summary.describe()},
        "noise_left": noise_left,
        "reports": reports,
        "gate": gate,
        "notes": notes,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/retrain_loop.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=review.default_data_dir().parent,
                        help="dataset root with train/ and validation/ (default $FER_DATA_DIR, else "
                             "../shared/data/fer2013)")
    parser.add_argument("--k", type=int, default=200, help="labels to flip, and faces the simulated reviewer sees")
    parser.add_argument("--seed", type=int, default=0, help="which faces are flipped, the random order, fine-tuning")
    parser.add_argument("--epochs", type=int, default=1,
                        help="fine-tuning epochs for each arm (fer.train --fine-tune runs 3)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="fine-tune each arm with this many seeds (--seed, --seed + 1, ...): run-to-run noise")
    parser.add_argument("--draws", type=int, default=100,
                        help="also compare the scores over this many fresh draws of K flips in each queue")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many faces per class and split (smoke runs)")
    out_of_fold = parser.add_mutually_exclusive_group()
    out_of_fold.add_argument("--oos", type=Path, default=None,
                             help="also rank with this out-of-fold cache of the training split (`python -m fer.review "
                                  "oos`, e.g. cache/oos.npz; read only); the reviewer then works from that queue")
    out_of_fold.add_argument("--oos-epochs", type=int, default=0,
                             help=f"or train {OOS_FOLDS} out-of-fold models on the noisy labels, this many epochs "
                                  "each, and rank with those (0: skip)")
    parser.add_argument("--models", type=Path, default=None, help="models folder whose current model is fine-tuned "
                        "(default $FER_MODELS_DIR, else models/); it is copied, never written")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.oos is not None and not args.oos.is_file():
        parser.error(f"no out-of-fold cache at {args.oos}; make one with `python -m fer.review oos` or drop --oos")
    for flag, value, low in (("--k", args.k, 2), ("--epochs", args.epochs, 1), ("--repeats", args.repeats, 1),
                             ("--limit", args.limit or 1, 1), ("--draws", args.draws, 1),
                             ("--oos-epochs", args.oos_epochs, 0)):
        if value < low:
            parser.error(f"{flag} must be at least {low}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="fer-retrain-loop-") as workspace:
            results = run(args.data, args.k, args.seed, args.epochs, args.repeats, args.limit, args.oos_epochs,
                          args.oos, args.models or models_dir(), Path(workspace), args.draws)
    except (FerError, ValueError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    results["seconds"]["total"] = time.time() - started
    report(format_results(results), results, args.json)
    return 0


def report(text: str, results: dict, json_path: Path | None) -> None:
    """Print a loop benchmark's figures, and write them as JSON to `json_path` if given."""
    print(text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {json_path}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
