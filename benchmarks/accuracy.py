"""The model card's figures: each model on the same validation faces, inference ablations, and robustness.

    python benchmarks/accuracy.py                                   # every model in models/, the table
    python benchmarks/accuracy.py --models seed_cnn vgg_small_cos --robustness --json runs/accuracy.json
    python benchmarks/accuracy.py --models vgg_small_reg --views                    # more test-time views than the flip
    python benchmarks/accuracy.py --ensemble vgg_small_reg runs/wide/vgg_wide.keras  # averaged served probabilities
    python benchmarks/accuracy.py --votes ../shared/data/fer2013/ferplus_votes.csv --robustness  # against consensus

For each model: accuracy, macro-F1, per-class F1, parameters, and classifier speed (one face per call, and faces per
second in batches of 64) measured here, in the same process, so the ratios between models hold on a busy machine.
The inference ablation scores each model with and without flip averaging and calibration (ECE before/after);
`--views` adds test-time views beyond the mirror image (small shifts, zooms or rotations, each view flip-averaged,
their probabilities averaged). `--ensemble A B ...` (repeatable) scores the average of several models' served
probabilities (each with its own flip averaging and temperature); its compute is the sum of theirs.
`--robustness` scores the same faces after perturbations that stand in for known failure modes (dim and harsh
lighting, low contrast, blur, in-plane head tilt, a dark band over the eyes like sunglasses, a small or off-centre
crop), each reported with its drop from the clean accuracy. `--votes` scores every figure against the annotators'
consensus (fer.votes: faces of every folder, labelled by their majority) and adds each model's recall on clear faces.
Run by hand, not by CI; figures go to docs/model_card.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer.config import models_dir  # noqa: E402
from fer.errors import FerError  # noqa: E402
from fer.metrics import apply_temperature, classification_report, expected_calibration_error  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fer2013" / "validation"


def _gamma(faces: np.ndarray, gamma: float) -> np.ndarray:
    return (255.0 * (faces / 255.0) ** gamma).round().astype(np.uint8)


def _contrast(faces: np.ndarray, factor: float) -> np.ndarray:
    mean = faces.mean(axis=(1, 2), keepdims=True)
    return np.clip(mean + factor * (faces - mean), 0, 255).round().astype(np.uint8)


def _each(faces: np.ndarray, transform) -> np.ndarray:
    return np.stack([transform(face) for face in faces])


def _warp(dx: float = 0.0, dy: float = 0.0, degrees: float = 0.0, scale: float = 1.0):
    """The face moved by (dx, dy) pixels, rotated and scaled about its centre, edges repeated: a head tilt, or a
    test-time view."""
    import cv2

    def transform(face):
        size = face.shape[0]
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), degrees, scale)
        matrix[:, 2] += (dx, dy)
        return cv2.warpAffine(face, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)
    return transform


def _blur(face):
    import cv2

    return cv2.GaussianBlur(face, (5, 5), 1.5)


def _sunglasses(face):
    out = face.copy()
    size = face.shape[0]
    out[int(0.28 * size):int(0.45 * size), int(0.12 * size):int(0.88 * size)] = 20
    return out


def _zoom_out(face):
    """The face at 75% size with its surroundings replicated: a looser crop than FER2013's framing."""
    import cv2

    size = face.shape[0]
    inner = cv2.resize(face, (round(0.75 * size),) * 2, interpolation=cv2.INTER_AREA)
    pad = (size - inner.shape[0]) // 2
    return cv2.copyMakeBorder(inner, pad, size - inner.shape[0] - pad, pad, size - inner.shape[1] - pad,
                              cv2.BORDER_REPLICATE)


def _shift(face):
    """The crop moved by 15% of its side to the right and down: a detector box that missed the centre."""
    import cv2

    size = face.shape[0]
    matrix = np.float32([[1, 0, 0.15 * size], [0, 1, 0.15 * size]])
    return cv2.warpAffine(face, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)


# Each entry: the views whose (flip-averaged) probabilities are averaged with the face's own.
TEST_TIME_VIEWS = {
    "flip + shifts ±2 px": [_warp(dx=2), _warp(dx=-2), _warp(dy=2), _warp(dy=-2)],
    "flip + zoom ±10%": [_warp(scale=1.1), _warp(scale=0.9)],
    "flip + rotations ±8°": [_warp(degrees=8), _warp(degrees=-8)],
}

PERTURBATIONS = {
    "dim light (gamma 2.0)": lambda faces: _gamma(faces, 2.0),
    "harsh light (gamma 0.5)": lambda faces: _gamma(faces, 0.5),
    "low contrast (x0.4)": lambda faces: _contrast(faces, 0.4),
    "blur (sigma 1.5)": lambda faces: _each(faces, _blur),
    "head tilt 15°": lambda faces: _each(faces, _warp(degrees=15)),
    "head tilt 30°": lambda faces: _each(faces, _warp(degrees=30)),
    "dark band over the eyes": lambda faces: _each(faces, _sunglasses),
    "looser crop (face at 75%)": lambda faces: _each(faces, _zoom_out),
    "off-centre crop (15%)": lambda faces: _each(faces, _shift),
}


def raw_probabilities(predictor, faces: np.ndarray, flip: bool) -> np.ndarray:
    """Uncalibrated probabilities, with or without flip averaging: the served path with temperature 1."""
    from fer.predict import Predictor

    inference = {"flip_average": flip, "temperature": 1.0}
    variant = Predictor(predictor.model, {**predictor.metadata, "inference": inference}, predictor.path)
    return variant.predict_faces(faces).astype(np.float64)


def speed(predictor, faces: np.ndarray, seconds: float = 3.0) -> dict:
    """Served-path timings: ms for one face per call, and faces/s at batch 64 (flip averaging as shipped)."""
    one, batch = faces[:1], faces[:64]
    for _ in range(5):
        predictor.predict_faces(one)
        predictor.predict_faces(batch)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.predict_faces(one)
        calls += 1
    single_ms = 1000 * (time.perf_counter() - started) / calls
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.predict_faces(batch)
        calls += 1
    return {"ms_per_face_batch1": single_ms, "faces_per_s_batch64": 64 * calls / (time.perf_counter() - started)}


def score(probabilities: np.ndarray, labels: np.ndarray, classes) -> dict:
    report = classification_report(labels, probabilities.argmax(axis=1), classes)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "f1": {name: values["f1"] for name, values in report["per_class"].items()},
            "confusion": report["confusion"]}


def _ablation_entry(raw: np.ndarray, labels: np.ndarray, temperature: float, classes) -> dict:
    """Scores of the calibrated `raw` probabilities, with the ECE before and after calibration."""
    calibrated = apply_temperature(raw, temperature)
    return {**score(calibrated, labels, classes), "ece_raw": expected_calibration_error(raw, labels),
            "ece_calibrated": expected_calibration_error(calibrated, labels)}


def measure(name: str, data: Path, robustness: bool, views: bool = False, votes=None) -> dict:
    from fer.evaluate import load_eval_set
    from fer.evaluate import score as report
    from fer.models import resolve_model
    from fer.predict import load_predictor

    predictor = load_predictor(resolve_model(name))
    dataset, _ = load_eval_set(predictor, data, votes=votes)
    faces, labels = dataset.images, dataset.labels
    temperature = predictor.temperature
    result = {"model": name, "arch": predictor.metadata.get("arch"), "parameters": int(predictor.model.count_params()),
              "flip_average": predictor.flip_average, "temperature": temperature, "n_images": int(len(faces))}
    ablation, raws = {}, {}
    for flip in (False, True):
        raw = raws[flip] = raw_probabilities(predictor, faces, flip)
        ablation["flip" if flip else "no flip"] = _ablation_entry(raw, labels, temperature, predictor.classes)
    if views:
        for label, transforms in TEST_TIME_VIEWS.items():
            raw = np.mean([raws[True]] + [raw_probabilities(predictor, _each(faces, t), True) for t in transforms], axis=0)
            ablation[label] = _ablation_entry(raw, labels, temperature, predictor.classes)
    shipped = ablation["flip" if predictor.flip_average else "no flip"]
    result.update(shipped=shipped, ablation=ablation, speed=speed(predictor, faces))
    if votes is not None:
        served = apply_temperature(raws[bool(predictor.flip_average)], temperature)
        result["clear_recall"] = report(dataset, served, votes)["clear_recall"]
    if robustness:
        result["robustness"] = {}
        for label, perturb in PERTURBATIONS.items():
            changed = perturb(faces)
            probabilities = apply_temperature(raw_probabilities(predictor, changed, predictor.flip_average), temperature)
            scores = score(probabilities, labels, predictor.classes)
            result["robustness"][label] = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                                           "sad_f1": scores["f1"]["sad"], "neutral_f1": scores["f1"]["neutral"],
                                           "drop": shipped["accuracy"] - scores["accuracy"]}
    return result


def measure_ensemble(names: list[str], data: Path, votes=None) -> dict:
    """The average of the named models' served probabilities on the validation faces, scored."""
    from fer.evaluate import load_eval_faces
    from fer.models import resolve_model
    from fer.predict import load_predictor

    predictors = [load_predictor(resolve_model(name)) for name in names]
    first = predictors[0]
    for name, other in zip(names[1:], predictors[1:]):
        if tuple(other.classes) != tuple(first.classes) or other.image_size != first.image_size:
            raise FerError(f"{name} predicts {', '.join(other.classes)} from {other.image_size}-pixel faces; "
                           f"{names[0]} predicts {', '.join(first.classes)} from {first.image_size}: "
                           "an ensemble needs the same classes and face size.")
    faces, labels, _ = load_eval_faces(first, data, votes=votes)
    probabilities = np.mean([predictor.predict_faces(faces) for predictor in predictors], axis=0)
    return {"members": list(names), "n_images": int(len(faces)),
            "shipped": {**score(probabilities, labels, first.classes),
                        "ece": expected_calibration_error(probabilities, labels)},
            "parameters": int(sum(predictor.model.count_params() for predictor in predictors))}


def print_ensembles(ensembles: list[dict]) -> None:
    classes = list(ensembles[0]["shipped"]["f1"])
    print("\n| ensemble (served probabilities averaged) | accuracy | macro-F1 | "
          + " | ".join(f"{c} F1" for c in classes) + " | ECE | parameters |")
    print("|---" * (5 + len(classes)) + "|")
    for e in ensembles:
        s = e["shipped"]
        print(f"| {' + '.join(e['members'])} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | "
              + " | ".join(f"{s['f1'][c]:.3f}" for c in classes) + f" | {s['ece']:.4f} | {e['parameters']:,} |")


def print_tables(results: list[dict]) -> None:
    classes = list(results[0]["shipped"]["f1"])
    print("\n| model | accuracy | macro-F1 | " + " | ".join(f"{c} F1" for c in classes)
          + " | parameters | ms/face (batch 1) | faces/s (batch 64) |")
    print("|---" * (6 + len(classes)) + "|")
    for r in results:
        s = r["shipped"]
        print(f"| {r['model']} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | "
              + " | ".join(f"{s['f1'][c]:.3f}" for c in classes)
              + f" | {r['parameters']:,} | {r['speed']['ms_per_face_batch1']:.2f} | {r['speed']['faces_per_s_batch64']:.0f} |")
    if "clear_recall" in results[0]:
        print("\n| model | " + " | ".join(f"{c} recall on clear faces ({results[0]['clear_recall'][c]['support']})"
                                         for c in classes) + " |")
        print("|---" * (1 + len(classes)) + "|")
        for r in results:
            print(f"| {r['model']} | " + " | ".join(f"{r['clear_recall'][c]['recall']:.3f}" for c in classes) + " |")
    base = results[0]["speed"]
    if len(results) > 1:
        print("\nspeed ratios against " + results[0]["model"] + ": " + ", ".join(
            f"{r['model']} {r['speed']['ms_per_face_batch1'] / base['ms_per_face_batch1']:.2f}x time per face"
            for r in results[1:]))
    print("\n| model | inference | accuracy | macro-F1 | sad F1 | neutral F1 | ECE raw | ECE calibrated |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for variant, s in r["ablation"].items():
            print(f"| {r['model']} | {variant} (T={r['temperature']:.3f}) | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | "
                  f"{s['f1']['sad']:.3f} | {s['f1']['neutral']:.3f} | {s['ece_raw']:.4f} | {s['ece_calibrated']:.4f} |")
    for r in results:
        if "robustness" not in r:
            continue
        print(f"\nrobustness of {r['model']} (clean accuracy {r['shipped']['accuracy']:.4f})\n")
        print("| condition | accuracy | drop | sad F1 | neutral F1 |")
        print("|---|---|---|---|---|")
        for label, s in r["robustness"].items():
            print(f"| {label} | {s['accuracy']:.4f} | {s['drop']:+.4f} | {s['sad_f1']:.3f} | {s['neutral_f1']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    from fer.models import resolve_model

    parser = argparse.ArgumentParser(prog="python benchmarks/accuracy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="model names in models/ or .keras paths (default: every model "
                                                    "in models/, unless --ensemble); the first is the speed baseline")
    parser.add_argument("--ensemble", nargs="+", action="append", default=[], metavar="MODEL",
                        help="score these models' averaged served probabilities; repeat for several ensembles")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder-per-class validation faces")
    parser.add_argument("--robustness", action="store_true", help="also score perturbed faces")
    parser.add_argument("--views", action="store_true", help="also score test-time views beyond the flip")
    parser.add_argument("--votes", type=Path, help="score against the annotators' consensus in this votes file "
                                                   "(../shared/data/fer2013/ferplus_votes.csv)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"no validation faces at {args.data}; pass --data")
    names = args.models or ([] if args.ensemble else sorted(path.stem for path in models_dir().glob("*.keras")))
    results, ensembles = [], []
    try:
        from fer.votes import read as read_votes

        votes = read_votes(args.votes) if args.votes else None
        for name in names + [member for members in args.ensemble for member in members]:
            resolve_model(name)  # a typo stops the run before minutes of measuring, not after
        for name in names:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            results.append(measure(name, args.data, args.robustness, args.views, votes))
        for members in args.ensemble:
            print(f"measuring the ensemble {' + '.join(members)} ...", file=sys.stderr, flush=True)
            ensembles.append(measure_ensemble(members, args.data, votes))
    except FerError as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    if results:
        print_tables(results)
    if ensembles:
        print_ensembles(ensembles)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results + ensembles, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
