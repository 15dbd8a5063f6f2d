"""Speed of fer.video (issue 35) on a 640x480 clip with one face, against the PyPI `fer` package's fer.Video in one run.

    python benchmarks/video.py                             # the table (about 3 minutes on two busy cores)
    python benchmarks/video.py --json runs/video.json      # also write every figure as JSON
    python benchmarks/video.py --quick                     # one short round: for trying a change
    python benchmarks/video.py --fer-python none           # ours only

The clip is `_photos.write_one_face_clip`: the astronaut swaying sideways, 640x480, 25 frames/s, mp4v. Both sides
analyse every frame of the same file: decode, find the face, classify it, write a CSV, and (in the second pair of
cases) write an annotated copy. Ours also writes a browser-playable WebM (VP8), and runs at its default sampling
(every frame up to 10 a second), reported as seconds of video per second.

The PyPI package runs in its own venv, as in speed.py (benchmarks/README.md shows how to make it). Cases are timed in
alternating slices (ours, theirs, ...), so background load hits all alike: on a shared machine trust the ratios more
than the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import speed  # noqa: E402  (puts the project on sys.path and imports _photos)

import _fer_pypi  # noqa: E402
import _photos  # noqa: E402

GOAL_FPS = 25.0    # frames/s at 640x480 with one face, every frame analysed
GOAL_RATIO = 3.0   # ours over PyPI fer's fer.Video, same work


def our_case(predictor, clip: Path, workdir: Path, annotated: str | None, every_s: float | None = 0.0):
    """A SelfTimed case: fer.video.analyze_video on the clip, writing a CSV (and an annotated copy)."""
    from fer import video

    config = video.VideoConfig(every_s=every_s)

    def timed(seconds: float) -> list[float]:
        times = []
        deadline = time.perf_counter() + seconds
        while not times or time.perf_counter() < deadline:
            begun = time.perf_counter()
            result = video.analyze_video(predictor, clip, workdir / "ours.csv",
                                         workdir / f"ours{annotated}" if annotated else None, config)
            times.append(time.perf_counter() - begun)
            case.result = result
        return times

    case = speed.SelfTimed(timed)
    return case


def pypi_case(pypi: _fer_pypi.PypiFer, clip: Path, save_video: bool):
    def timed(seconds: float) -> list[float]:
        reply = pypi.request({"video": str(clip), "seconds": seconds, "min_repeats": 1, "save_video": save_video})
        case.frames_with_faces = reply["frames_with_faces"]
        return reply["times"]

    case = speed.SelfTimed(timed)
    case.frames_with_faces = 0
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/video.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .keras file or model name (default: the one models/current.json names)")
    _fer_pypi.add_python_argument(parser)
    parser.add_argument("--frames", type=int, default=150, help="frames in the clip (25 frames/s; default 150)")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per case, split into alternating slices "
                                                                   "(each slice analyses the clip at least once)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating slices per case")
    parser.add_argument("--quick", action="store_true", help="one round, a short clip")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.seconds, args.rounds = 50, 1.0, 1

    from fer.predict import load_predictor

    with tempfile.TemporaryDirectory(prefix="fer-video-bench-") as temporary:
        workdir = Path(temporary)
        clip = _photos.write_one_face_clip(workdir / "one_face.mp4", frames=args.frames)
        predictor = load_predictor(args.model)
        results = {"environment": speed.environment_summary(),
                   "model": {"name": predictor.version, "runtime": predictor.runtime},
                   "clip": {"frames": args.frames, "fps": 25.0, "size": "640x480", "codec": "mp4v"},
                   "settings": {"seconds": args.seconds, "rounds": args.rounds}}
        environment = results["environment"]
        print(f"model: {predictor.version}; runtime: {predictor.runtime}")
        print(f"machine: {environment['cores']} cores, {environment['cpu']}; load average "
              f"{environment['load_average'][0]:.1f} now; opencv {environment['opencv']}")
        print(f"clip: 640x480, {args.frames} frames at 25 frames/s, one face, mp4v")

        cases = {"ours_csv": our_case(predictor, clip, workdir, None),
                 "ours_csv_mp4": our_case(predictor, clip, workdir, ".mp4"),
                 "ours_csv_webm": our_case(predictor, clip, workdir, ".webm"),
                 "ours_default_csv": our_case(predictor, clip, workdir, None, every_s=None)}
        pypi = None
        if args.fer_python.lower() != "none":
            if not Path(args.fer_python).is_file():
                print(f"PyPI fer: no python at {args.fer_python} (see benchmarks/README.md); its figures are left out")
            else:
                try:
                    pypi = speed.PypiFer(args.fer_python, workdir)
                    results["pypi_fer"] = {key: pypi.info[key] for key in ("version", "module")}
                    print(f"PyPI fer {pypi.info['version']} from {pypi.info['module']}")
                    cases["pypi_csv"] = pypi_case(pypi, clip, save_video=False)
                    cases["pypi_csv_mp4"] = pypi_case(pypi, clip, save_video=True)
                except (RuntimeError, OSError, ValueError) as error:
                    results["pypi_fer"] = {"error": str(error)}
                    print(f"PyPI fer: could not start ({error}); its figures are left out")
        print("timing ...", flush=True)
        times = speed.interleave(cases, args.seconds, args.rounds, warmup=1)
        if pypi is not None:
            pypi.close()

    figures = {}
    for name, case_times in times.items():
        per_call = float(sorted(case_times)[len(case_times) // 2])  # median seconds per analysis of the clip
        figures[name] = {"seconds_per_clip": per_call, "frames_per_s": args.frames / per_call,
                         "video_seconds_per_s": args.frames / 25.0 / per_call, "calls": len(case_times)}
        if name.startswith("ours"):
            result = cases[name].result
            figures[name].update(frames_sampled=result.frames_sampled, frames_with_faces=result.rows,
                                 faces_tracked=len(result.timeline.faces))
        else:
            figures[name]["frames_with_faces"] = cases[name].frames_with_faces
    for ours, theirs in (("ours_csv", "pypi_csv"), ("ours_csv_mp4", "pypi_csv_mp4"), ("ours_csv_webm", "pypi_csv_mp4")):
        if theirs in figures:
            figures[ours]["ratio_to_pypi"] = figures[ours]["frames_per_s"] / figures[theirs]["frames_per_s"]
    results["figures"] = figures
    print_table(figures, results.get("pypi_fer", {}).get("version", ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def print_table(figures: dict, pypi_version: str) -> None:
    labels = {
        "ours_csv": "fer.video, every frame: CSV",
        "ours_csv_mp4": "fer.video, every frame: CSV + annotated .mp4 (mp4v)",
        "ours_csv_webm": "fer.video, every frame: CSV + annotated .webm (VP8, plays in browsers)",
        "ours_default_csv": "fer.video, default sampling (10 of 25 frames/s): CSV",
        "pypi_csv": f"PyPI fer {pypi_version} fer.Video, every frame: CSV",
        "pypi_csv_mp4": f"PyPI fer {pypi_version} fer.Video, every frame: CSV + annotated .mp4 (mp4v)",
    }
    rows = []
    for name, label in labels.items():
        if name not in figures:
            continue
        row = figures[name]
        found = f"{row['frames_with_faces']}" + (f"/{row['frames_sampled']}" if "frames_sampled" in row else "")
        if name == "ours_default_csv":
            figure = f"{row['video_seconds_per_s']:.1f} s of video/s"
            goal = verdict = ""
        else:
            figure = f"{row['frames_per_s']:.1f} frames/s"
            goal, verdict = "", ""
            if name.startswith("ours"):
                goal = f">= {GOAL_FPS:g} fps" + (f", >= {GOAL_RATIO:g}x" if "ratio_to_pypi" in row else "")
                met = row["frames_per_s"] >= GOAL_FPS and row.get("ratio_to_pypi", GOAL_RATIO) >= GOAL_RATIO
                verdict = "met" if met else "MISSED"
                if "ratio_to_pypi" in row:
                    figure += f" ({row['ratio_to_pypi']:.1f}x)"
        rows.append((label, figure, found, goal, verdict))
    width = max(len(row[0]) for row in rows) + 2
    print(f"\n{'case':<{width}}{'figure':<26}{'faces found':<13}{'goal':<20}")
    print("-" * (width + 66))
    for label, figure, found, goal, verdict in rows:
        print(f"{label:<{width}}{figure:<26}{found:<13}{goal:<20}{verdict}")
    print("(x: ours over PyPI fer doing the same work; the .webm row is compared with its mp4v run)")


if __name__ == "__main__":
    sys.exit(main())
