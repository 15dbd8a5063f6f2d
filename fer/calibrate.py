"""Fit a model's calibration temperature on held-out faces and record its metrics in its JSON.

    python -m fer.calibrate runs/NAME.keras --data ../shared/data/fer2013 --no-flip-average

fer.train does this at the end of every run. A model trained on votes (fer.votes) is calibrated and scored against
their consensus, with the folder labels' figure beside it, as fer.train does. Run it again to serve a trained model
with flip averaging switched (`--flip-average` / `--no-flip-average`): the temperature and the metrics belong to
that setting. The LiteRT copy stays valid (the network is unchanged), but the check recorded with it was made with
the old setting, so it is dropped: `python -m fer.lite ... --check-data DIR` records it again. A model in a served models folder (one with
`current.json`) gets a `"calibrate"` event in that folder's `history.json`, since what it serves has changed.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys

from fer.errors import FerError
from fer.metrics import apply_temperature, expected_calibration_error, fit_temperature


def calibrate(model, metadata: dict, validation, consensus=None, votes=None) -> dict:
    """Serve `validation`'s faces (a `fer.data.FaceDataset`) through `model` as `metadata` says (preprocessing
    already applied, flip averaging), fit the temperature that minimises their negative log-likelihood, and set
    `metadata["inference"]["temperature"]` and `metadata["metrics"]["validation"]` (classification report, expected
    calibration error before and after).

    With `consensus` (the validation faces labelled by the annotators' `votes`, `fer.votes.label_faces`), the
    temperature is fitted on those labels, the truth such a model is trained for, and their report (with each
    class's recall on clear faces) goes to `metadata["metrics"]["validation_consensus"]`; `validation` keeps the
    folder labels' figure beside it. Returns `metadata`, changed in place."""
    from fer.evaluate import score
    from fer.predict import Predictor

    for faces in (validation, consensus):
        if faces is not None and tuple(faces.classes) != tuple(metadata["classes"]):
            raise ValueError(f"The validation faces' classes {faces.classes} are not the model's {metadata['classes']}.")
    inference = metadata.setdefault("inference", {})
    inference["temperature"] = 1.0
    predictor = Predictor(model, metadata)  # in memory: TensorFlow alone
    fit_on = validation if consensus is None else consensus
    raw = {id(faces): predictor.predict_faces(faces.images).astype(float)
           for faces in (validation, consensus) if faces is not None}
    temperature = fit_temperature(raw[id(fit_on)], fit_on.labels)
    inference["temperature"] = temperature
    metrics = metadata.setdefault("metrics", {})
    metrics.pop("validation_consensus", None)
    for key, faces, faces_votes in (("validation", validation, None), ("validation_consensus", consensus, votes)):
        if faces is None:
            continue
        calibrated = apply_temperature(raw[id(faces)], temperature)
        report = score(faces, calibrated, faces_votes)
        report["ece_before_calibration"] = expected_calibration_error(raw[id(faces)], faces.labels)
        report["ece_after_calibration"] = expected_calibration_error(calibrated, faces.labels)
        metrics[key] = report
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .keras file (a version name in models/ works too)")
    parser.add_argument("--data", required=True, help="held-out faces: a dataset root (its validation split is used) "
                                                      "or class folders")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--flip-average", dest="flip_average", action="store_true", default=None,
                      help="average each face with its mirror image (two passes a face)")
    flip.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                      help="one pass a face")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fer.config import PreprocessConfig
    from fer.data import folder_classes, load_faces
    from fer.votes import default_for, label_faces
    from fer.votes import read as read_votes
    from fer.gate import held_out_dir
    from fer.models import record_event, resolve_model
    from fer.registry import POINTER_NAME, load_model, metadata_path, write_json_atomic

    try:
        path = resolve_model(args.model)
        model, metadata = load_model(path)
        folder = held_out_dir(args.data)
        classes, preprocess = tuple(metadata["classes"]), PreprocessConfig.from_dict(metadata["preprocess"])
        votes_path = default_for(metadata)  # a model trained on votes is calibrated on their consensus
        consensus = votes = None
        if votes_path is None:
            validation = load_faces(folder, classes, preprocess)
        else:
            votes = read_votes(votes_path)
            every = load_faces(folder, folder_classes(folder), preprocess)
            validation, _ = label_faces(every, classes)
            consensus, _ = label_faces(every, classes, votes)
    except FerError as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    judged_by = "validation_consensus" if consensus is not None else "validation"  # the figure the gate reads
    before = metadata.get("metrics", {}).get(judged_by, {}).get("accuracy")
    inference = metadata.setdefault("inference", {})
    switched = args.flip_average is not None and args.flip_average != bool(inference.get("flip_average", False))
    if args.flip_average is not None:
        inference["flip_average"] = args.flip_average
    calibrate(model, metadata, validation, consensus, votes)
    metadata["calibrated"] = {
        "command": "python -m fer.calibrate " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    stale_check = switched and "check" in metadata.get("lite", {})
    if stale_check:
        del metadata["lite"]["check"]
    write_json_atomic(metadata_path(path), metadata)
    report = metadata["metrics"][judged_by]
    if (path.parent / POINTER_NAME).is_file():
        record_event({"action": "calibrate", "model": path.stem, "flip_average": inference["flip_average"],
                      "temperature": round(inference["temperature"], 4), "accuracy_before": before,
                      "accuracy": report["accuracy"], "data_dir": str(folder)}, path.parent)
    print(f"{path.name}: flip averaging {'on' if inference['flip_average'] else 'off'}, temperature "
          f"{inference['temperature']:.3f}; on {report['n_images']} faces accuracy {report['accuracy']:.4f}"
          + (f" (was {before:.4f})" if before is not None else "") + f", macro-F1 {report['macro_f1']:.4f}, "
          f"ECE {report['ece_before_calibration']:.3f} -> {report['ece_after_calibration']:.3f}")
    if stale_check:
        weights = metadata["lite"].get("weights", "float32")
        options = "--int8 " if weights.startswith("int8") else ""
        if weights == "int8-static":
            options += f"--calibration-data {metadata.get('data', {}).get('train_dir', 'TRAIN_DIR')} "
        print(f"The LiteRT copy's check was made with the old setting and is dropped; record it again with "
              f"`python -m fer.lite {options}--check-data {folder} {path}`.")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
