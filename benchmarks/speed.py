"""Speed of fer (issue 6), measured against the PyPI `fer` package on the same photos in one run.

    python benchmarks/speed.py                                  # the table (about 2.5 minutes on two busy cores)
    python benchmarks/speed.py --json runs/speed.json           # also write every figure as JSON
    python benchmarks/speed.py --investigate                    # also runtimes, flip averaging, detection, threads (+5 min)
    python benchmarks/speed.py --quick                          # short timings, one cold start: for trying changes
    python benchmarks/speed.py --model models/vgg_small_reg.keras   # another model (default: what models/current.json names)

The PyPI package runs in its own virtual environment, outside this project, because it has our import name
(benchmarks/README.md shows how to make it); --fer-python points at its interpreter.

Timings are medians of many calls. Cases that are compared are measured in alternating slices (ours, theirs, ours,
...), so a change in background load hits both sides alike: on a shared machine trust the ratios more than the
absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run as a script from anywhere: `import fer` means this project
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import _fer_pypi  # noqa: E402
import _photos  # noqa: E402
import _runtimes  # noqa: E402

# Goals from issue 6.
GOAL_RATIO_ONE_FACE = 1 / 3        # our end-to-end time for one face at 640x480, as a fraction of PyPI fer's
GOAL_BATCH_FACES_PER_S = 2000      # classifier throughput, batched
GOAL_ONE_FACE_MS = 5.0             # classifier latency, one face
GOAL_WEBCAM_FPS = 15.0             # frames/s through the app's webcam handler
GOAL_COLD_START_S = 10.0           # process start to first prediction

# Children print one JSON line: `done_at` (time.time() right after the first prediction, so the parent can time from
# its own spawn, excluding interpreter teardown), phase times, and VmHWM, the peak resident memory of the child's own
# address space (see run_child for why not only ru_maxrss).
_PEAK = "int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
COLD_START_CODE = f"""
import json, sys, time
begun = time.perf_counter()
import fer
imported = time.perf_counter()
predictor = fer.load_predictor(sys.argv[1])
loaded = time.perf_counter()
faces = predictor.predict(sys.argv[2])
predicted = time.perf_counter()
print(json.dumps({{"done_at": time.time(), "faces": len(faces), "import_fer_s": imported - begun,
                  "load_predictor_s": loaded - imported, "first_predict_s": predicted - loaded, "vmhwm_kib": {_PEAK}}}))
"""

PYPI_COLD_START_CODE = f"""
import json, os, sys, time
begun = time.perf_counter()
import cv2
import fer
from fer.fer import FER
imported = time.perf_counter()
detector = FER(cascade_file=os.path.join(os.path.dirname(fer.__file__), "data", "haarcascade_frontalface_default.xml"))
loaded = time.perf_counter()
faces = detector.detect_emotions(cv2.imread(sys.argv[1]))
predicted = time.perf_counter()
print(json.dumps({{"done_at": time.time(), "faces": len(faces), "import_fer_s": imported - begun,
                  "load_predictor_s": loaded - imported, "first_predict_s": predicted - loaded, "vmhwm_kib": {_PEAK}}}))
"""

BUILD_UNTRAINED_CODE = """
import sys
import keras
from fer.model import build_model
keras.utils.set_random_seed(0)
build_model(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])).save(sys.argv[1])
print("{}")
"""


# ---------------------------------------------------------------- timing

def measure(function, seconds: float, min_repeats: int = 1) -> list[float]:
    """Call `function` until `seconds` have passed and it ran at least `min_repeats` times; seconds per call."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_repeats or time.perf_counter() < deadline:
        begun = time.perf_counter()
        function()
        times.append(time.perf_counter() - begun)
    return times


class SelfTimed:
    """An `interleave` case that times itself: `timed(seconds)` returns seconds per call (a subprocess, a stream)."""

    def __init__(self, timed):
        self.timed = timed


def interleave(cases: dict, seconds: float, rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Time each case for `seconds` in all, in `rounds` alternating slices (order reversed every other round).

    A case is a function of no arguments, or a SelfTimed. Returns {name: seconds per call}.
    """
    for case in cases.values():
        for _ in range(warmup):
            if isinstance(case, SelfTimed):
                case.timed(0.0)
            else:
                case()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for round_number in range(rounds):
        for name in names if round_number % 2 == 0 else reversed(names):
            case = cases[name]
            slice_seconds = seconds / rounds
            times[name] += case.timed(slice_seconds) if isinstance(case, SelfTimed) else measure(case, slice_seconds)
    return times


def median_ms(times: list[float]) -> float:
    return float(np.median(times)) * 1000.0


# ---------------------------------------------------------------- what is measured

def resolve_model_path(args, workdir: Path) -> tuple[Path, str]:
    """(.keras path, how it was chosen): --model, else models/current.json, else a fresh untrained model.

    Nothing here imports TensorFlow into this process (the untrained model is built in a child), so the cold-start
    children that follow are spawned from a small parent.
    """
    from fer.errors import FerError
    from fer.registry import current_model_path, write_json_atomic

    if args.model and not args.untrained:
        from fer.models import resolve_model

        return resolve_model(args.model), "--model"
    if not args.untrained:
        try:
            path = current_model_path()
            if path.is_file():
                return path, "models/current.json"
        except FerError:
            pass
    from fer.config import CLASS_NAMES, IMAGE_SIZE, PreprocessConfig

    path = workdir / f"untrained_{args.arch}.keras"
    run_child([sys.executable, "-c", BUILD_UNTRAINED_CODE, str(path), args.arch, str(len(CLASS_NAMES)), str(IMAGE_SIZE)],
              ROOT, dict(os.environ, PYTHONPATH=str(ROOT)))
    # The shipped model's inference settings: flip averaging doubles the classifier's work, so it must match.
    write_json_atomic(path.with_suffix(".json"), {
        "name": path.stem, "classes": list(CLASS_NAMES), "image_size": IMAGE_SIZE, "arch": args.arch,
        "preprocess": PreprocessConfig().to_dict(), "inference": {"flip_average": True, "temperature": 1.0}})
    how = "untrained, weights do not change speed" + ("" if args.untrained else "; no --model and no models/current.json")
    return path, how


class Photos:
    """The two 640x480 benchmark photos as RGB arrays, JPEG bytes and JPEG files, and (after `crop`) their faces."""

    def __init__(self, workdir: Path):
        from fer.faces import detect_faces
        from fer.images import load_image

        self.rgb = {"one": _photos.one_face_photo(), "five": _photos.five_face_photo()}
        self.jpeg = {name: _photos.encode_jpeg(image) for name, image in self.rgb.items()}
        self.path = {}
        for name, data in self.jpeg.items():
            self.path[name] = workdir / f"{name}_face.jpg"
            self.path[name].write_bytes(data)
        self.boxes = {name: detect_faces(load_image(data)) for name, data in self.jpeg.items()}
        found = {name: len(boxes) for name, boxes in self.boxes.items()}
        if found != {"one": 1, "five": 5}:
            raise SystemExit(f"The detector found {found} faces in the benchmark photos instead of one and five; "
                             "fix benchmarks/_photos.py before timing anything.")
        self.faces = None

    def crop(self, predictor) -> "Photos":
        """Set `faces`: the six real faces as `predictor`'s inputs, (6, S, S) uint8."""
        from fer.images import load_image
        from fer.preprocess import preprocess_face

        self.faces = np.stack([preprocess_face(load_image(self.jpeg[name]), box, predictor.preprocess_config)
                               for name in ("one", "five") for box in self.boxes[name]])
        return self


def classifier_figures(predictor, photos: Photos, seconds: float, rounds: int) -> dict:
    batch_1 = photos.faces[:1]
    batch_64 = np.resize(photos.faces, (64,) + photos.faces.shape[1:])  # the six faces repeated
    times = interleave({"batch_1": lambda: predictor.predict_faces(batch_1),
                        "batch_64": lambda: predictor.predict_faces(batch_64)}, seconds, rounds)
    one_ms, batch_ms = median_ms(times["batch_1"]), median_ms(times["batch_64"])
    return {"batch_1_ms_per_face": one_ms, "batch_1_faces_per_s": 1000.0 / one_ms,
            "batch_64_ms_per_batch": batch_ms, "batch_64_faces_per_s": 64 * 1000.0 / batch_ms}


class PypiFer(_fer_pypi.PypiFer):
    """The PyPI fer package in its own venv's subprocess (_fer_pypi.py), with its detect_emotions as timing cases."""

    def case(self, image: Path, variant: str = "tflite") -> SelfTimed:
        """An `interleave` case timing detect_emotions on `image`; `.boxes` holds the faces it found last."""

        def timed(seconds: float) -> list[float]:
            reply = self.time_detect(image, seconds, 1, variant)
            case.boxes = reply["boxes"]
            return reply["times"]

        case = SelfTimed(timed)
        case.boxes = []
        return case


def end_to_end_figures(predictor, photos: Photos, pypi: PypiFer | None, seconds: float, rounds: int) -> dict:
    cases, pypi_cases = {}, {}
    for name in ("one", "five"):
        data = photos.jpeg[name]
        cases[f"ours_{name}"] = lambda data=data: predictor.predict(data)
        if pypi is not None:
            pypi_cases[name] = cases[f"pypi_{name}"] = pypi.case(photos.path[name])
            if isinstance(pypi.info["init_s"].get("keras"), float):  # its Keras model loaded as well
                cases[f"pypi_keras_{name}"] = pypi.case(photos.path[name], "keras")
    times = interleave(cases, seconds, rounds)
    figures = {}
    for name in ("one", "five"):
        figures[f"ours_{name}_face_ms"] = median_ms(times[f"ours_{name}"])
        if pypi is not None:
            figures[f"pypi_{name}_face_ms"] = median_ms(times[f"pypi_{name}"])
            figures[f"pypi_{name}_face_found"] = len(pypi_cases[name].boxes)
            figures[f"ratio_{name}_face"] = figures[f"ours_{name}_face_ms"] / figures[f"pypi_{name}_face_ms"]
            if f"pypi_keras_{name}" in times:
                figures[f"pypi_keras_{name}_face_ms"] = median_ms(times[f"pypi_keras_{name}"])
    return figures


def webcam_figures(predictor, photos: Photos, seconds: float, rounds: int) -> dict:
    """Frames/s through fer.live.process_frame (the Live tab's handler), if that module exists yet."""
    try:
        from fer import live
        process_frame, session_type = live.process_frame, live.LiveSession
        detect_every = getattr(getattr(live, "LiveConfig", None), "detect_every", 1)
    except (ImportError, AttributeError) as error:
        return {"available": False, "reason": f"fer.live not available ({type(error).__name__}: {error})"}
    chunk = max(1, int(detect_every))  # whole detection cycles, so every slice does the same mix of work
    sessions = {name: session_type() for name in ("one", "five")}

    def case(name):
        frame = photos.rgb[name]  # webcam frames reach the handler decoded: RGB uint8 (480, 640, 3)

        def timed(slice_seconds):
            times = []
            deadline = time.perf_counter() + slice_seconds
            while not times or time.perf_counter() < deadline:
                for _ in range(chunk):
                    begun = time.perf_counter()
                    process_frame(predictor, frame, sessions[name])
                    times.append(time.perf_counter() - begun)
            return times

        return SelfTimed(timed)

    try:
        times = interleave({name: case(name) for name in sessions}, seconds, rounds, warmup=1)
    except Exception as error:  # the handler is still being written: report, do not stop the benchmark
        return {"available": False, "reason": f"fer.live.process_frame failed ({type(error).__name__}: {error})"}
    figures = {"available": True, "detect_every": chunk}
    for name, frame_times in times.items():
        figures[f"{name}_face_fps"] = len(frame_times) / sum(frame_times)
        figures[f"{name}_face_worst_ms"] = max(frame_times) * 1000.0
        figures[f"{name}_face_tracks"] = len(sessions[name].tracks)
    return figures


def run_child(command: list[str], cwd: Path, environment: dict) -> dict:
    """Run a process to its end; its JSON line, plus wall_s (spawn to exit), first_s (spawn to the child's `done_at`),
    maxrss_mib (ru_maxrss of that child alone, from wait4) and peak_mib (its VmHWM, when it reports one).

    Linux carries the parent's peak RSS into a forked child's ru_maxrss, so ru_maxrss is only that child's own peak
    while the parent is smaller than it: speed.py times cold starts before it loads TensorFlow itself.
    """
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty stderr cannot block the child
        spawned_at = time.time()
        begun = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=errors)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
        wall = time.perf_counter() - begun
        process.stdout.close()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{command[0]} exited {process.returncode}: {errors.read().decode(errors='replace')[-2000:]}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    result.update(wall_s=wall, maxrss_mib=usage.ru_maxrss / 1024.0)
    if "done_at" in result:
        result["first_s"] = result["done_at"] - spawned_at
    if "vmhwm_kib" in result:
        result["peak_mib"] = result["vmhwm_kib"] / 1024.0
    return result


def cold_start_figures(model_path: Path, photo_path: Path, fer_python: str | None, runs: int, workdir: Path) -> dict:
    """Process start to first prediction, timed from outside, for ours and (if given) PyPI fer, alternately."""
    ours_environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    ours_environment["PYTHONPATH"] = str(ROOT)
    pypi_environment = _fer_pypi.clean_environment()
    results: dict[str, list[dict]] = {"ours": [], "pypi": []}
    for _ in range(runs):  # alternate, so both see the same background load
        results["ours"].append(run_child([sys.executable, "-c", COLD_START_CODE, str(model_path), str(photo_path)],
                                         ROOT, ours_environment))
        if fer_python:
            results["pypi"].append(run_child([fer_python, "-c", PYPI_COLD_START_CODE, str(photo_path)],
                                             workdir, pypi_environment))
    figures = {}
    for side, runs_done in results.items():
        if not runs_done:
            continue
        for key in ("first_s", "wall_s", "maxrss_mib", "peak_mib", "import_fer_s", "load_predictor_s", "first_predict_s"):
            figures[f"{side}_{key}"] = float(np.median([run[key] for run in runs_done]))
        figures[f"{side}_first_s_all"] = [round(run["first_s"], 2) for run in runs_done]
        figures[f"{side}_faces"] = runs_done[0]["faces"]
    figures["parent_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return figures


# ---------------------------------------------------------------- investigation

def investigate(predictor, model_path: Path, photos: Photos, pypi: PypiFer | None, seconds: float, rounds: int,
                workdir: Path) -> dict:
    report: dict = {}
    print("\ninvestigating: classifier runtimes ...", flush=True)
    report["runtimes"] = investigate_runtimes(predictor, photos, seconds, rounds)
    print("investigating: flip averaging ...", flush=True)
    report["flip_averaging"] = investigate_flip(predictor, photos, seconds, rounds)
    print("investigating: detection size ...", flush=True)
    report["detection"] = investigate_detection(photos, seconds, rounds)
    print("investigating: end to end with proposed settings ...", flush=True)
    report["end_to_end"] = investigate_end_to_end(predictor, photos, pypi, seconds, rounds)
    print("investigating: thread settings (one subprocess per setting) ...", flush=True)
    report["threads"] = investigate_threads(model_path, workdir, seconds * 2)
    print("investigating: runtime import cost ...", flush=True)
    report["imports"] = investigate_imports(predictor, workdir)
    return report


def investigate_runtimes(predictor, photos: Photos, seconds: float, rounds: int) -> dict:
    """One forward pass (no flip averaging) in each runtime, batch 1 and 64, and its largest difference from eager."""
    model = predictor.model
    forwards = {"tf.function (Predictor._forward)": predictor._forward,
                "keras model(x), eager": _runtimes.KerasEager(model),
                "keras model.predict(x)": _runtimes.KerasPredict(model)}
    for make in (lambda: _runtimes.TFLiteForward(model), lambda: _runtimes.TFLiteForward(model, num_threads=1),
                 lambda: _runtimes.TFLiteForward(model, quantize=True), lambda: _runtimes.OnnxForward(model),
                 lambda: _runtimes.OnnxForward(model, num_threads=1)):
        try:
            forward = make()
        except ImportError as error:
            forwards[f"onnxruntime: not installed ({error.name})"] = None
            continue
        forwards[forward.name] = forward
    report = {}
    for batch_size in (1, 64):
        batch = _runtimes.input_batch(np.resize(photos.faces, (batch_size,) + photos.faces.shape[1:]))
        reference = np.asarray(model(batch, training=False))
        cases = {name: (lambda forward=forward: forward(batch)) for name, forward in forwards.items() if forward}
        times = interleave(cases, seconds, rounds)
        for name, forward in forwards.items():
            row = report.setdefault(name, {})
            if forward is None:
                continue
            row[f"batch_{batch_size}_ms"] = median_ms(times[name])
            row[f"batch_{batch_size}_faces_per_s"] = batch_size * 1000.0 / median_ms(times[name])
            difference = float(np.abs(forward(batch) - reference).max())  # NaN stays NaN: a broken runtime shows
            row["max_abs_difference_from_eager"] = float(np.max([row.get("max_abs_difference_from_eager", 0.0), difference]))
    return report


def investigate_flip(predictor, photos: Photos, seconds: float, rounds: int) -> dict:
    """predict_faces today (two forward calls) against one call of 2N, and against no flip averaging at all."""
    report = {}
    try:
        onnx = _runtimes.OnnxForward(predictor.model, num_threads=1)
    except ImportError:
        onnx = None
    for batch_size in (1, 5, 64):
        faces = np.resize(photos.faces, (batch_size,) + photos.faces.shape[1:])
        batch = _runtimes.input_batch(faces)
        cases = {
            "predict_faces (as served)": lambda: predictor.predict_faces(faces),
            "one call of 2N (fused)": lambda: _runtimes.fused_flip_probabilities(predictor, faces),
            "no flip averaging (one call of N)": lambda: predictor._forward(batch),
        }
        if onnx is not None:
            cases["one call of 2N, onnxruntime 1 thread"] = lambda: _runtimes.fused_flip_probabilities(predictor, faces, onnx)
        times = interleave(cases, seconds, rounds)
        report[f"batch_{batch_size}"] = {name: median_ms(case_times) for name, case_times in times.items()}
    return report


@contextlib.contextmanager
def detection_constants(**constants):
    """Temporarily set fer.faces module constants (SCALE_FACTOR, MIN_FACE_PIXELS, MIN_NEIGHBOURS)."""
    from fer import faces

    saved = {name: getattr(faces, name) for name in constants}
    for name, value in constants.items():
        setattr(faces, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(faces, name, value)


def detect_faces_variant(image: np.ndarray, detector: str | None = None, **constants) -> list:
    """fer.faces.detect_faces itself, with another detector and/or its module constants changed for this call:
    what-ifs run the real code, so with no arguments this is exactly what the app does."""
    from fer import faces

    with detection_constants(**constants):
        return faces.detect_faces(image, detector=detector or faces.DEFAULT_DETECTOR)


# Detection settings compared: (label, keyword arguments of detect_faces_variant, OpenCV threads or None for default).
DETECTION_SETTINGS = [
    ("today: fast (LBP, Haar if LBP finds none)", {}, None),
    ("haar (the detector before LBP)", {"detector": "haar"}, None),
    ("lbp alone", {"detector": "lbp"}, None),
    ("fast, scaleFactor 1.2", {"SCALE_FACTOR": 1.2}, None),
    ("fast, faces >= 48 px", {"MIN_FACE_PIXELS": 48}, None),
    ("haar, faces >= 48 px", {"detector": "haar", "MIN_FACE_PIXELS": 48}, None),
    ("fast, cv2.setNumThreads(1)", {}, 1),
]


def investigate_detection(photos: Photos, seconds: float, rounds: int) -> dict:
    """Detection time and faces found under each DETECTION_SETTINGS entry, on both photos (recall on many faces:
    benchmarks/detection.py)."""
    from fer import faces
    from fer.images import load_image

    default_threads = cv2.getNumThreads()
    report = {"opencv_threads_default": default_threads}
    for name, data in photos.jpeg.items():
        image = load_image(data)

        def detect(settings, threads):
            if threads:
                cv2.setNumThreads(threads)
            try:
                return detect_faces_variant(image, **settings)
            finally:
                cv2.setNumThreads(default_threads)

        cases = {label: (lambda settings=settings, threads=threads: detect(settings, threads))
                 for label, settings, threads in DETECTION_SETTINGS}
        rows = {label: {"faces": len(cases[label]()),
                        "smallest_face_px": settings.get("MIN_FACE_PIXELS", faces.MIN_FACE_PIXELS)}
                for label, settings, _ in DETECTION_SETTINGS}
        times = interleave(cases, seconds, rounds)
        for label, row in rows.items():
            row["ms"] = median_ms(times[label])
        report[f"{name}_face"] = rows
    return report


def investigate_end_to_end(predictor, photos: Photos, pypi: PypiFer | None, seconds: float, rounds: int) -> dict:
    """Where today's end-to-end time goes, and what each of this version's two changes (LBP-first detection, the
    LiteRT copy) contributes, each with its ratio to PyPI fer timed in the same alternation."""
    from fer.faces import detect_faces
    from fer.images import load_image
    from fer.predict import Predictor
    from fer.preprocess import preprocess_face

    tensorflow_only = Predictor(predictor.model, predictor.metadata)  # no path: no LiteRT copy
    report = {"runtime": predictor.runtime}
    for name in ("one", "five"):
        data = photos.jpeg[name]
        rgb = load_image(data)
        boxes = detect_faces(rgb)
        faces = np.stack([preprocess_face(rgb, box, predictor.preprocess_config) for box in boxes])

        def pipeline(served, detector):
            """predictor.predict's steps (decode, detect, crop, classify) with another detector or runtime."""
            image = load_image(data)
            found = detect_faces_variant(image, detector=detector)
            return served.predict_faces(np.stack([preprocess_face(image, box, served.preprocess_config) for box in found]))

        cases = {
            "stage: decode (load_image)": lambda: load_image(data),
            "stage: detect (detect_faces)": lambda: detect_faces(rgb),
            "stage: crop (preprocess_face)": lambda: [preprocess_face(rgb, box, predictor.preprocess_config) for box in boxes],
            "stage: classify (predict_faces)": lambda: predictor.predict_faces(faces),
            "today: predictor.predict": lambda: predictor.predict(data),
            "before: Haar + TensorFlow": lambda: pipeline(tensorflow_only, "haar"),
            "Haar + LiteRT": lambda: pipeline(predictor, "haar"),
            "fast detector + TensorFlow": lambda: pipeline(tensorflow_only, "fast"),
        }
        if pypi is not None:
            cases["PyPI fer detect_emotions"] = pypi.case(photos.path[name])
        times = interleave(cases, seconds, rounds)
        rows = {label: {"ms": median_ms(case_times)} for label, case_times in times.items()}
        if pypi is not None:
            for label, row in rows.items():
                if not label.startswith("stage:"):
                    row["ratio_to_pypi_fer"] = row["ms"] / rows["PyPI fer detect_emotions"]["ms"]
        report[f"{name}_face"] = rows
    return report


THREADS_CODE = """
import json, os, sys, time
import numpy as np
import tensorflow as tf
intra, inter = int(sys.argv[2]), int(sys.argv[3])
tf.config.threading.set_intra_op_parallelism_threads(intra)
tf.config.threading.set_inter_op_parallelism_threads(inter)
sys.path[:0] = [sys.argv[5], sys.argv[5] + "/benchmarks"]
import tempfile
from pathlib import Path
import speed
from fer.predict import load_predictor
predictor = load_predictor(sys.argv[1])
workdir = tempfile.TemporaryDirectory()  # removed when this process exits
photos = speed.Photos(Path(workdir.name)).crop(predictor)
faces = np.resize(photos.faces, (64,) + photos.faces.shape[1:])
seconds = float(sys.argv[4])
times = speed.interleave({"batch_1": lambda: predictor.predict_faces(faces[:1]),
                          "batch_64": lambda: predictor.predict_faces(faces),
                          "end_to_end_one_face": lambda: predictor.predict(photos.jpeg["one"])}, seconds, 2)
print(json.dumps({name: float(np.median(values)) * 1000 for name, values in times.items()}))
"""


def investigate_threads(model_path: Path, workdir: Path, seconds: float = 3.0) -> dict:
    """TensorFlow intra-/inter-op thread counts, each in a fresh process (they cannot change once TF has started)."""
    settings = [(0, 0), (1, 1), (2, 1), (2, 2)]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    results: dict[str, list[dict]] = {}
    for order in (settings, settings[::-1]):  # both orders, so a drifting background load does not favour one
        for intra, inter in order:
            label = f"intra {intra}, inter {inter}" + (" (TF default: all cores)" if intra == inter == 0 else "")
            command = [sys.executable, "-c", THREADS_CODE, str(model_path), str(intra), str(inter), str(seconds / 2), str(ROOT)]
            results.setdefault(label, []).append(run_child(command, workdir, environment))
    return {label: {key: float(np.median([run[key] for run in runs]))
                    for key in ("batch_1", "batch_64", "end_to_end_one_face")} for label, runs in results.items()}


IMPORTS_CODE = {
    "import tensorflow": f"import json, time, tensorflow\nprint(json.dumps({{'done_at': time.time(), 'vmhwm_kib': {_PEAK}}}))",
    "onnxruntime: import, load, one face": (
        "import json, sys, time, numpy as np, onnxruntime as o\n"
        "s = o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "s.run(None, {s.get_inputs()[0].name: np.zeros((2, 48, 48, 1), np.float32)})\n"
        f"print(json.dumps({{'done_at': time.time(), 'vmhwm_kib': {_PEAK}}}))"),
}


def investigate_imports(predictor, workdir: Path) -> dict:
    """What a serving process pays before its first face in each runtime: wall time and peak memory."""
    report = {}
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        onnx_path = workdir / "model.onnx"
        onnx_path.write_bytes(_runtimes.OnnxForward(predictor.model).content)
    except ImportError:
        onnx_path = None
    for label, code in IMPORTS_CODE.items():
        if "onnxruntime" in label and onnx_path is None:
            report[label] = "onnxruntime not installed"
            continue
        runs = [run_child([sys.executable, "-c", code, str(onnx_path)], workdir, environment) for _ in range(2)]
        report[label] = {"first_s": float(np.median([run["first_s"] for run in runs])),
                         "peak_mib": float(np.median([run["peak_mib"] for run in runs]))}
    return report


def multiply_accumulates(model) -> int:
    """Multiply-accumulates of one forward pass for one face (convolutions and dense layers)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            height, width, channels_out = layer.output.shape[1:]
            total += height * width * channels_out * layer.input.shape[-1] * int(np.prod(layer.kernel_size))
        elif kind == "Dense":
            total += layer.input.shape[-1] * layer.units
    return int(total)


# ---------------------------------------------------------------- report

def verdict(value: float | None, goal: float, at_most: bool) -> str:
    if value is None:
        return ""
    return "met" if (value <= goal if at_most else value >= goal) else "MISSED"


def print_table(results: dict) -> None:
    classifier, end_to_end = results["classifier"], results["end_to_end"]
    webcam, cold = results["webcam"], results["cold_start"]
    rows = [
        ("classifier, 1 face (predict_faces, batch 1)", f"{classifier['batch_1_ms_per_face']:.2f} ms/face",
         f"<= {GOAL_ONE_FACE_MS:g} ms", verdict(classifier["batch_1_ms_per_face"], GOAL_ONE_FACE_MS, True)),
        ("classifier, batch 1", f"{classifier['batch_1_faces_per_s']:,.0f} faces/s", "", ""),
        ("classifier, batch 64", f"{classifier['batch_64_faces_per_s']:,.0f} faces/s",
         f">= {GOAL_BATCH_FACES_PER_S:,}", verdict(classifier["batch_64_faces_per_s"], GOAL_BATCH_FACES_PER_S, False)),
    ]
    for name, count in (("one", 1), ("five", 5)):
        rows.append((f"end to end, 640x480 JPEG, {count} face{'s' * (count > 1)}: ours",
                     f"{end_to_end[f'ours_{name}_face_ms']:.1f} ms/image", "", ""))
        if f"pypi_{name}_face_ms" in end_to_end:
            found = end_to_end[f"pypi_{name}_face_found"]
            rows.append((f"  PyPI fer {results['pypi_fer'].get('version', '')} (Haar + TFLite, its default)"
                         + ("" if found == count else f" [found {found} faces]"),
                         f"{end_to_end[f'pypi_{name}_face_ms']:.1f} ms/image", "", ""))
            if f"pypi_keras_{name}_face_ms" in end_to_end:
                rows.append(("  PyPI fer, use_tflite=False (its Keras model)",
                             f"{end_to_end[f'pypi_keras_{name}_face_ms']:.1f} ms/image", "", ""))
            ratio = end_to_end[f"ratio_{name}_face"]
            goal = (f"<= {GOAL_RATIO_ONE_FACE:.2f}", verdict(ratio, GOAL_RATIO_ONE_FACE, True)) if name == "one" else ("", "")
            rows.append(("  ratio ours / PyPI fer", f"{ratio:.2f}", *goal))
    if webcam.get("available"):
        for name, count in (("one", 1), ("five", 5)):
            rows.append((f"webcam handler (fer.live.process_frame), {count} face{'s' * (count > 1)}",
                         f"{webcam[f'{name}_face_fps']:.1f} frames/s", f">= {GOAL_WEBCAM_FPS:g}",
                         verdict(webcam[f"{name}_face_fps"], GOAL_WEBCAM_FPS, False) if name == "one" else ""))
    else:
        rows.append(("webcam handler", "not available", f">= {GOAL_WEBCAM_FPS:g} frames/s", ""))
    rows.append(("cold start: process start to first prediction", f"{cold['ours_first_s']:.1f} s",
                 f"<= {GOAL_COLD_START_S:g} s", verdict(cold["ours_first_s"], GOAL_COLD_START_S, True)))
    rows.append(("  in it: import fer / load_predictor / 1st predict",
                 f"{cold['ours_import_fer_s']:.2f} / {cold['ours_load_predictor_s']:.1f} / {cold['ours_first_predict_s']:.1f} s",
                 "", ""))
    rows.append(("peak memory of that process (ru_maxrss)", f"{cold['ours_maxrss_mib']:,.0f} MiB", "", ""))
    if "pypi_first_s" in cold:
        rows.append(("  PyPI fer: cold start / peak memory",
                     f"{cold['pypi_first_s']:.1f} s / {cold['pypi_maxrss_mib']:,.0f} MiB", "", ""))
    width = max(len(row[0]) for row in rows) + 2
    print(f"\n{'measure':<{width}}{'figure':<22}{'goal':<14}")
    print("-" * (width + 44))
    for name, figure, goal, met in rows:
        print(f"{name:<{width}}{figure:<22}{goal:<14}{met}")
    if not webcam.get("available"):
        print(f"\nwebcam: {webcam['reason']}")


def print_investigation(report: dict) -> None:
    print("\n== classifier runtimes: one forward pass, no flip averaging (median ms; faces/s) ==")
    print(f"{'runtime':<40}{'batch 1':>16}{'batch 64':>22}{'max |dp| vs eager':>20}")
    for name, row in report["runtimes"].items():
        if "batch_1_ms" not in row:
            print(f"{name:<40}")
            continue
        print(f"{name:<40}{row['batch_1_ms']:>8.2f} ms{row['batch_1_faces_per_s']:>6,.0f}/s"
              f"{row['batch_64_ms']:>11.1f} ms{row['batch_64_faces_per_s']:>8,.0f}/s{row['max_abs_difference_from_eager']:>20.1e}")
    print("\n== flip averaging (median ms per call) ==")
    labels = list(next(iter(report["flip_averaging"].values())))
    print(f"{'':<36}" + "".join(f"{batch.replace('_', ' '):>12}" for batch in report["flip_averaging"]))
    for label in labels:
        print(f"{label:<36}" + "".join(f"{row[label]:>12.2f}" for row in report["flip_averaging"].values()))
    print("\n== detection (median ms; faces found; smallest face found at 640x480) ==")
    for image, rows in report["detection"].items():
        if not isinstance(rows, dict):
            continue
        print(f"{image.replace('_', ' ')}:")
        for label, row in rows.items():
            print(f"  {label:<50}{row['ms']:>8.1f} ms  {row['faces']} faces  smallest {row['smallest_face_px']} px")
    print(f"  (OpenCV threads by default: {report['detection']['opencv_threads_default']})")
    print("\n== end to end: stages today, and each change alone (median ms; ratio to PyPI fer in this alternation) ==")
    print(f"runtime: {report['end_to_end']['runtime']}")
    for image, rows in report["end_to_end"].items():
        if not isinstance(rows, dict):
            continue
        print(f"{image.replace('_', ' ')}:")
        for label, row in rows.items():
            ratio = f"   ratio {row['ratio_to_pypi_fer']:.2f}" if "ratio_to_pypi_fer" in row else ""
            print(f"  {label:<56}{row['ms']:>8.1f} ms{ratio}")
    print("\n== TensorFlow threads, fresh process each (median ms) ==")
    print(f"{'setting':<40}{'batch 1':>10}{'batch 64':>11}{'e2e 1 face':>12}")
    for label, row in report["threads"].items():
        print(f"{label:<40}{row['batch_1']:>10.2f}{row['batch_64']:>11.1f}{row['end_to_end_one_face']:>12.1f}")
    print("\n== what a serving process pays for its runtime before the first face (s from spawn; peak VmHWM MiB) ==")
    for label, row in report["imports"].items():
        print(f"  {label:<40}" + (f"{row['first_s']:>6.1f} s{row['peak_mib']:>8,.0f} MiB" if isinstance(row, dict) else row))


def environment_summary() -> dict:
    import tensorflow as tf

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "opencv": cv2.__version__, "numpy": np.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .keras file or model name (default: the one models/current.json names)")
    parser.add_argument("--untrained", action="store_true", help="time an untrained --arch model instead")
    parser.add_argument("--arch", default="seed_cnn", help="architecture of the untrained fallback model (default seed_cnn)")
    _fer_pypi.add_python_argument(parser)
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per case, split into alternating slices")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per comparison")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold starts per side (median reported)")
    parser.add_argument("--quick", action="store_true", help="short timings and one cold start, for trying changes")
    parser.add_argument("--investigate", action="store_true", help="also compare runtimes, threads and detection sizes")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.cold_runs = 1.0, 2, 1

    with tempfile.TemporaryDirectory(prefix="fer-speed-") as temporary:
        workdir = Path(temporary)
        model_path, how = resolve_model_path(args, workdir)
        photos = Photos(workdir)
        fer_python = None
        if args.fer_python.lower() != "none":
            if Path(args.fer_python).is_file():
                fer_python = args.fer_python
            else:
                print(f"PyPI fer: no python at {args.fer_python} (see benchmarks/README.md); its figures are left out")
        # First, while this process is still small (no TensorFlow): see run_child on ru_maxrss.
        print(f"timing: cold start ({args.cold_runs} run(s) each) ...", flush=True)
        cold_start = cold_start_figures(model_path, photos.path["one"], fer_python, args.cold_runs, workdir)

        from fer.predict import load_predictor

        predictor = load_predictor(model_path)
        photos.crop(predictor)
        results = {"environment": environment_summary(),
                   "model": {"path": str(model_path), "chosen_by": how, "arch": predictor.metadata.get("arch"),
                             "parameters": int(predictor.model.count_params()), "flip_average": predictor.flip_average,
                             "multiply_accumulates_per_pass": multiply_accumulates(predictor.model),
                             "runtime": predictor.runtime},
                   "settings": {"seconds": args.seconds, "rounds": args.rounds, "cold_runs": args.cold_runs},
                   "cold_start": cold_start}
        environment = results["environment"]
        print(f"model: {model_path} ({how}); {results['model']['arch']}, {results['model']['parameters']:,} parameters, "
              f"{results['model']['multiply_accumulates_per_pass'] / 1e6:.0f} M multiply-adds a pass, "
              f"flip averaging {'on (two passes a face)' if predictor.flip_average else 'off'}")
        from fer.faces import DEFAULT_DETECTOR
        print(f"runtime: {predictor.runtime}; face detector: {DEFAULT_DETECTOR}")
        print(f"machine: {environment['cores']} cores, {environment['cpu']}; load average "
              f"{environment['load_average'][0]:.1f} now; tensorflow {environment['tensorflow']}, "
              f"opencv {environment['opencv']}")

        pypi = None
        if fer_python:
            try:
                pypi = PypiFer(fer_python, workdir)
                results["pypi_fer"] = {key: pypi.info[key] for key in ("version", "module", "cascade", "import_s", "init_s")}
                print(f"PyPI fer {pypi.info['version']} from {pypi.info['module']}")
            except (RuntimeError, OSError, ValueError) as error:
                results["pypi_fer"] = {"error": str(error)}
                print(f"PyPI fer: could not start ({error}); its figures are left out")

        print("timing: classifier ...", flush=True)
        results["classifier"] = classifier_figures(predictor, photos, args.seconds, args.rounds)
        print("timing: end to end ...", flush=True)
        results["end_to_end"] = end_to_end_figures(predictor, photos, pypi, args.seconds, args.rounds)
        print("timing: webcam handler ...", flush=True)
        results["webcam"] = webcam_figures(predictor, photos, args.seconds, args.rounds)
        print_table(results)
        if args.investigate:
            results["investigation"] = investigate(predictor, model_path, photos, pypi, args.seconds / 2, args.rounds,
                                                   workdir)
            print_investigation(results["investigation"])
        if pypi is not None:
            pypi.close()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
