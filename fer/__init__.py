"""fer: facial-emotion recognition (happy, sad, neutral, surprise) on 48x48 grayscale face crops.

    import fer
    predictor = fer.load_predictor()          # the model models/current.json names
    predictor.predict("photo.jpg")            # [{"box": [x, y, w, h], "probabilities": {...}}, ...]
"""

from fer.config import CLASS_NAMES, IMAGE_SIZE
from fer.errors import DataError, FerError, ImageError, ModelError

__all__ = ["CLASS_NAMES", "IMAGE_SIZE", "DataError", "FerError", "ImageError", "ModelError", "Predictor", "load_predictor"]


def __getattr__(name: str):
    # Imported on first use, so `python -m fer.predict` does not import fer.predict twice.
    if name in ("Predictor", "load_predictor"):
        from fer import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'fer' has no attribute {name!r}")
