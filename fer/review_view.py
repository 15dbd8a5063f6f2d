"""What the app's Review and Model tabs show: plain values (arrays, Markdown, tables) built from library objects.

Nothing here touches Gradio, so it is tested directly; app.py only puts these values into components.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fer import labels
from fer.models import list_models
from fer.registry import current_model_path, read_metadata

FACE_DISPLAY_SIZE = 240  # the 48x48 face enlarged five times: big enough to read an expression

# One keystroke per decision. Action -> (key, button text). Keys are lower-case letters so no modifier is needed.
SHORTCUTS: dict[str, tuple[str, str]] = {
    "happy": ("h", "Happy"),
    "sad": ("s", "Sad"),
    "neutral": ("n", "Neutral"),
    "surprise": ("u", "Surprise"),
    labels.NOT_A_FACE: ("x", "Not a face / unsure"),
    "skip": ("k", "Skip"),
    "back": ("b", "Back"),
    "undo": ("z", "Undo last"),
}
LABEL_ACTIONS = tuple(name for name in SHORTCUTS if name in labels.VALID_LABELS)


def button_id(action: str) -> str:
    return f"review-{action.replace('_', '-')}"


def shortcut_help() -> str:
    return "Keys: " + " · ".join(f"**{key.upper()}** {text.lower()}" for key, text in SHORTCUTS.values())


def shortcut_script() -> str:
    """JavaScript run on page load: a key press clicks the matching Review button, unless the user is typing."""
    mapping = json.dumps({key: button_id(action) for action, (key, _) in SHORTCUTS.items()})
    return f"""() => {{
  const keys = {mapping};
  document.addEventListener("keydown", (event) => {{
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    const id = keys[event.key.toLowerCase()];
    const button = id && document.getElementById(id);
    if (!button || button.disabled || !button.checkVisibility()) return;
    event.preventDefault();
    button.click();
  }});
}}"""


def enlarge(face: np.ndarray, size: int = FACE_DISPLAY_SIZE) -> np.ndarray:
    """A (48, 48) uint8 face as a (size, size) uint8 image for display."""
    return cv2.resize(np.asarray(face, dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)


def describe_item(item) -> str:
    """Markdown about one fer.review.QueueItem: where it comes from, its labels, the model's view, others' votes."""
    predicted = item.predicted_label
    lines = [f"**Source:** `{item.source}` ({item.queue} queue)"]
    label = f"{item.given_label} (folder)" if item.votes and item.given_label else item.given_label or "none"
    lines.append(f"**Current label:** {label} · **model says:** {predicted} ({item.probabilities[predicted]:.0%})")
    if item.votes:
        consensus = item.consensus_label or "none among the four classes"
        lines.append(f"**Annotators:** {item.votes} · **consensus:** {consensus}")
    if item.in_sample:
        lines.append("_The model trained on this face, so it tends to agree with the current label._")
    if item.others:
        votes = ", ".join(f"{name}: {label.replace('_', ' ')}" for name, label in sorted(item.others.items()))
        lines.append(f"**Other reviewers:** {votes}")
    else:
        lines.append("**Other reviewers:** none yet")
    return "  \n".join(lines)


def describe_row(row: dict | None, verb: str) -> str:
    if row is None:
        return "Nothing to undo: you have no label in force."
    return f"{verb} `{row['image_sha256'][:12]}` as **{row['corrected_label'].replace('_', ' ')}** (row {row['row_id']})."


def format_agreement(summary: dict) -> str:
    """Markdown for `fer.labels.summarize()`: rows, resolved labels, reviewers and kappa."""
    stats = summary["agreement"]

    def number(value):
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"**{summary['rows']}** rows ({summary['undo_rows']} undos) on **{summary['images']}** faces · "
        f"{summary['flagged']} faces flagged by visitors",
        "**Resolved (majority):** " + ", ".join(f"{label.replace('_', ' ')} {count}"
                                               for label, count in stats["resolved_counts"].items())
        + f" · {stats['unresolved']} tied",
        "**Reviewers:** " + (", ".join(f"{name} ({count})" for name, count in stats["reviewers"].items()) or "none"),
        f"**Agreement:** {stats['multi_reviewed']} faces labelled by two or more reviewers · observed "
        f"{number(stats['observed_agreement'])} · Fleiss' κ {number(stats['fleiss_kappa'])}",
    ]
    lines += [f"- {pair['reviewers'][0]} vs {pair['reviewers'][1]}: {pair['items']} faces, agreement "
              f"{pair['agreement']:.3f}, Cohen's κ {number(pair['cohen_kappa'])}" for pair in stats["pairwise"]]
    if summary["malformed"]:
        lines.append(f"**{len(summary['malformed'])} malformed rows skipped** (first: line "
                     f"{summary['malformed'][0]['line']}: {summary['malformed'][0]['problem']})")
    return "  \n".join(lines)


def model_overview(models_dir: str | Path | None = None) -> tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The current model's summary (Markdown), per-class scores, confusion matrix, and the models' history.

    Scores and the confusion matrix are against the annotators' consensus where the JSON has them (fer.votes), with
    each class's recall on clear faces; the folder labels' figures are in the summary beside them.
    """
    path = current_model_path(models_dir)
    metadata = read_metadata(path)
    metrics = metadata.get("metrics", {})
    folder_report = metrics.get("validation", {})
    report = metrics.get("validation_consensus") or folder_report
    classes = list(report.get("classes") or metadata["classes"])
    inference = metadata.get("inference", {})
    summary = [f"**Serving `{path.stem}`** ({metadata.get('arch', '?')}, {metadata.get('parameters', 0):,} "
               f"parameters, trained {str(metadata.get('created', '?'))[:10]})"]
    if "validation_consensus" in metrics:
        summary.append(f"Validation against ten annotators' consensus ({report.get('n_images', '?')} faces): "
                       f"accuracy **{report['accuracy']:.1%}**, macro-F1 **{report['macro_f1']:.3f}** (the tables "
                       "below)")
    if folder_report:
        summary.append(f"Validation against FER2013's folder labels ({folder_report.get('n_images', '?')} faces): "
                       f"accuracy **{folder_report['accuracy']:.1%}**, macro-F1 **{folder_report['macro_f1']:.3f}**")
    if "ece_after_calibration" in report:
        summary.append(f"Calibration: temperature {inference.get('temperature', 1.0):.3f}, expected calibration "
                       f"error {report['ece_before_calibration']:.3f} before, {report['ece_after_calibration']:.3f} after")
    if metadata.get("parent"):
        summary.append(f"Fine-tuned from `{metadata['parent']}`"
                       + (f" with {metadata['corrections'].get('rows', '?')} correction rows"
                          if isinstance(metadata.get("corrections"), dict) else ""))
    clear = report.get("clear_recall", {})
    per_class = pd.DataFrame(
        [{"class": name, **{key: round(float(values[key]), 3) for key in ("precision", "recall", "f1")},
          "support": int(values["support"]),
          "recall on clear faces": round(float(clear[name]["recall"]), 3) if name in clear else None}
         for name, values in report.get("per_class", {}).items()],
        columns=["class", "precision", "recall", "f1", "support", "recall on clear faces"])
    confusion = pd.DataFrame(report.get("confusion", []), columns=classes if report.get("confusion") else None)
    if len(confusion):
        confusion.insert(0, "true \\ predicted", classes)
    history = pd.DataFrame(
        [{"version": row["version"] + (" (current)" if row["current"] else ""), "date (UTC)": row["date"],
          "accuracy (consensus)": _round(row["consensus_accuracy"]),
          "sad F1 (consensus)": _round(row["consensus_sad_f1"]),
          "neutral F1 (consensus)": _round(row["consensus_neutral_f1"]),
          "accuracy (folders)": _round(row["accuracy"]), "macro-F1 (folders)": _round(row["macro_f1"]),
          "sad F1 (folders)": _round(row["sad_f1"]), "neutral F1 (folders)": _round(row["neutral_f1"]),
          "status": row["status"], "parent": row["parent"] or ""}
         for row in reversed(list_models(path.parent))],
        columns=["version", "date (UTC)", "accuracy (consensus)", "sad F1 (consensus)", "neutral F1 (consensus)",
                 "accuracy (folders)", "macro-F1 (folders)", "sad F1 (folders)", "neutral F1 (folders)", "status",
                 "parent"])
    return "  \n".join(summary), per_class, confusion, history


def _round(value):
    return round(float(value), 4) if isinstance(value, (int, float)) else None

