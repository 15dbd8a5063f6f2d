"""Many users at once (issue 7): N concurrent gradio_client clients, M predictions each, against the app's API.

    python benchmarks/load.py                                   # starts `python app.py` on a free loopback port
    python benchmarks/load.py --clients 4 --requests 2          # a smoke run
    python benchmarks/load.py --photo five --json runs/load.json
    python benchmarks/load.py --url http://127.0.0.1:7860       # an app that is already running

The app starts the way users start it (`python app.py`, GRADIO_SERVER_NAME/PORT set) in a child process, which is
stopped at the end, also on errors, Ctrl-C and SIGTERM. Each client thread holds its own Client; all connect first,
then send their predictions at once, each waiting for its answer before sending the next. One prediction runs before
the clock starts so TensorFlow's first-call set-up is not counted.

An answer counts as an error unless it is a list of the expected number of faces, each with four probabilities that
sum to 1. Goal from the issue: 0 errors at 20 clients. The clients share the server's machine, so on a small machine
they take some of its CPU.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # run as a script from anywhere

import _photos  # noqa: E402

APP = ROOT / "app.py"
APP_SETTINGS = ("CONCURRENCY", "MAX_FILE_SIZE", "STREAM_TIME_LIMIT_S", "DELETE_CACHE")  # read from app.py, not imported
PHOTOS = {"one": (_photos.one_face_photo, 1), "five": (_photos.five_face_photo, 5)}  # photo -> (builder, faces)
CLASS_COUNT = 4
PROBABILITY_SUM_TOLERANCE = 1e-3
START_TIMEOUT_S = 180.0  # importing TensorFlow and loading the model on two busy cores can take a minute
STOP_TIMEOUT_S = 10.0
GOAL_CLIENTS, GOAL_ERRORS = 20, 0


# ------------------------------------------------------------------------------------------------ the app


def app_settings(path: Path = APP) -> dict:
    """APP_SETTINGS as app.py assigns them (literals only); reading the file keeps Gradio out of this process."""
    settings = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in APP_SETTINGS:
                with contextlib.suppress(ValueError):
                    settings[name] = ast.literal_eval(node.value)
    return settings


def served_model(config: dict) -> str:
    """The model version the app's page names ("Model: `NAME`" in a Markdown component), else "unknown"."""
    for component in config.get("components", []):
        match = re.match(r"Model: `([^`]+)`", str(component.get("props", {}).get("value", "")))
        if match:
            return match.group(1)
    return "unknown"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> float:
    """Seconds until `url` answers; raises RuntimeError with the app's log if it exits or stays silent."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"The app exited with code {process.returncode} before answering. Its log:\n"
                               f"{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2):
                return time.perf_counter() - start
        time.sleep(0.5)
    raise RuntimeError(f"The app did not answer at {url} within {timeout_s:.0f} s (--start-timeout changes this). "
                       f"Its log so far:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_app(work_dir: Path, timeout_s: float):
    """`python app.py` on a free loopback port; yields (url, seconds it took to answer); stops it on the way out."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = work_dir / "app.log"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    with log.open("w") as log_file:
        process = subprocess.Popen([sys.executable, str(APP)], cwd=ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    try:
        yield url, wait_until_up(url, process, log, timeout_s)
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------------------------------------ clients


def check_answer(answer, expected_faces: int) -> str | None:
    """None for a correct answer to /predict, else what is wrong with it."""
    if not isinstance(answer, list):
        return f"wrong answer: {type(answer).__name__} instead of a list"
    if len(answer) != expected_faces:
        return f"wrong answer: {len(answer)} faces instead of {expected_faces}"
    for face in answer:
        probabilities = face.get("probabilities") if isinstance(face, dict) else None
        if not isinstance(probabilities, dict) or len(probabilities) != CLASS_COUNT:
            return f"wrong answer: a face without {CLASS_COUNT} probabilities"
        if abs(sum(probabilities.values()) - 1.0) > PROBABILITY_SUM_TOLERANCE:
            return f"wrong answer: probabilities sum to {sum(probabilities.values()):.4f}"
    return None


def error_message(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def predict_once(client: Client, photo: Path, expected_faces: int) -> tuple[float, str | None]:
    """(seconds, error message or None) for one prediction."""
    start = time.perf_counter()
    try:
        answer = client.predict(handle_file(str(photo)), False, api_name="/predict")
    except Exception as error:  # anything a client sees is a failed request for its user
        return time.perf_counter() - start, error_message(error)
    return time.perf_counter() - start, check_answer(answer, expected_faces)


def run_clients(url: str, photo: Path, expected_faces: int, clients: int, requests: int) -> dict:
    """All clients connect, then each sends `requests` predictions back to back; timed from the start signal."""
    results: list[tuple[float, str | None]] = []
    lock = threading.Lock()
    start_signal = threading.Barrier(clients + 1)

    def one_user() -> None:
        client, connect_error = None, None
        try:
            client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        except Exception as error:  # counted below as `requests` failed predictions
            connect_error = f"could not connect: {error_message(error)}"
        start_signal.wait()
        for _ in range(requests):
            outcome = predict_once(client, photo, expected_faces) if client else (0.0, connect_error)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=one_user, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start_signal.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - start

    latencies = np.array([seconds for seconds, error in results if error is None])
    errors = collections.Counter(error for _, error in results if error is not None)
    return {
        "clients": clients, "requests_per_client": requests, "predictions": len(results),
        "ok": len(latencies), "errors": sum(errors.values()), "error_messages": dict(errors), "wall_s": wall_s,
        "predictions_per_s": len(latencies) / wall_s,
        "latency_p50_s": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if len(latencies) else None,
        "latency_max_s": float(latencies.max()) if len(latencies) else None,
    }


# ------------------------------------------------------------------------------------------------ report


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) {five:.2f} (5 min)"


def print_report(figures: dict) -> None:
    seconds = lambda value: "-" if value is None else f"{value * 1000:.0f} ms"  # noqa: E731
    print(f"\nApp: {figures['url']} (Gradio {figures['gradio_version']}, model {figures['model']}, "
          f"started in {figures['start_s']})")
    print("Settings in this checkout's app.py: "
          + ", ".join(f"{name}={value!r}" for name, value in figures["app_settings"].items()))
    print(f"Machine: {figures['cpus']} CPUs, load average {figures['load_before']} before the run, "
          f"{figures['load_after']} after")
    print(f"Photo: {figures['photo']} (faces expected: {figures['expected_faces']}); "
          f"warm-up prediction {seconds(figures['warmup_s'])}\n")
    rows = [
        ("clients x requests", f"{figures['clients']} x {figures['requests_per_client']}"),
        ("predictions (ok / all)", f"{figures['ok']} / {figures['predictions']}"),
        ("wall time", f"{figures['wall_s']:.1f} s"),
        ("throughput", f"{figures['predictions_per_s']:.2f} predictions/s"),
        ("latency p50", seconds(figures["latency_p50_s"])),
        ("latency p95", seconds(figures["latency_p95_s"])),
        ("latency max", seconds(figures["latency_max_s"])),
        ("errors", f"{figures['errors']}   (goal: {GOAL_ERRORS} at {GOAL_CLIENTS} clients)"),
    ]
    for name, value in rows:
        print(f"  {name:<24}{value}")
    for message, count in figures["error_messages"].items():
        print(f"    {count:>4} x {message}")


def measure(args: argparse.Namespace) -> dict:
    """Start the app (unless --url), warm it up, run the clients; RuntimeError when there is nothing to measure."""
    build_photo, expected_faces = PHOTOS[args.photo]
    with tempfile.TemporaryDirectory(prefix="fer-load-") as work, contextlib.ExitStack() as app:
        photo = Path(work) / f"{args.photo}_face.jpg"
        photo.write_bytes(_photos.encode_jpeg(build_photo()))  # (480, 640, 3) RGB -> JPEG, as an upload would be
        url, start = args.url, "-"
        if not args.url:
            print("Starting `python app.py` ...", flush=True)
            url, start_s = app.enter_context(running_app(Path(work), args.start_timeout))
            start = f"{start_s:.1f} s"
        try:
            first = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        except Exception as error:
            raise RuntimeError(f"No Gradio app answers at {url}: {error_message(error)}") from None
        warmup_s, warmup_error = predict_once(first, photo, expected_faces)
        if warmup_error:
            raise RuntimeError(f"The warm-up prediction failed, so the app is not ready: {warmup_error}")
        load_before = load_average()
        print(f"Running {args.clients} clients x {args.requests} predictions ...", flush=True)
        figures = run_clients(url, photo, expected_faces, args.clients, args.requests)
        figures.update(url=url, gradio_version=first.config.get("version"), model=served_model(first.config),
                       start_s=start, app_settings=app_settings(), cpus=os.cpu_count(), load_before=load_before,
                       load_after=load_average(), photo=args.photo, expected_faces=expected_faces, warmup_s=warmup_s)
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/load.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients, one thread each (default 20)")
    parser.add_argument("--requests", type=int, default=5, help="predictions per client, back to back (default 5)")
    parser.add_argument("--photo", choices=sorted(PHOTOS), default="one", help="the 640x480 photo sent (default one)")
    parser.add_argument("--url", help="target an app already running here instead of starting `python app.py`")
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S, help="seconds to wait for the app")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be at least 1")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed job also stops the app it started
    try:
        figures = measure(args)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted; the app this run started has been stopped.", file=sys.stderr)
        return 130
    print_report(figures)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
