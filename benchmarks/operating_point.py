"""Sad against neutral: is a model's shortfall its operating point (how readily it says "sad") or its discrimination?

    python benchmarks/operating_point.py --models current runs/NAME.keras
    python benchmarks/operating_point.py --votes ../shared/data/fer2013/ferplus_votes.csv   # against the consensus

For each model, its served probabilities (flip averaging as shipped, temperature 1) on the validation faces and on the
training faces as served (no augmentation), then:
- how many faces it calls each class, against how many there are, on both sets;
- the class offsets that bias-corrected temperature scaling fits on the *training* faces (log-probabilities times a,
  plus b; the offsets are b / a, in log-probability units), with and without its temperature, and the validation
  scores with those offsets added; and offsets fitted on half of the validation faces, scored on the other half;
- the bootstrap standard error of accuracy, sad F1 and neutral F1 as served;
- a sweep of one offset on sad's log-probability, scored on validation: accuracy, sad F1, neutral F1 and their sum.

An offset moves errors between sad and neutral; it does not make the model tell them apart better. If sad F1 + neutral
F1 stays level across the sweep, the shortfall is discrimination, and only a better network closes it. With `--votes`
both sets are labelled by the annotators' consensus (`fer.votes.label_faces`) instead of their folders. Run by hand,
not by CI; figures go to docs/model_card.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from accuracy import DEFAULT_DATA, raw_probabilities  # noqa: E402
from fer.errors import FerError  # noqa: E402
from fer.metrics import classification_report  # noqa: E402

DEFAULT_TRAIN = DEFAULT_DATA.parent / "train"
SWEEP = np.round(np.arange(-0.4, 1.01, 0.1), 2)
HALVINGS = 20
BOOTSTRAP = 1000


def fit_offsets(probabilities: np.ndarray, labels: np.ndarray, with_temperature: bool = True,
                iterations: int = 50) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling: the a > 0 and b (b[0] = 0) that minimise the negative log-likelihood of
    softmax(a * log p + b); a stays 1 unless `with_temperature`. Convex in (a, b), so damped Newton steps find the
    minimum. Returns (1 / a, b / a): the temperature, and the offsets on log p that pick the same top classes."""
    logp = np.log(np.clip(probabilities, 1e-12, 1.0))
    count, classes = logp.shape
    onehot = np.eye(classes)[labels]
    params = np.r_[1.0, np.zeros(classes - 1)]

    def loss_and_softmax(theta):
        z = theta[0] * logp + np.r_[0.0, theta[1:]]
        z -= z.max(axis=1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -np.mean(log_softmax[np.arange(count), labels]), np.exp(log_softmax)

    # d z / d theta, the same at every step (z is linear in theta): column 0 is log p, columns 1.. pick out classes 1..
    jacobian = np.concatenate([logp[:, :, None] * with_temperature,
                               np.broadcast_to(np.eye(classes)[:, 1:], (count, classes, classes - 1))], axis=2)
    loss, p = loss_and_softmax(params)
    for _ in range(iterations):
        residual = p - onehot
        gradient = np.einsum("nc,nck->k", residual, jacobian) / count
        curvature = p[:, :, None] * np.eye(classes) - p[:, :, None] * p[:, None, :]
        hessian = np.einsum("ncj,ncd,ndk->jk", jacobian, curvature, jacobian) / count
        step = np.linalg.solve(hessian + 1e-9 * np.eye(classes), gradient)  # a's row is 0 without the temperature
        scale = 1.0
        while scale > 1e-4:
            candidate = params - scale * step
            new_loss, new_p = loss_and_softmax(candidate)
            if candidate[0] > 0 and new_loss <= loss:
                break
            scale /= 2
        else:
            break
        converged = loss - new_loss < 1e-10
        params, loss, p = candidate, new_loss, new_p
        if converged:
            break
    return 1.0 / params[0], np.r_[0.0, params[1:]] / params[0]


def _scores(labels, logp, offsets, classes):
    """Accuracy, per-class F1 and how many faces each class gets when `offsets` are added to log p."""
    picked = (logp + offsets).argmax(axis=1)
    report = classification_report(labels, picked, classes)
    f1 = {name: values["f1"] for name, values in report["per_class"].items()}
    return report["accuracy"], f1, np.bincount(picked, minlength=len(classes))


def measure(name: str, validation_dir: Path, train_dir: Path, votes=None) -> None:
    from fer.evaluate import load_eval_faces
    from fer.models import resolve_model
    from fer.predict import load_predictor

    predictor = load_predictor(resolve_model(name))
    classes = list(predictor.classes)
    if "sad" not in classes or "neutral" not in classes:
        raise FerError(f"{name} predicts {', '.join(classes)}: this benchmark needs sad and neutral.")
    sad = classes.index("sad")
    sets = {}
    for split, folder in (("validation", validation_dir), ("training", train_dir)):
        faces, labels, _ = load_eval_faces(predictor, folder, votes=votes)
        probabilities = raw_probabilities(predictor, faces, predictor.flip_average)
        sets[split] = (np.log(np.clip(probabilities, 1e-12, 1.0)), labels, probabilities)
    print(f"\n## {name} ({predictor.runtime}; labels: {'consensus' if votes is not None else 'folders'})\n")
    print("| faces | " + " | ".join(f"{c}: called / there" for c in classes) + " |")
    print("|---|" + "---|" * len(classes))
    for split, (logp, labels, _) in sets.items():
        called = np.bincount(logp.argmax(axis=1), minlength=len(classes))
        there = np.bincount(labels, minlength=len(classes))
        print(f"| {split} ({len(labels):,}) | " + " | ".join(f"{c:,} / {t:,}" for c, t in zip(called, there)) + " |")

    logp, labels, probabilities = sets["validation"]
    temperature, offsets = fit_offsets(sets["training"][2], sets["training"][1])
    _, offsets_alone = fit_offsets(sets["training"][2], sets["training"][1], with_temperature=False)
    print("\n| offsets on log-probabilities | " + " | ".join(classes) + " | accuracy | sad F1 | neutral F1 | sum |")
    print("|---|" + "---|" * (len(classes) + 4))
    for label, chosen in (("none (as served)", np.zeros(len(classes))),
                          (f"fitted on training faces with a temperature ({temperature:.2f})", offsets),
                          ("fitted on training faces, temperature 1", offsets_alone)):
        accuracy, f1, _ = _scores(labels, logp, chosen, classes)
        print(f"| {label} | " + " | ".join(f"{value:+.3f}" for value in chosen)
              + f" | {accuracy:.4f} | {f1['sad']:.3f} | {f1['neutral']:.3f} | {f1['sad'] + f1['neutral']:.3f} |")
    # Fitted on one random half of validation, scored on the other half, and the other way round.
    rng, halvings = np.random.default_rng(0), []
    for _ in range(HALVINGS):
        order = rng.permutation(len(labels))
        picked = np.empty(len(labels), dtype=np.int64)
        for fit_half, score_half in ((order[::2], order[1::2]), (order[1::2], order[::2])):
            _, chosen = fit_offsets(probabilities[fit_half], labels[fit_half])
            picked[score_half] = (logp[score_half] + chosen).argmax(axis=1)
        report = classification_report(labels, picked, classes)
        halvings.append((report["accuracy"], report["per_class"]["sad"]["f1"], report["per_class"]["neutral"]["f1"]))
    accuracy, sad_f1, neutral_f1 = np.mean(halvings, axis=0)
    print(f"| fitted on one half of validation, scored on the other (mean of {HALVINGS} halvings) | "
          + " | ".join("" for _ in classes)
          + f" | {accuracy:.4f} | {sad_f1:.3f} | {neutral_f1:.3f} | {sad_f1 + neutral_f1:.3f} |")

    served = logp.argmax(axis=1)
    resamples = []
    for _ in range(BOOTSTRAP):
        drawn = rng.integers(0, len(labels), len(labels))
        report = classification_report(labels[drawn], served[drawn], classes)
        resamples.append((report["accuracy"], report["per_class"]["sad"]["f1"], report["per_class"]["neutral"]["f1"]))
    spread = np.std(resamples, axis=0)
    print(f"\nOne standard error as served ({BOOTSTRAP:,} bootstrap resamples of the validation faces): accuracy "
          f"{spread[0]:.4f}, sad F1 {spread[1]:.3f}, neutral F1 {spread[2]:.3f}.")

    print("\n| offset on sad | accuracy | sad F1 | neutral F1 | sum | faces called sad |")
    print("|---|---|---|---|---|---|")
    for value in SWEEP:
        chosen = np.zeros(len(classes))
        chosen[sad] = value + 0.0  # not -0.0
        accuracy, f1, called = _scores(labels, logp, chosen, classes)
        print(f"| {chosen[sad]:+.1f} | {accuracy:.4f} | {f1['sad']:.3f} | {f1['neutral']:.3f} | "
              f"{f1['sad'] + f1['neutral']:.3f} | {called[sad]} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/operating_point.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["current"], help="model names in models/ or .keras paths")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder-per-class validation faces")
    parser.add_argument("--train-data", type=Path, default=DEFAULT_TRAIN,
                        help="folder-per-class training faces (the offsets are fitted here)")
    parser.add_argument("--votes", type=Path, help="annotators' votes (fer.votes): label both sets by their consensus")
    args = parser.parse_args(argv)
    for folder in (args.data, args.train_data):
        if not folder.is_dir():
            parser.error(f"no faces at {folder}; pass --data and --train-data")
    try:
        votes = None
        if args.votes is not None:
            from fer import votes as fer_votes

            votes = fer_votes.read(args.votes)
        for name in args.models:
            measure(name, args.data, args.train_data, votes)
    except FerError as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
