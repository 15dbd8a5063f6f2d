"""Accuracy of the PyPI `fer` package (justinshenk) next to our served model, on the same validation faces and labels.

    python benchmarks/peer_accuracy.py --votes ../shared/data/fer2013/ferplus_votes.csv   # both label sets, ~1 min
    python benchmarks/peer_accuracy.py --votes ../shared/data/fer2013/ferplus_votes.csv --json runs/peer_accuracy.json
    python benchmarks/peer_accuracy.py                                                     # folder labels only
    python benchmarks/peer_accuracy.py --fer-python /other/venv/bin/python --model vgg_small_reg

The faces and labels are exactly those our model is judged on (`fer.evaluate.load_eval_set`, the label rule in
fer/votes.py): the 48x48 crops of the four class folders labelled by their folder, and with `--votes` the faces of
all seven folders labelled by the annotators' consensus. PyPI fer sees each crop file whole as the face
(`detect_emotions(image, face_rectangles=[(0, 0, 48, 48)])`, BGR as it expects; its detector is skipped), once as
`FER(offsets=(0, 0))`, the crop resized to its 64x64 input as its model was trained, and once with its default
`offsets=(10, 10)`, which frame that box with 10 px of flat grey. Of its seven probabilities (taken before it
rounds them to two decimals) those of our four classes are kept and the largest of them is its answer; a face it
returns nothing for counts as wrong. Both models are scored here, by `fer.evaluate.score`, in the same run. PyPI fer lives
in its own venv, outside this project (benchmarks/README.md shows how to make it); --fer-python points at its Python.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run as a script from anywhere: `import fer` means this project
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import _fer_pypi  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fer2013" / "validation"
# How PyPI fer frames the whole-crop box (FER(offsets=...)): label for the tables -> offsets.
PEER_SETTINGS = {"PyPI fer, offsets 0,0 (the crop resized)": (0, 0),
                 "PyPI fer, offsets 10,10 (its default)": (10, 10)}


def select_classes(probabilities: np.ndarray, peer_labels, classes) -> np.ndarray:
    """(N, 7) probabilities in the peer's class order -> (N, len(classes)) its probabilities for `classes`, in that
    order, matched by name (the peer says happy, sad, neutral, surprise as we do). ValueError for a class it lacks."""
    missing = [name for name in classes if name not in peer_labels]
    if missing:
        raise ValueError(f"PyPI fer has no class {', '.join(missing)}; it has {', '.join(peer_labels)}.")
    return np.asarray(probabilities, dtype=np.float64)[:, [list(peer_labels).index(name) for name in classes]]


def peer_scores(replies: list, peer_labels, classes, labels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """What `fer.evaluate.score` takes for the peer: (N, C) probabilities whose argmax is its answer among `classes`.

    `replies` holds its seven probabilities for each face, or None where it returned no face; such a face gets a
    one-hot on the class after its label, so it counts as wrong. Also returns how many faces had no answer, and on how
    many its top class of all seven lies outside `classes` (the four-class argmax overrules it there).
    """
    answered = np.array([reply is not None for reply in replies], dtype=bool)
    seven = np.array([reply if reply is not None else [np.nan] * len(peer_labels) for reply in replies],
                     dtype=np.float64).reshape(len(replies), len(peer_labels))  # (N, 7), NaN rows: no face
    scores = np.zeros((len(replies), len(classes)))
    scores[answered] = select_classes(seven[answered], peer_labels, classes)
    wrong = (np.asarray(labels)[~answered] + 1) % len(classes)
    scores[np.flatnonzero(~answered), wrong] = 1.0
    outside = np.isin(np.asarray(peer_labels)[seven[answered].argmax(axis=1)], classes, invert=True)
    return scores, int(np.sum(~answered)), int(np.sum(outside))


def ratios(ours: dict, peer: dict) -> dict:
    """Our figure divided by the peer's, for accuracy and macro-F1."""
    return {key: ours[key] / peer[key] if peer[key] else float("inf") for key in ("accuracy", "macro_f1")}


def compare(predictor, label_sets: dict, peer_replies: dict, peer_labels, votes) -> dict:
    """Both models' `fer.evaluate.score` reports on each label set, and the ratios. `peer_replies` is
    {setting: {path: seven probabilities or None}}."""
    from fer.evaluate import score

    results = {}
    for name, dataset in label_sets.items():
        label_votes = votes if name == "consensus" else None
        entry = {"faces": len(dataset), "ours": score(dataset, predictor.predict_faces(dataset.images), label_votes),
                 "peer": {}, "ratio": {}}
        for setting, replies in peer_replies.items():
            scores, no_face, outside = peer_scores([replies[path] for path in dataset.paths], peer_labels,
                                                   dataset.classes, dataset.labels)
            entry["peer"][setting] = {**score(dataset, scores, label_votes, no_face), "top_class_outside_ours": outside}
            entry["ratio"][setting] = ratios(entry["ours"], entry["peer"][setting])
        results[name] = entry
    return results


def print_tables(results: dict, ours_name: str) -> None:
    for name, entry in results.items():
        classes = list(entry["ours"]["per_class"])
        rows = [(ours_name, entry["ours"])] + list(entry["peer"].items())
        print(f"\n{name} labels, {entry['faces']:,} faces\n")
        print("| model | accuracy | macro-F1 | " + " | ".join(f"{c} F1" for c in classes) + " | no face |")
        print("|---" * (4 + len(classes)) + "|")
        for label, report in rows:
            print(f"| {label} | {report['accuracy']:.4f} | {report['macro_f1']:.4f} | "
                  + " | ".join(f"{report['per_class'][c]['f1']:.3f}" for c in classes) + f" | {report['no_face']} |")
        if "clear_recall" in entry["ours"]:
            clear = entry["ours"]["clear_recall"]
            print("\n| model | " + " | ".join(f"{c} recall on clear faces ({clear[c]['support']})" for c in classes)
                  + " |")
            print("|---" * (1 + len(classes)) + "|")
            for label, report in rows:
                recalls = (f"{report['clear_recall'][c]['recall']:.3f}" for c in classes)
                print(f"| {label} | " + " | ".join(recalls) + " |")
        print()
        for setting, ratio in entry["ratio"].items():
            print(f"ours / {setting}: accuracy {ratio['accuracy']:.3f}x, macro-F1 {ratio['macro_f1']:.3f}x; its top "
                  f"class of seven is outside our four on {entry['peer'][setting]['top_class_outside_ours']} faces")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/peer_accuracy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder-per-class validation faces")
    parser.add_argument("--votes", type=Path, help="also score against the annotators' consensus in this votes file "
                                                   "(../shared/data/fer2013/ferplus_votes.csv)")
    parser.add_argument("--model", help="our model: a .keras file or a name in models/ (default: the served one, "
                                        "models/current.json)")
    _fer_pypi.add_python_argument(parser, can_skip=False)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if not Path(args.fer_python).is_file():
        print(f"error: no Python at {args.fer_python}. PyPI fer lives in its own venv, outside this project: make it "
              "as benchmarks/README.md shows (section speed.py), or pass --fer-python.", file=sys.stderr)
        return 2
    if not args.data.is_dir():
        print(f"error: no validation faces at {args.data}; pass --data (a folder of class folders).", file=sys.stderr)
        return 2
    from fer.errors import FerError
    from fer.evaluate import load_eval_set
    from fer.models import resolve_model
    from fer.predict import load_predictor
    from fer.votes import read as read_votes

    try:
        votes = read_votes(args.votes) if args.votes else None  # a bad file or venv stops the run before the slow parts
        with tempfile.TemporaryDirectory(prefix="fer-peer-") as workdir, \
                _fer_pypi.PypiFer(str(args.fer_python), Path(workdir)) as peer:
            predictor = load_predictor(resolve_model(args.model) if args.model else None)
            label_sets = {"folder": load_eval_set(predictor, args.data)[0]}
            if votes is not None:
                label_sets["consensus"] = load_eval_set(predictor, args.data, votes=votes)[0]
            paths = list(dict.fromkeys(path for dataset in label_sets.values() for path in dataset.paths))
            peer_replies = {}
            for setting, offsets in PEER_SETTINGS.items():
                print(f"{setting}: classifying {len(paths):,} faces ...", file=sys.stderr, flush=True)
                reply = peer.classify(paths, offsets)
                peer_replies[setting], peer_labels = dict(zip(paths, reply["probabilities"])), reply["labels"]
            peer_info = {key: peer.info[key] for key in ("version", "module")}
    except FerError as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    except _fer_pypi.PypiFerError as error:
        print(f"error: PyPI fer at {args.fer_python} failed ({error}); run speed.py's setup in benchmarks/README.md "
              "again if its venv is broken.", file=sys.stderr)
        return 2
    results = compare(predictor, label_sets, peer_replies, peer_labels, votes)
    print(f"ours: {predictor.version} ({predictor.path}), {predictor.runtime}")
    print(f"PyPI fer {peer_info['version']} ({peer_info['module']}), its default TFLite model; "
          f"data {args.data}" + (f", votes {votes.path}" if votes else ""))
    print_tables(results, f"ours: {predictor.version}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "data": str(args.data), "votes": votes.describe() if votes else None,
            "ours": {"model": predictor.version, "path": str(predictor.path), "runtime": predictor.runtime},
            "peer": {**peer_info, "variant": "tflite",
                     "settings": {name: list(offsets) for name, offsets in PEER_SETTINGS.items()}},
            "label_sets": results}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
