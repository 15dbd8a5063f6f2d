"""Face detection: every face in a photo as an (x, y, w, h) box in that photo's pixels, largest first.

The detector is OpenCV's frontal-face Haar cascade, bundled with opencv-python-headless 4.x, so nothing is downloaded.
Callers only see `detect_faces`; swapping the detector changes this module alone.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from fer.errors import ImageError

Box = tuple[int, int, int, int]

# Detection runs on a copy whose longer side is at most this; boxes are mapped back to full resolution.
DETECT_MAX_SIDE = 640
MIN_FACE_FRACTION = 0.04  # of the shorter side of the detection image; smaller faces are ignored
MIN_FACE_PIXELS = 40  # in the photo's own pixels: a smaller face has less detail than the model's 48x48 input
CASCADE_WINDOW = 24  # the cascade's native window: the smallest face it can find in the image it scans
MAX_FACES = 20

_local = threading.local()  # a cascade per thread: CascadeClassifier objects are not safe to share across threads


def _cascade() -> "cv2.CascadeClassifier":
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise ImageError("This OpenCV build has no Haar cascades; install opencv-python-headless>=4.12,<5.")
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise ImageError(f"Could not load the face detector from {path}; reinstall opencv-python-headless<5.")
        _local.cascade = cascade
    return cascade


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) or gray (H, W) -> gray uint8 (H, W)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ImageError(f"Expected an RGB (H, W, 3) or gray (H, W) image; got shape {image.shape}.")


def detect_faces(image: np.ndarray, max_side: int = DETECT_MAX_SIDE, max_faces: int = MAX_FACES) -> list[Box]:
    """Return face boxes (x, y, w, h) in `image`'s own pixel coordinates, largest first, at most `max_faces`.

    `image` is RGB uint8 (H, W, 3) or gray uint8 (H, W), as `fer.images.load_image` returns. Detection runs on a
    copy downscaled to `max_side`, so large photos cost the same as small ones; an empty list means no face.
    """
    if image.dtype != np.uint8:
        raise ImageError(f"detect_faces expects a uint8 image; got {image.dtype}. Use fer.images.load_image first.")
    gray = to_gray(image)
    height, width = gray.shape
    scale = min(1.0, max_side / max(height, width))
    # A photo small enough to keep its size is scanned shrunk further, until the smallest face worth finding
    # (MIN_FACE_PIXELS) is the cascade's own window: no time goes on scales where nothing we want can be found.
    scale *= min(1.0, CASCADE_WINDOW / (MIN_FACE_PIXELS * scale))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = gray if scale == 1.0 else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    if min(small.shape) < CASCADE_WINDOW:
        return []  # a strip or a thumbnail: no face of a usable size fits
    small = cv2.equalizeHist(small)
    min_side = max(CASCADE_WINDOW, int(MIN_FACE_FRACTION * min(small.shape)))
    found = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    boxes = [_clip_box(tuple(int(round(v / scale)) for v in box), width, height) for box in np.asarray(found).reshape(-1, 4)]
    boxes.sort(key=lambda box: box[2] * box[3], reverse=True)
    return boxes[:max_faces]


def _clip_box(box: tuple[int, ...], width: int, height: int) -> Box:
    x, y, w, h = box
    x, y = max(0, min(x, width - 1)), max(0, min(y, height - 1))
    return x, y, max(1, min(w, width - x)), max(1, min(h, height - y))
