"""Score a model on a folder-per-class tree.

    python -m fer.evaluate --model models/NAME.keras --data ../shared/data/fer2013/validation --json out.json
    python -m fer.evaluate --model models/NAME.keras --data photos/ --detect-faces
    python -m fer.evaluate --data ../shared/data/fer2013/validation --votes ../shared/data/fer2013/ferplus_votes.csv

`--votes` scores against the annotators' consensus (fer.votes: faces from every folder, labelled by their majority)
and adds each class's recall on clear faces. Without --detect-faces each image is a face crop. With it, the largest
detected face is classified; an image with no face is classified whole and counted in `no_face`. Writes the JSON and
a confusion-matrix PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from fer.data import FaceDataset
from fer.errors import DataError, FerError, ImageError
from fer.faces import detect_faces
from fer.images import load_image
from fer.metrics import classification_report
from fer.preprocess import preprocess_face

logger = logging.getLogger(__name__)


def load_eval_set(predictor, directory: str | Path, detect: bool = False, votes=None) -> tuple[FaceDataset, int]:
    """The faces under a folder-per-class tree as the predictor would see them, labelled by the label rule
    (`fer.votes.label_faces`): their folders, or with `votes` the annotators' consensus (faces from every folder
    are read then, and those without a consensus among the predictor's classes are left out). Also returns how many
    images had no detected face (with `detect`: the largest detected face is classified, else the whole image)."""
    from fer.data import folder_classes, list_images
    from fer.votes import label_faces

    folders = folder_classes(directory) if votes is not None else predictor.classes
    paths, labels = list_images(directory, folders)
    faces, kept, kept_paths, no_face = [], [], [], 0
    for path, label in zip(paths, labels):
        try:
            rgb = load_image(path)
        except ImageError as error:
            logger.warning("Skipping %s: %s", path, error)
            continue
        box = None
        if detect:
            boxes = detect_faces(rgb)
            if boxes:
                box = boxes[0]
            else:
                no_face += 1
        faces.append(preprocess_face(rgb, box, predictor.preprocess_config))
        kept.append(label)
        kept_paths.append(str(path))
    if not faces:
        raise ImageError(f"No readable images under {directory}.")
    found = FaceDataset(np.stack(faces), np.asarray(kept, dtype=np.int64), kept_paths, tuple(folders))
    labelled, _ = label_faces(found, tuple(predictor.classes), votes)
    if not len(labelled):
        raise DataError(f"No face under {directory} has a label among {', '.join(predictor.classes)}"
                        + (f" by the votes in {votes.path}; is it the folder the votes describe?" if votes else "."))
    return labelled, no_face


def load_eval_faces(predictor, directory: str | Path, detect: bool = False, votes=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Faces (N, S, S) uint8 and labels (N,) from a folder-per-class tree, as the predictor would see them
    (`load_eval_set` as arrays)."""
    dataset, no_face = load_eval_set(predictor, directory, detect, votes)
    return dataset.images, dataset.labels, no_face


def score(dataset: FaceDataset, probabilities: np.ndarray, votes=None, no_face: int = 0) -> dict:
    """The report for `probabilities` (N, C) on `dataset`'s labels: accuracy, macro_f1, per_class, confusion,
    classes, n_images, no_face, `labels` ("folder" or "consensus"). With `votes`: `clear_recall`, each class's
    recall on its clear faces (at least `fer.votes.CLEAR_SHARE` of the annotators chose it) and their number."""
    from fer.votes import CLEAR_SHARE, agreement

    predicted = np.asarray(probabilities).argmax(axis=1)
    report = classification_report(dataset.labels, predicted, dataset.classes)
    report["n_images"] = int(len(dataset))
    report["no_face"] = int(no_face)
    report["labels"] = "folder" if votes is None else "consensus"
    if votes is not None:
        counts, _ = votes.counts_for(dataset.paths)
        clear = agreement(counts, dataset.classes) >= CLEAR_SHARE  # (N, C)
        report["votes"] = votes.describe()
        report["clear_recall"] = {
            name: {"recall": float(np.mean(predicted[clear[:, index]] == index)) if clear[:, index].any() else 0.0,
                   "support": int(clear[:, index].sum())}
            for index, name in enumerate(dataset.classes)}
    return report


def evaluate(predictor, directory: str | Path, detect: bool = False, votes=None) -> dict:
    """The report that `--json` writes (`score`): against the folder labels, or with `votes` the consensus."""
    dataset, no_face = load_eval_set(predictor, directory, detect, votes)
    probabilities = predictor.predict_faces(dataset.images)  # it scores in bounded chunks itself
    return score(dataset, probabilities, votes, no_face)


def format_report(report: dict) -> str:
    clear = report.get("clear_recall")
    lines = [f"labels {report.get('labels', 'folder')}   accuracy {report['accuracy']:.4f}   macro-F1 "
             f"{report['macro_f1']:.4f}   images {report['n_images']}   no face {report['no_face']}", "",
             f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"
             + (f"{'clear recall':>14}{'clear':>7}" if clear else "")]
    for name, scores in report["per_class"].items():
        lines.append(f"{name:<10}{scores['precision']:>10.3f}{scores['recall']:>10.3f}{scores['f1']:>10.3f}{scores['support']:>10d}"
                     + (f"{clear[name]['recall']:>14.3f}{clear[name]['support']:>7d}" if clear else ""))
    lines += ["", "confusion (rows true, columns predicted):", " " * 10 + "".join(f"{c[:8]:>9}" for c in report["classes"])]
    for name, row in zip(report["classes"], report["confusion"]):
        lines.append(f"{name:<10}" + "".join(f"{v:>9d}" for v in row))
    return "\n".join(lines)


def plot_confusion(report: dict, path: str | Path, title: str = "") -> Path:
    """Save the confusion matrix (row-normalised colours, raw counts as text) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    matrix = np.asarray(report["confusion"], dtype=float)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(4.8, 4.2), dpi=120)
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    classes = report["classes"]
    axis.set_xticks(range(len(classes)), classes)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for row in range(len(classes)):
        for column in range(len(classes)):
            axis.text(column, row, f"{int(matrix[row, column])}\n{rates[row, column]:.0%}", ha="center", va="center",
                      color="white" if rates[row, column] > 0.5 else "black", fontsize=8)
    axis.set_title(title or f"accuracy {report['accuracy']:.1%}")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .keras file (default: the one models/current.json names)")
    parser.add_argument("--data", required=True, help="folder with any of the class folders")
    parser.add_argument("--detect-faces", action="store_true", help="detect and classify the largest face")
    parser.add_argument("--votes", help="score against the annotators' consensus in this votes file "
                                        "(../shared/data/fer2013/ferplus_votes.csv) instead of the folders")
    parser.add_argument("--json", help="write the report here (and the confusion PNG beside it)")
    parser.add_argument("--record", action="store_true",
                        help="with --votes: also store the report in the model's JSON as its consensus-validation "
                             "figure (metrics.validation_consensus), for a model trained before votes were used")
    args = parser.parse_args(argv)
    if args.record and not args.votes:
        parser.error("--record stores the consensus figure: give --votes too")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fer.predict import load_predictor

    try:
        from fer.votes import read as read_votes

        predictor = load_predictor(args.model)
        votes = read_votes(args.votes) if args.votes else None
        report = evaluate(predictor, args.data, detect=args.detect_faces, votes=votes)
    except FerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model {predictor.path}\ndata  {args.data}\n")
    print(format_report(report))
    if args.record:
        from fer.registry import metadata_path, read_metadata, write_json_atomic

        metadata = read_metadata(predictor.path)
        metadata.setdefault("metrics", {})["validation_consensus"] = {**report, "command": "python -m fer.evaluate "
                                                                      + " ".join(argv if argv is not None else sys.argv[1:])}
        write_json_atomic(metadata_path(predictor.path), metadata)
        print(f"\nrecorded in {metadata_path(predictor.path)} as metrics.validation_consensus")
    if args.json:
        json_path = Path(args.json)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        png = plot_confusion(report, json_path.with_suffix(".png"), f"{predictor.version}: accuracy {report['accuracy']:.1%}")
        print(f"\nwrote {json_path} and {png}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
