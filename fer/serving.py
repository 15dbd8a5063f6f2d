"""The model a running app serves, swappable without a restart (after a promotion or a rollback).

`ServedModel` stands in for a `fer.predict.Predictor` everywhere (it forwards every attribute), so handlers written
for a predictor keep working; `reload()` loads whatever `models/current.json` names and swaps it in atomically.
Each attribute lookup goes to the model in place at that moment, so a request running during the swap may use both;
that is harmless while they share their classes (the gate refuses a candidate whose classes differ).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


class ServedModel:
    """A predictor that can be replaced while the app serves."""

    def __init__(self, predictor):
        self._predictor = predictor
        self._lock = threading.Lock()

    @property
    def predictor(self):
        return self._predictor

    def __getattr__(self, name: str):
        # Only called for names not found on ServedModel itself: predict, predict_faces, classes, version, ...
        return getattr(self._predictor, name)

    def reload(self, models_dir: str | Path | None = None):
        """Load the model `models_dir/current.json` names (default: the models folder) and serve it from now on.

        The new model is fully loaded before the swap; if loading fails (FerError), the old one keeps serving.
        """
        from fer.predict import load_predictor
        from fer.registry import current_model_path

        fresh = load_predictor(current_model_path(models_dir))
        with self._lock:
            previous, self._predictor = self._predictor, fresh
        logger.info("now serving %s (was %s)", fresh.version, getattr(previous, "version", "?"))
        return fresh
