"""Each tracked face's expressions over a recording: a summary table and the Live tab's chart, one panel per face.

    timeline = Timeline(classes, step_s=0.1)
    timeline.add(face_id, seconds, probabilities)     # (C,) smoothed probabilities of one face at one sample
    timeline.summary_table()                          # one row per face: when seen, share of samples per top class
    timeline.save_plot("timeline.png")                # or timeline.figure() for the app

Memory: a few dozen bytes per face and sample (two hours at 10 samples a second is 72,000 samples a face).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd

from fer import annotate, live

PLOT_MAX_FACES = 6  # panels in the figure: the faces seen longest; the table and the CSV have every face


@dataclasses.dataclass
class FaceSeries:
    seconds: list[float] = dataclasses.field(default_factory=list)
    probabilities: list[np.ndarray] = dataclasses.field(default_factory=list)  # each (C,) float32


class Timeline:
    def __init__(self, classes: tuple[str, ...], step_s: float):
        self.classes = tuple(classes)
        self.step_s = float(step_s)
        self.faces: dict[int, FaceSeries] = {}

    def add(self, face_id: int, seconds: float, probabilities: np.ndarray) -> None:
        series = self.faces.setdefault(int(face_id), FaceSeries())
        series.seconds.append(float(seconds))
        series.probabilities.append(np.asarray(probabilities, dtype=np.float32).copy())

    def summary_table(self) -> pd.DataFrame:
        """One row per face, in id order: first and last time seen, time seen (samples x step), samples, the share of
        its samples in which each expression was the most probable (%), and the most frequent one."""
        rows = []
        for face_id, series in sorted(self.faces.items()):
            share = live.top_share(series.probabilities, self.classes)
            rows.append({
                "face": face_id,
                "first seen (s)": round(series.seconds[0], 2),
                "last seen (s)": round(series.seconds[-1], 2),
                "time seen (s)": round(len(series.seconds) * self.step_s, 2),
                "samples": len(series.seconds),
                **{f"{name} %": round(100.0 * value, 1) for name, value in share.items()},
                "most often": max(share, key=share.get),
            })
        columns = ["face", "first seen (s)", "last seen (s)", "time seen (s)", "samples",
                   *(f"{name} %" for name in self.classes), "most often"]
        return pd.DataFrame(rows, columns=columns)

    def face_table(self, face_id: int) -> pd.DataFrame:
        """One face's series in the Live chart's long format: columns seconds, expression, probability."""
        series = self.faces[face_id]
        return live.long_table(series.seconds, series.probabilities, self.classes)

    def figure(self, title: str = "", max_faces: int = PLOT_MAX_FACES):
        """A matplotlib Figure: the Live tab's chart (probability of each expression over time, the boxes' colours)
        for each of the `max_faces` faces seen longest, in id order. Lines break where a face was out of view."""
        from matplotlib.figure import Figure  # no pyplot: no global state, safe in the app's worker threads

        shown = sorted(sorted(self.faces, key=lambda face: -len(self.faces[face].seconds))[:max_faces])
        figure = Figure(figsize=(9, 1.2 + 2.0 * max(1, len(shown))), layout="constrained")
        colours = annotate.colour_map(self.classes)
        axes = figure.subplots(max(1, len(shown)), 1, sharex=True, squeeze=False)[:, 0]
        for axis, face_id in zip(axes, shown):
            table = self.face_table(face_id)
            for name in self.classes:
                rows = table[table["expression"] == name]
                seconds, values = _with_gaps(rows["seconds"].to_numpy(), rows["probability"].to_numpy(), self.step_s)
                axis.plot(seconds, values, color=colours[name], label=name, linewidth=1.4)
            axis.set_ylim(0, 1)
            axis.set_ylabel("probability")
            axis.set_title(f"face {face_id}", loc="left", fontsize="medium")
            axis.grid(alpha=0.3)
        if not shown:
            axes[0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0].transAxes)
            axes[0].set_yticks([])
        axes[-1].set_xlabel("seconds since the start of the video")
        if shown:
            handles, labels = axes[0].get_legend_handles_labels()
            figure.legend(handles, labels, loc="outside lower center", ncols=len(self.classes), frameon=False)
        hidden = len(self.faces) - len(shown)
        heading = title + (f" ({hidden} more face{'s' * (hidden > 1)} in the table)" if hidden > 0 else "")
        if heading:
            figure.suptitle(heading)
        return figure

    def save_plot(self, path: str | os.PathLike, title: str = "") -> None:
        self.figure(title).savefig(path, dpi=100)


def _with_gaps(seconds: np.ndarray, values: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN between samples more than 1.5 steps apart, so the line breaks instead of bridging the gap."""
    if len(seconds) < 2:
        return seconds, values
    breaks = np.flatnonzero(np.diff(seconds) > 1.5 * step_s) + 1
    return (np.insert(seconds.astype(float), breaks, np.nan), np.insert(values.astype(float), breaks, np.nan))
