"""The one path from a photo (or a face crop) to a model input, shared by training, evaluation, the app and review."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from fer.config import PreprocessConfig
from fer.errors import ImageError
from fer.faces import Box, to_gray


def preprocess_face(image: np.ndarray, box: Box | None = None, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Return the face as a (S, S) uint8 grayscale array framed like a FER2013 face (S = config.image_size).

    Input contract: `image` is RGB uint8 of shape (H, W, 3) or grayscale uint8 of shape (H, W), as
    `fer.images.load_image` returns (RGB, not OpenCV's BGR). With `box` = (x, y, w, h) from `fer.faces.detect_faces`,
    the box is grown by `config.box_margin` on each side, made square around its centre, and cropped from the full
    resolution image (parts outside the photo repeat its edge). Without `box` the whole image is taken to be a
    face crop already (a FER2013 file, say) and is only converted and resized.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ImageError("preprocess_face expects a uint8 NumPy image; decode files with fer.images.load_image.")
    gray = to_gray(image)
    if box is not None:
        gray = _crop_square(gray, box, config)
    size = config.image_size
    if gray.shape == (size, size):
        return np.ascontiguousarray(gray)
    shrinking = gray.shape[0] > size or gray.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interpolation)


def _crop_square(gray: np.ndarray, box: Box, config: PreprocessConfig) -> np.ndarray:
    x, y, w, h = (int(v) for v in box)
    if w <= 0 or h <= 0:
        raise ImageError(f"A face box needs a positive width and height; got {box}.")
    side = max(w, h) * (1.0 + 2.0 * config.box_margin)
    center_x = x + w / 2.0
    center_y = y + h / 2.0 + config.box_shift_y * h
    left = int(round(center_x - side / 2.0))
    top = int(round(center_y - side / 2.0))
    side = max(1, int(round(side)))
    height, width = gray.shape
    pad_left, pad_top = max(0, -left), max(0, -top)
    pad_right, pad_bottom = max(0, left + side - width), max(0, top + side - height)
    inside = gray[max(0, top):min(height, top + side), max(0, left):min(width, left + side)]
    if inside.size == 0:
        raise ImageError(f"The face box {box} lies outside the {width}x{height} image.")
    if pad_left or pad_top or pad_right or pad_bottom:
        inside = cv2.copyMakeBorder(inside, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_REPLICATE)
    return inside


def face_sha256(face: np.ndarray) -> str:
    """Content hash of a preprocessed face: SHA-256 of its (S, S) uint8 pixels, independent of file encoding."""
    face = np.ascontiguousarray(face, dtype=np.uint8)
    return hashlib.sha256(face.tobytes()).hexdigest()
