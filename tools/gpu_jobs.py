"""Run several `fer.train` jobs side by side on one lent GPU inside a time budget, then pack their results for the
trip back (docs/gpu_training.md).

    python3 tools/gpu_jobs.py tools/jobs/NAME.txt --out $OUT --budget 540

A jobs file holds one job a line, highest priority first: a name, then `fer.train` arguments (no `--out`); `#`
starts a comment. A line `--- SECONDS` starts a later phase, given that many seconds of the budget; a phase starts when
the one before has ended, and `{work}` in its arguments is the folder where earlier jobs left their models (so a
student can name `--teacher {work}/a.keras {work}/b.keras`; teachers that did not finish are left out of the list).
The jobs of a phase start together. Once each has run two epochs the script projects when each will end; while one
would end after its phase's share of the budget, it stops the lowest-priority job still running, so the others get
the GPU's time. At the end of its share it stops whatever still runs.

Under `--out` it leaves what the device tool can return (at most 8 files of 16 MiB): `jobs.log` (a summary and the
end of each job's log), `meta.tgz` (each job's JSON, history CSV, curves and log) and the `.keras` files of the
finished jobs that fit, the last phase's first, each phase's in priority order, split into 15 MiB parts
(`NAME.keras.part-aa`, ...; join with `cat`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PART_BYTES = 15 * 2**20
RETURN_FILES = 8  # the device tool returns at most 8 files ...
RETURN_BYTES = 62 * 2**20  # ... and 64 MiB in all; keep a margin for the log and meta.tgz
FINISH_SECONDS = 45  # after its last epoch a job calibrates, scores and saves
EPOCH_LINE = re.compile(r"val_accuracy: ")  # Keras (verbose=2) prints one such line as each epoch ends
TRAIN = [sys.executable, "-m", "fer.train"]


def read_jobs(path: str | Path) -> list[tuple[float | None, list[tuple[str, list[str]]]]]:
    """[(seconds or None for the first phase, [(name, arguments), ...]), ...]"""
    phases: list[tuple[float | None, list]] = [(None, [])]
    for line in Path(path).read_text().splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "---":
            if len(words) != 2 or not words[1].replace(".", "", 1).isdigit():
                raise SystemExit(f"{path}: a phase line is `--- SECONDS`; got {line.strip()!r}.")
            phases.append((float(words[1]), []))
        elif "--out" in words:
            raise SystemExit(f"{path}: job {words[0]} names --out; the script sets it.")
        else:
            phases[-1][1].append((words[0], words[1:]))
    names = [name for _, jobs in phases for name, _ in jobs]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: two jobs share a name.")
    if any(not jobs for _, jobs in phases):
        raise SystemExit(f"{path}: a phase has no jobs.")
    return phases


def with_work(args: list[str], work: Path) -> list[str] | None:
    """`args` with `{work}` filled in and the teachers that are not there left out; None if no teacher is left."""
    args = [arg.replace("{work}", str(work)) for arg in args]
    if "--teacher" not in args:
        return args
    start = args.index("--teacher") + 1
    end = next((i for i in range(start, len(args)) if args[i].startswith("--")), len(args))
    teachers = [path for path in args[start:end] if Path(path).is_file()]
    return args[:start] + teachers + args[end:] if teachers else None


def epochs_of(args: list[str]) -> int:
    return int(args[args.index("--epochs") + 1]) if "--epochs" in args else 30


class Job:
    def __init__(self, name: str, args: list[str], work: Path):
        self.name, self.args, self.epochs = name, args, epochs_of(args)
        self.stem = work / name
        self.log = work / f"{name}.log"
        self.process = None
        self.ends: list[float] = []  # when each epoch ended, as first seen
        self.stopped = ""

    def file(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)  # as fer.train names them (a name may hold a dot)

    def start(self) -> None:
        command = [*TRAIN, *self.args, "--out", str(self.stem)]
        with open(self.log, "w") as log:
            log.write(" ".join(command) + "\n")
            log.flush()
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def poll(self, now: float) -> None:
        done = sum(1 for line in self.log.read_text(errors="replace").splitlines() if EPOCH_LINE.search(line))
        self.ends.extend([now] * (done - len(self.ends)))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def projected_end(self, now: float) -> float | None:
        if len(self.ends) < 2:
            return None
        recent = self.ends[-min(len(self.ends), 6):]
        per_epoch = (recent[-1] - recent[0]) / max(len(recent) - 1, 1)
        return now + (self.epochs - len(self.ends)) * per_epoch + FINISH_SECONDS

    def stop(self, why: str) -> None:
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.stopped = why

    def summary(self) -> str:
        path = self.file(".json")
        if not path.is_file() or not self.file(".keras").is_file():
            code = self.process.returncode if self.process else None
            return f"{self.name}: no model ({self.stopped or f'exit {code}'}; {len(self.ends)}/{self.epochs} epochs)"
        metadata = json.loads(path.read_text())
        metrics = metadata["metrics"]["validation"]
        f1 = "  ".join(f"{name} {values['f1']:.3f}" for name, values in metrics["per_class"].items())
        return (f"{self.name}: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  F1 {f1}  "
                f"({metadata['epochs_run']} epochs, {metadata['training_seconds']:.0f} s)")


def run(jobs: list[Job], budget: float, poll_seconds: float = 10.0) -> None:
    """Run `jobs` together until they end, stopping the lowest-priority ones that would overrun `budget` seconds."""
    start = time.monotonic()
    deadline = start + budget
    for job in jobs:
        job.start()
    grace_until = 0.0
    while any(job.running for job in jobs):
        time.sleep(poll_seconds)
        now = time.monotonic()
        for job in jobs:
            job.poll(now)
        if now >= deadline:
            for job in jobs:
                job.stop("stopped at the budget")
            break
        live = [job for job in jobs if job.running]
        ends = [job.projected_end(now) for job in live]
        late = [end for end in ends if end is not None and end > deadline]
        if late and now >= grace_until and len(live) > 1:
            victim = live[-1]
            victim.stop(f"stopped at {now - start:.0f} s: the jobs were projected to end {max(late) - start:.0f} s "
                        f"after the start, past the {budget:.0f} s budget")
            print(f"[{now - start:5.0f} s] {victim.name}: {victim.stopped}", flush=True)
            grace_until = now + 4 * poll_seconds  # let the others speed up before judging again
        if int(now - start) // 60 != int(now - start - poll_seconds) // 60:
            progress = ", ".join(f"{job.name} {len(job.ends)}/{job.epochs}" for job in jobs)
            print(f"[{now - start:5.0f} s] {progress}", flush=True)


def pack(jobs: list[Job], out: Path) -> None:
    """meta.tgz with every job's JSON, history, curves and log, and the models of the first `jobs` that fit."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "meta.tgz", "w:gz") as tar:
        for job in jobs:
            for suffix in (".json", ".history.csv", ".curves.png"):
                if job.file(suffix).is_file():
                    tar.add(job.file(suffix), arcname=job.file(suffix).name)
            if job.log.is_file():
                tar.add(job.log, arcname=job.log.name)
    files, size = 2, (out / "meta.tgz").stat().st_size + 2**20
    for job in jobs:
        model = job.file(".keras")
        if not (model.is_file() and job.file(".json").is_file()):
            continue
        parts = -(-model.stat().st_size // PART_BYTES)
        if files + parts > RETURN_FILES or size + model.stat().st_size > RETURN_BYTES:
            print(f"{job.name}: its model does not fit in what comes back; only its JSON does", flush=True)
            continue
        data = model.read_bytes()
        for k in range(parts):
            suffix = chr(ord("a") + k // 26) + chr(ord("a") + k % 26)  # aa, ab, ... as `split` names them
            (out / f"{model.name}.part-{suffix}").write_bytes(data[k * PART_BYTES:(k + 1) * PART_BYTES])
        files, size = files + parts, size + len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 tools/gpu_jobs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", help="jobs file: one `NAME fer.train-arguments` a line, highest priority first")
    parser.add_argument("--out", required=True, help="where the returned files go ($OUT on the device)")
    parser.add_argument("--work", default="/tmp/gpu_jobs", help="where the jobs write their models and logs")
    parser.add_argument("--budget", type=float, default=540, help="seconds from the start until every job stops")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between looks at the jobs' progress")
    args = parser.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    phases = read_jobs(args.jobs)
    later = sum(seconds for seconds, _ in phases[1:])
    if later >= args.budget:
        raise SystemExit(f"The later phases take {later:.0f} s of a {args.budget:.0f} s budget; none is left for the first.")
    phase_jobs: list[list[Job]] = []
    began = time.monotonic()
    try:
        for number, (_, phase) in enumerate(phases):
            # What is left of the budget, less what the later phases are promised.
            share = args.budget - (time.monotonic() - began) - sum(s for s, _ in phases[number + 1:])
            ready = []
            for name, job_args in phase:
                filled = with_work(job_args, work)
                if filled is None:
                    print(f"{name}: none of its teachers finished; not started", flush=True)
                    continue
                ready.append(Job(name, filled, work))
            print(f"phase {number + 1}: {', '.join(job.name for job in ready) or 'nothing to run'}, "
                  f"{share:.0f} s", flush=True)
            phase_jobs.append(ready)
            if ready and share > 0:
                run(ready, share, args.poll)
    finally:
        jobs = [job for phase in reversed(phase_jobs) for job in phase]  # the last phase's models come back first
        for job in jobs:
            job.stop("stopped on exit")
        lines = [f"{len(jobs)} jobs, {time.monotonic() - began:.0f} s"] + [job.summary() for job in jobs]
        pack(jobs, Path(args.out))
        for job in (job for job in jobs if job.log.is_file()):
            tail = job.log.read_text(errors="replace").splitlines()[-12:]
            lines += ["", f"== {job.name} (last lines)"] + tail
        (Path(args.out) / "jobs.log").write_text("\n".join(lines) + "\n")
        print("\n".join(lines[:len(jobs) + 1]), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
