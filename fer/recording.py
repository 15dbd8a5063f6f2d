"""The Recording tab's work on one uploaded video: the annotated copy, the CSV, the timeline figure and the summary.

    result = analyze_recording(predictor, "upload.mp4", limits, every_s=None, progress=report)
    result.annotated, result.csv       # files in a private temporary folder...
    discard(result.folder)             # ...deleted as soon as Gradio has copied them to its cache

Nothing else of the video is written anywhere; the figure and the table live in memory.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fer import video

PROGRESS_EVERY_S = 0.5  # the browser's progress bar is updated at most this often


@dataclasses.dataclass(frozen=True)
class RecordingResult:
    folder: Path             # private temporary folder holding `annotated` and `csv`
    annotated: Path          # VP8 WebM, one frame per sample
    csv: Path
    figure: object           # matplotlib Figure: each face's expressions over time
    summary: pd.DataFrame    # one row per face (fer.timeline.Timeline.summary_table)
    message: str             # Markdown: what was analysed, and any warning


def analyze_recording(predictor, path: str, limits: video.VideoLimits, every_s: float | None = None,
                      progress: Callable[[int, int], None] | None = None) -> RecordingResult:
    """Run fer.video on an uploaded file; raises VideoError (a FerError) naming the problem, leaving nothing behind."""
    folder = Path(tempfile.mkdtemp(prefix="fer-recording-"))
    try:
        stem = _safe_stem(path)
        csv_path, annotated = folder / f"{stem}_faces.csv", folder / f"{stem}_annotated.webm"
        result = video.analyze_video(predictor, path, csv_path, annotated, video.VideoConfig(every_s=every_s),
                                     limits, _throttled(progress) if progress else None)
        figure = result.timeline.figure(title=f"{stem}: expressions over time")
        return RecordingResult(folder, annotated, csv_path, figure, result.timeline.summary_table(), describe(result))
    except BaseException:
        discard(folder)
        raise


def discard(folder: str | Path | None) -> None:
    """Delete a result's temporary folder (also called with None, or twice)."""
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def describe(result: video.VideoResult) -> str:
    faces = len(result.timeline.faces)
    text = (f"{result.info.describe()}. Sampled {result.frames_sampled} frames (one every {result.step_s:.2g} s); "
            + ("**no face found**." if faces == 0 else f"**{faces} face{'s' * (faces > 1)}** tracked, "
               f"{result.rows} rows in the CSV."))
    if faces > 1:
        text += (" A face that leaves the picture for more than a second, or is missed by the detector that long, "
                 "comes back under a new number.")
    for warning in result.warnings:
        text += f"\n\n**Warning:** {warning}."
    return text


def _safe_stem(path: str) -> str:
    """The upload's name without its extension, reduced to characters safe in a file name (for the downloads)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem).strip("_")
    return stem[:60] or "recording"


def _throttled(progress: Callable[[int, int], None]) -> Callable[[int, int], None]:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or (total and done >= total):
            last[0] = now
            progress(done, total)

    return report
