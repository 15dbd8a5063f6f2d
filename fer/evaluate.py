"""Score a model on a folder-per-class tree.

    python -m fer.evaluate --model models/NAME.keras --data ../shared/data/fer2013/validation --json out.json
    python -m fer.evaluate --model models/NAME.keras --data photos/ --detect-faces

Without --detect-faces each image is a face crop. With it, the largest detected face is classified; an image with
no face is classified whole and counted in `no_face`. Writes the JSON and a confusion-matrix PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from fer.errors import FerError, ImageError
from fer.faces import detect_faces
from fer.images import load_image
from fer.metrics import classification_report
from fer.preprocess import preprocess_face

logger = logging.getLogger(__name__)


def load_eval_faces(predictor, directory: str | Path, detect: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Faces (N, S, S) uint8 and labels (N,) from a folder-per-class tree, as the predictor would see them."""
    from fer.data import list_images

    paths, labels = list_images(directory, predictor.classes)
    faces, kept, no_face = [], [], 0
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
    if not faces:
        raise ImageError(f"No readable images under {directory}.")
    return np.stack(faces), np.asarray(kept, dtype=np.int64), no_face


def evaluate(predictor, directory: str | Path, detect: bool = False) -> dict:
    """The report that `--json` writes: accuracy, macro_f1, per_class, confusion, classes, n_images, no_face."""
    faces, labels, no_face = load_eval_faces(predictor, directory, detect)
    probabilities = predictor.predict_faces(faces)  # it scores in bounded chunks itself
    report = classification_report(labels, probabilities.argmax(axis=1), predictor.classes)
    report["n_images"] = int(len(labels))
    report["no_face"] = int(no_face)
    return report


def format_report(report: dict) -> str:
    lines = [f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   images {report['n_images']}"
             f"   no face {report['no_face']}", "", f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, scores in report["per_class"].items():
        lines.append(f"{name:<10}{scores['precision']:>10.3f}{scores['recall']:>10.3f}{scores['f1']:>10.3f}{scores['support']:>10d}")
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
    parser.add_argument("--json", help="write the report here (and the confusion PNG beside it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fer.predict import load_predictor

    try:
        predictor = load_predictor(args.model)
        report = evaluate(predictor, args.data, detect=args.detect_faces)
    except FerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model {predictor.path}\ndata  {args.data}\n")
    print(format_report(report))
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
