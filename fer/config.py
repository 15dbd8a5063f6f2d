"""Names, sizes and settings defined once for the whole package.

Everything a model needs at serving time (class order, image size, preprocessing) is also written into the JSON
that sits next to each `.keras` file; code that serves a model reads it from there, never from here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

# Output order of every model this package trains. Folders are matched by these names, never by sort order.
CLASS_NAMES: tuple[str, ...] = ("happy", "sad", "neutral", "surprise")
IMAGE_SIZE = 48  # FER2013 faces are 48x48 grayscale

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """Where models and `current.json` live: $FER_MODELS_DIR, else models/ in the project (read at call time)."""
    return Path(os.environ.get("FER_MODELS_DIR") or PROJECT_ROOT / "models")


def labels_dir() -> Path:
    """Where reviewers' corrections live: $FER_LABELS_DIR, else labels/ in the project (read at call time)."""
    return Path(os.environ.get("FER_LABELS_DIR") or PROJECT_ROOT / "labels")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How a face box in a photo becomes a model input; saved with every model."""

    image_size: int = IMAGE_SIZE
    # Grow the detector's box by this fraction of its side on every side before cropping. FER2013 faces are framed
    # almost exactly like our Haar detector's square box (median margin +0.013, measured by benchmarks/framing.py).
    box_margin: float = 0.0
    # Shift the grown box up or down by this fraction of its height (negative: up).
    box_shift_y: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PreprocessConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})
