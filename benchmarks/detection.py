"""Face detectors compared on real faces (issue 6): recall, framing, emotion accuracy through detection, speed.

    python benchmarks/detection.py                                   # all validation faces (about 4 minutes)
    python benchmarks/detection.py --n 600 --json runs/detection.json

Each FER2013 validation face (48x48) is enlarged to a side from SIDES, in turn, and placed in a 640x480 photo whose
border repeats the face's edges, so the detector sees a whole head, not a cut-out. Every detector in
fer.faces.DETECTORS then runs on that photo through fer.faces.detect_faces, and the benchmark reports:

- recall: a box whose centre lies inside the face and whose side is 0.4-1.6x the face's;
- extra boxes per photo (false alarms: there is one face in each photo), and boxes on scikit-image's sample
  pictures that hold no face;
- framing: median box side / face side, and median box centre offset from the face centre in box sides; the
  "lbp" cascade's box_scale and box_shift_y in fer.faces are set from these so that its boxes frame faces like
  the Haar cascade's, which the model's crop margin was measured for (benchmarks/framing.py);
- emotion accuracy through detection with the served model (a face not found counts as wrong), and on the faces
  that every detector found (framing alone);
- milliseconds per photo (median), every detector timed on the same photos in turn.

Nothing is written to disk except --json. The faces are research data: they are read from ../shared at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from fer import faces as face_detection  # noqa: E402
from fer.data import load_faces  # noqa: E402
from fer.predict import load_predictor  # noqa: E402
from fer.preprocess import preprocess_face  # noqa: E402

WIDTH, HEIGHT = 640, 480
SIDES = (72, 96, 144, 192)  # face sides in the 640x480 photo, used in turn
NO_FACE_PICTURES = ("coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "horse", "clock", "brick",
                    "gravel", "grass", "hubble_deep_field", "colorwheel", "logo", "checkerboard")


def photo_with_face(face: np.ndarray, side: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 640x480 gray photo holding `face` enlarged to `side` at a random place; returns it and the face's box."""
    enlarged = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    x = int(rng.integers(0, WIDTH - side + 1))
    y = int(rng.integers(0, HEIGHT - side + 1))
    photo = cv2.copyMakeBorder(enlarged, y, HEIGHT - side - y, x, WIDTH - side - x, cv2.BORDER_REPLICATE)
    return photo, (x, y, side, side)


def matching_box(boxes: list, truth: tuple[int, int, int, int]):
    """The first box centred inside the true face with a side 0.4-1.6x its side, or None."""
    tx, ty, side, _ = truth
    for box in boxes:
        x, y, w, h = box
        cx, cy = x + w / 2, y + h / 2
        if tx <= cx <= tx + side and ty <= cy <= ty + side and 0.4 * side <= w <= 1.6 * side:
            return box
    return None


def no_face_pictures() -> dict[str, np.ndarray]:
    """scikit-image's bundled sample pictures without a face (those that need a download are left out)."""
    from skimage import data

    pictures = {}
    for name in NO_FACE_PICTURES:
        try:
            image = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a picture this scikit-image needs to download, or does not have
            continue
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = (255 * (image.astype(np.float64) / max(1e-9, float(image.max())))).astype(np.uint8)
        if image.ndim == 3:
            image = image[..., :3]
        pictures[name] = np.ascontiguousarray(image)
    return pictures


def run(data_dir: str, n: int | None, model: str | None, seed: int) -> dict:
    predictor = load_predictor(model)
    config = predictor.preprocess_config
    dataset = load_faces(data_dir, predictor.classes)
    order = np.random.default_rng(seed).permutation(len(dataset))[: n or len(dataset)]
    rng = np.random.default_rng(seed + 1)
    detectors = face_detection.DETECTORS
    seconds = {name: [] for name in detectors}
    found = {name: [] for name in detectors}  # per face: matching box or None
    extra = {name: 0 for name in detectors}
    crops = {name: [] for name in detectors}
    sides = []
    for count, index in enumerate(order):
        side = SIDES[count % len(SIDES)]
        photo, truth = photo_with_face(dataset.images[index], side, rng)
        sides.append(side)
        for name in detectors:
            begun = time.perf_counter()
            boxes = face_detection.detect_faces(photo, detector=name)
            seconds[name].append(time.perf_counter() - begun)
            box = matching_box(boxes, truth)
            found[name].append((box, truth))
            extra[name] += len(boxes) - (box is not None)
            crops[name].append(preprocess_face(photo, box, config) if box is not None else None)
    labels = dataset.labels[order]
    every = np.array([all(found[name][i][0] is not None for name in detectors) for i in range(len(order))])
    report = {"faces": int(len(order)), "sides": list(SIDES), "model": str(predictor.path), "detectors": {}}
    for name in detectors:
        hit = np.array([box is not None for box, _ in found[name]])
        predicted = np.full(len(order), -1)
        if hit.any():
            probabilities = predictor.predict_faces(np.stack([crop for crop in crops[name] if crop is not None]))
            predicted[hit] = probabilities.argmax(axis=1)
        scale = [box[2] / truth[2] for box, truth in found[name] if box is not None]
        shift_y = [((box[1] + box[3] / 2) - (truth[1] + truth[3] / 2)) / box[3] for box, truth in found[name] if box is not None]
        by_side = {str(side): float(hit[np.array(sides) == side].mean()) for side in SIDES}
        report["detectors"][name] = {
            "recall": float(hit.mean()),
            "recall_by_side": by_side,
            "extra_boxes_per_photo": extra[name] / len(order),
            "box_side_over_face_median": float(np.median(scale)) if scale else None,
            "box_centre_below_face_centre_median": float(np.median(shift_y)) if shift_y else None,
            "accuracy_through_detection": float((predicted == labels).mean()),
            "accuracy_on_faces_all_found": float((predicted[every] == labels[every]).mean()) if every.any() else None,
            "ms_per_photo_median": 1000 * float(np.median(seconds[name])),
        }
    report["faces_all_detectors_found"] = int(every.sum())
    pictures = no_face_pictures()
    report["no_face_pictures"] = {"pictures": sorted(pictures),
                                  "boxes": {name: sum(len(face_detection.detect_faces(image, detector=name))
                                                      for image in pictures.values()) for name in detectors}}
    return report


def print_report(report: dict) -> None:
    print(f"{report['faces']} validation faces, one per 640x480 photo, face sides {report['sides']} px in turn; "
          f"model {Path(report['model']).name}")
    header = (f"{'detector':<8} {'recall':>7} " + " ".join(f"{'@' + s:>6}" for s in map(str, report['sides']))
              + f" {'extra/photo':>11} {'side/face':>9} {'centre dy':>9} {'acc':>6} {'acc(all found)':>14} {'ms/photo':>8}")
    print(header)
    for name, row in report["detectors"].items():
        print(f"{name:<8} {row['recall']:>7.3f} " + " ".join(f"{row['recall_by_side'][s]:>6.3f}" for s in map(str, report['sides']))
              + f" {row['extra_boxes_per_photo']:>11.3f} {row['box_side_over_face_median']:>9.3f}"
              f" {row['box_centre_below_face_centre_median']:>+9.3f} {row['accuracy_through_detection']:>6.3f}"
              f" {row['accuracy_on_faces_all_found']:>14.3f} {row['ms_per_photo_median']:>8.2f}")
    base = report["detectors"].get("haar")
    if base:
        for name, row in report["detectors"].items():
            if name != "haar":
                print(f"{name}: {row['ms_per_photo_median'] / base['ms_per_photo_median']:.2f}x Haar's time, "
                      f"recall {row['recall'] - base['recall']:+.3f}, accuracy {row['accuracy_through_detection'] - base['accuracy_through_detection']:+.3f}")
    print(f"faces every detector found: {report['faces_all_detectors_found']}")
    pictures = report["no_face_pictures"]
    print(f"boxes on {len(pictures['pictures'])} scikit-image pictures without a face: {pictures['boxes']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fer2013/validation"))
    parser.add_argument("--n", type=int, default=None, help="faces to use (default: all)")
    parser.add_argument("--model", default=None, help="default: what models/current.json names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    report = run(args.data, args.n, args.model, args.seed)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
