"""fer: facial-emotion recognition (happy, sad, neutral, surprise) on 48x48 grayscale face crops.

    import fer
    predictor = fer.load_predictor()          # the model models/current.json names
    predictor.predict("photo.jpg")            # [{"box": [x, y, w, h], "probabilities": {...}}, ...]
"""

from fer.config import CLASS_NAMES, IMAGE_SIZE
from fer.errors import DataError, FerError, ImageError, ModelError
from fer.predict import Predictor, load_predictor

__all__ = ["CLASS_NAMES", "IMAGE_SIZE", "DataError", "FerError", "ImageError", "ModelError", "Predictor", "load_predictor"]
