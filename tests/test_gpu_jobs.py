"""tools/gpu_jobs.py: jobs side by side in phases inside a time budget, with a stand-in for fer.train."""

import importlib.util
import json
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_jobs", ROOT / "tools" / "gpu_jobs.py")
gpu_jobs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_jobs)

# Stands in for `python -m fer.train`: prints one Keras-like line an epoch, SLEEP seconds apart, then writes the
# model and its JSON, recording the arguments it was given.
FAKE_TRAIN = textwrap.dedent("""
    import json, sys, time
    args = sys.argv[1:]
    out, epochs, sleep = args[args.index("--out") + 1], int(args[args.index("--epochs") + 1]), float(args[args.index("--sleep") + 1])
    for epoch in range(epochs):
        time.sleep(sleep)
        print(f"3/3 - 0s - accuracy: 0.5 - val_accuracy: 0.{epoch}", flush=True)
    open(out + ".keras", "wb").write(b"k" * int(args[args.index("--size") + 1]))
    f1 = {name: {"f1": 0.5} for name in ("happy", "sad", "neutral", "surprise")}
    json.dump({"metrics": {"validation": {"accuracy": 0.8, "macro_f1": 0.79, "per_class": f1}}, "epochs_run": epochs,
               "training_seconds": epochs * sleep, "args": args}, open(out + ".json", "w"))
""")


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setattr(gpu_jobs, "TRAIN", [sys.executable, str(script)])


def test_jobs_files_name_phases_and_reject_what_the_script_sets(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("# teachers\na --epochs 2\nb --epochs 3  # second\n--- 120\ns --teacher {work}/a.keras\n")
    assert gpu_jobs.read_jobs(jobs) == [(None, [("a", ["--epochs", "2"]), ("b", ["--epochs", "3"])]),
                                        (120.0, [("s", ["--teacher", "{work}/a.keras"])])]
    for text, message in [("a --out x\n", "names --out"), ("a\na\n", "share a name"), ("a\n--- soon\nb\n", "--- SECONDS"),
                          ("a\n--- 10\n", "a phase has no jobs")]:
        jobs.write_text(text)
        with pytest.raises(SystemExit, match=message):
            gpu_jobs.read_jobs(jobs)


def test_a_student_is_taught_by_the_teachers_that_finished(tmp_path):
    (tmp_path / "a.keras").write_bytes(b"k")
    args = ["--teacher", "{work}/a.keras", "{work}/b.keras", "--epochs", "5"]
    assert gpu_jobs.with_work(args, tmp_path) == ["--teacher", str(tmp_path / "a.keras"), "--epochs", "5"]
    assert gpu_jobs.with_work(["--teacher", "{work}/b.keras"], tmp_path) is None
    assert gpu_jobs.with_work(["--data", "{work}/x.npz"], tmp_path) == ["--data", str(tmp_path / "x.npz")]


def test_phases_run_in_turn_a_late_job_is_stopped_and_the_results_are_packed(tmp_path, fake_train, capsys):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        "fast --epochs 3 --sleep 0.1 --size 100\n"
        "slow --epochs 200 --sleep 0.1 --size 100\n"  # would need 20 s: past its phase's share, so it is stopped
        "--- 6\n"
        "student --teacher {work}/fast.keras {work}/slow.keras --epochs 2 --sleep 0.1 --size 40000000\n")
    out, work = tmp_path / "out", tmp_path / "work"
    assert gpu_jobs.main([str(jobs), "--out", str(out), "--work", str(work), "--budget", "12", "--poll", "0.2"]) == 0

    student = json.loads((work / "student.json").read_text())
    assert student["args"][:2] == ["--teacher", str(work / "fast.keras")]  # the stopped teacher left out
    summary = (out / "jobs.log").read_text()
    assert "student: accuracy 0.8000" in summary and "fast: accuracy 0.8000" in summary
    assert "slow: no model (stopped at" in summary
    # The student's 40 MB come back in 15 MiB parts that join into the file; the teacher's model fits beside them.
    parts = sorted(out.glob("student.keras.part-*"))
    assert [part.name[-2:] for part in parts] == ["aa", "ab", "ac"]
    assert b"".join(part.read_bytes() for part in parts) == (work / "student.keras").read_bytes()
    assert (out / "fast.keras.part-aa").read_bytes() == (work / "fast.keras").read_bytes()
    with tarfile.open(out / "meta.tgz") as tar:
        assert {"student.json", "fast.json", "fast.log", "slow.log"} <= set(tar.getnames())
    assert "phase 2: student" in capsys.readouterr().out
