"""The PyPI `fer` package (justinshenk), alive in a subprocess of its own venv: the client of _fer_pypi_runner.py.

PyPI `fer` has our import name, so it never goes into this project's venv (benchmarks/README.md shows how to make
its own). `PypiFer(python, workdir)` starts that venv's `python` on the runner from `workdir` (a temporary folder,
not the project root, where `import fer` would find ours) with no PYTHONPATH, and speaks the runner's JSON-lines
protocol: `time_detect` for speed.py, `classify` for peer_accuracy.py. Used as a context manager it quits the runner
on the way out, also after an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

DEFAULT_FER_PYTHON = "/work/fer-pypi-venv/bin/python"
RUNNER = Path(__file__).resolve().parent / "_fer_pypi_runner.py"


def add_python_argument(parser, can_skip: bool = True) -> None:
    """The benchmarks' --fer-python flag: the interpreter of the venv holding PyPI fer ('none' skips the peer)."""
    parser.add_argument("--fer-python", default=DEFAULT_FER_PYTHON,
                        help=f"python of the venv holding PyPI fer (default {DEFAULT_FER_PYTHON})"
                             + ("; 'none' to skip" if can_skip else ""))


class PypiFerError(RuntimeError):
    """The runner could not start, died, or answered a command with an error; the message says which."""


def clean_environment() -> dict:
    """This process's environment without PYTHONPATH/PYTHONHOME (they would put our `fer` first), TF quiet."""
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return environment


class PypiFer:
    """One runner process. `info` is its ready line (version, module, import and init seconds)."""

    def __init__(self, python: str, workdir: Path):
        # stderr to a file, not a pipe: TensorFlow's chatter cannot fill a pipe and block the child, and its tail
        # explains a runner that dies.
        self._errors = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen([python, str(RUNNER)], cwd=workdir, env=clean_environment(), text=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors)
        except OSError as error:
            self._errors.close()
            raise PypiFerError(f"cannot run {python}: {error}") from error
        try:
            self.info = self._read()
        except PypiFerError:
            self.close()
            raise
        if not self.info.get("ready"):
            self.close()
            raise PypiFerError(self.info.get("error", "the PyPI fer runner did not start"))

    def __enter__(self) -> "PypiFer":
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            status = self.process.wait()
            self._errors.seek(0)
            tail = self._errors.read().decode(errors="replace").strip()[-1500:]
            raise PypiFerError(f"the PyPI fer runner exited (status {status})" + (f": {tail}" if tail else ""))
        return json.loads(line)

    def request(self, command: dict) -> dict:
        """Send one command, return the runner's reply; PypiFerError if it replies with an error or dies."""
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: _read says how
        reply = self._read()
        if "error" in reply:
            raise PypiFerError(f"the PyPI fer runner: {reply['error']}")
        return reply

    def time_detect(self, image: Path, seconds: float, min_repeats: int = 1, variant: str = "tflite") -> dict:
        """detect_emotions on the JPEG `image`, repeated for `seconds`: {"times": [s, ...], "boxes": [[x, y, w, h]]}."""
        return self.request({"image": str(image), "seconds": seconds, "min_repeats": min_repeats, "variant": variant})

    def classify(self, paths: list[str], offsets: tuple[int, int], variant: str = "tflite") -> dict:
        """The emotion classifier's probabilities for each image file taken whole as one face (see the runner):
        {"labels": [7 class names], "probabilities": [[7 floats] or None (no face), ...]}."""
        return self.request({"classify": [str(path) for path in paths], "offsets": list(offsets), "variant": variant})

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"quit": True}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self._errors):
            stream.close()
