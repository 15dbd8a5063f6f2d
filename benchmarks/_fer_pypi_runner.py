"""Runs the PyPI `fer` package (justinshenk) for speed.py and peer_accuracy.py; run ONLY with the Python of the
separate venv it lives in.

    /work/fer-pypi-venv/bin/python benchmarks/_fer_pypi_runner.py

PyPI `fer` has our import name, so it never goes into this project's venv, and _fer_pypi.py starts this script with a
clean PYTHONPATH from a temporary working directory. Protocol, one JSON object a line:
  stdout, first:  {"ready": true, "version": ..., "module": ..., "import_s": ..., "init_s": {variant: s}}
  stdin:          {"image": PATH, "seconds": S, "min_repeats": N, "variant": "tflite" | "keras"}
  stdout:         {"times": [seconds per call, ...], "boxes": [[x, y, w, h], ...]}
  stdin:          {"video": PATH, "seconds": S, "min_repeats": N, "variant": ..., "save_video": BOOL}
  stdout:         {"times": [seconds per call, ...], "frames_with_faces": N}   (for video.py)
  stdin:          {"classify": [PATH, ...], "offsets": [X, Y], "variant": "tflite" | "keras"}
  stdout:         {"labels": [its 7 class names], "probabilities": [[7 floats] or null, ...]}
  stdin:          {"quit": true}   (or end of input): the runner exits
A command it cannot carry out is answered {"error": MESSAGE}.
Each timed call is what a user of the package does with a JPEG: cv2.imdecode of the file's bytes, then
FER(...).detect_emotions(image); or with a video: fer.Video(PATH, outdir).analyze(detector, output="csv",
save_frames=False, save_video=..., annotate_frames=...) on every frame, its progress bar going to stderr.
Video.analyze calls cv2.waitKey on every frame, which headless OpenCV lacks (it raises): it is replaced here by a
no-op, which can only make the package faster. Each classified file is taken whole as the face, the package's
documented way to skip its detector: detect_emotions(image, face_rectangles=[(0, 0, w, h)]) with FER(offsets=...)
(see `classify`).
"""

import json
import os
import shutil
import sys
import tempfile
import time

started = time.perf_counter()
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import fer  # noqa: E402
from fer.fer import FER  # noqa: E402

import_seconds = time.perf_counter() - started


class RecordingFER(FER):
    """FER that keeps its classifier's probabilities, (faces, 7) float, as `probabilities`: detect_emotions rounds them
    to two decimals, which ties classes on some faces."""

    def _classify_emotions(self, gray_faces):
        self.probabilities = np.asarray(super()._classify_emotions(gray_faces), dtype=np.float64)
        return self.probabilities


def classify(detector: RecordingFER, path: str):
    """The seven probabilities for the image file at `path` taken whole as one face, or None where the package
    returns no face.

    With a box given, detect_emotions grays the image (cv2.COLOR_BGR2GRAY: it expects BGR; a grayscale PNG read as
    BGR has three equal channels, which that turns back into the same values), pads it by 40 px of the mean of its
    bottom two rows, widens the box by FER(offsets=(x, y)) on each side, crops, resizes to its 64x64 input and scales
    to [-1, 1]. The default offsets (10, 10) put a 10 px border of that flat grey around a whole-image box;
    offsets (0, 0) give the crop itself, resized.
    """
    image = cv2.imread(path, cv2.IMREAD_COLOR)  # BGR uint8 (H, W, 3)
    if image is None:
        return None
    height, width = image.shape[:2]
    detector.probabilities = None
    faces = detector.detect_emotions(image, face_rectangles=[(0, 0, width, height)])
    if not faces or detector.probabilities is None:
        return None
    return [float(value) for value in detector.probabilities[0]]


def classify_all(detector: RecordingFER, paths: list[str]) -> dict:
    """The reply to a classify command: the package's class names, in its order, and `classify` of each path."""
    probabilities = []
    for path in paths:
        try:
            probabilities.append(classify(detector, path))
        except Exception as error:  # the parent stops on this: a crash is not a face the package failed to find
            return {"error": f"{path}: {type(error).__name__}: {error}"}
    return {"labels": [name for _, name in sorted(FER._get_labels().items())], "probabilities": probabilities}


def main() -> int:
    if "site-packages" not in fer.__file__:
        print(json.dumps({"error": f"imported fer from {fer.__file__}, not from the PyPI package"}), flush=True)
        return 2
    cascade = os.path.join(os.path.dirname(fer.__file__), "data", "haarcascade_frontalface_default.xml")
    detectors, init_seconds = {}, {}
    for variant, use_tflite in (("tflite", True), ("keras", False)):
        begun = time.perf_counter()
        try:
            detectors[variant] = FER(cascade_file=cascade, use_tflite=use_tflite)  # the package's default is tflite
        except Exception as error:  # report, do not hide: the parent prints it
            init_seconds[variant] = f"unavailable: {type(error).__name__}: {error}"
            continue
        init_seconds[variant] = time.perf_counter() - begun
    print(json.dumps({"ready": True, "version": getattr(fer, "__version__", "?"), "module": fer.__file__,
                      "cascade": cascade, "import_s": import_seconds, "init_s": init_seconds}), flush=True)
    classifiers = {}  # (variant, offsets): RecordingFER; the package caches its models, so each is cheap
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("quit"):
            return 0
        variant = command.get("variant", "tflite")
        if not isinstance(init_seconds.get(variant), float):
            print(json.dumps({"error": f"its {variant} model is {init_seconds.get(variant, 'unknown')}"}), flush=True)
            continue
        if "classify" in command:
            key = (variant, tuple(int(value) for value in command.get("offsets", (10, 10))))
            if key not in classifiers:
                classifiers[key] = RecordingFER(cascade_file=cascade, use_tflite=variant == "tflite", offsets=key[1])
            print(json.dumps(classify_all(classifiers[key], command["classify"])), flush=True)
            continue
        detector = detectors[variant]
        if "video" in command:
            print(json.dumps(time_video(detector, command)), flush=True)
            continue
        with open(command["image"], "rb") as stream:
            data = np.frombuffer(stream.read(), np.uint8)
        times, result = [], []
        deadline = time.perf_counter() + float(command.get("seconds", 0))
        while len(times) < int(command.get("min_repeats", 1)) or time.perf_counter() < deadline:
            begun = time.perf_counter()
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # BGR, as the package expects
            result = detector.detect_emotions(image)
            times.append(time.perf_counter() - begun)
        boxes = [[int(value) for value in face["box"]] for face in result]
        print(json.dumps({"times": times, "boxes": boxes}), flush=True)
    return 0


def time_video(detector, command: dict) -> dict:
    import logging

    from fer.classes import Video

    logging.getLogger("fer").setLevel(logging.WARNING)  # it logs each video's settings at INFO
    cv2.waitKey = lambda delay=0: -1
    cv2.destroyAllWindows = lambda: None
    save = bool(command.get("save_video", False))
    times, found = [], 0
    deadline = time.perf_counter() + float(command.get("seconds", 0))
    while len(times) < int(command.get("min_repeats", 1)) or time.perf_counter() < deadline:
        outdir = tempfile.mkdtemp(prefix="fer-pypi-video-", dir=".")
        try:
            begun = time.perf_counter()
            video = Video(command["video"], outdir=outdir)
            data = video.analyze(detector, display=False, output="csv", save_frames=False, save_video=save,
                                 annotate_frames=save, zip_images=False)
            times.append(time.perf_counter() - begun)
            found = len(data)  # one entry per frame in which it found a face
        finally:
            shutil.rmtree(outdir, ignore_errors=True)
    return {"times": times, "frames_with_faces": found}


if __name__ == "__main__":
    sys.exit(main())
