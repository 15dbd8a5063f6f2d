"""Face detection: every face in a photo as an (x, y, w, h) box in that photo's pixels, largest first.

Two OpenCV cascades, both on disk after `pip install`, so nothing is downloaded:

    "haar"  the frontal-face Haar cascade that opencv-python-headless 4.x bundles (cv2.data.haarcascades)
    "lbp"   OpenCV's LBP frontal-face cascade, shipped in fer/data/ (the wheels lack it): about 3x faster
    "fast"  (the default) LBP, then Haar only when LBP finds no face at all

Whichever finds a face, its box is framed like the Haar cascade's (LBP boxes are rescaled by a factor that
benchmarks/detection.py measured), so the crop margin that the model's JSON carries fits every detector.
Callers only see `detect_faces`; swapping the detector changes this module alone.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import cv2
import numpy as np

from fer.errors import ImageError

Box = tuple[int, int, int, int]

# Detection runs on a copy whose longer side is at most this; boxes are mapped back to full resolution.
DETECT_MAX_SIDE = 640
MIN_FACE_FRACTION = 0.04  # of the shorter side of the detection image; smaller faces are ignored
MIN_FACE_PIXELS = 40  # in the photo's own pixels: a smaller face has less detail than the model's 48x48 input
CASCADE_WINDOW = 24  # the cascade's native window: the smallest face it can find in the image it scans
# Every face found is classified (a class photo holds 20-40); this bound only caps one photo's work (the served
# model classifies 300 faces in about 1.5 s on two cores), and the Predict tab says when a photo reaches it.
MAX_FACES = 300
SCALE_FACTOR = 1.1  # each scale the cascades scan is this much larger than the last (1.15 or 1.2 lose faces)
MIN_NEIGHBOURS = 5  # overlapping hits a box needs to count as a face (at 6-8, LBP alone finds 3-8 points fewer)


@dataclasses.dataclass(frozen=True)
class Cascade:
    """One OpenCV cascade file, and the factor that scales its boxes about their centre to the Haar cascade's framing."""

    file: str
    box_scale: float = 1.0

    def path(self) -> str:
        if self.file.startswith("haarcascade_"):
            if not hasattr(cv2, "data"):
                raise ImageError("This OpenCV build ships no Haar cascades; install opencv-python-headless>=4.12,<5.")
            return cv2.data.haarcascades + self.file
        return str(Path(__file__).with_name("data") / self.file)


CASCADES = {
    "haar": Cascade("haarcascade_frontalface_default.xml"),
    # Haar's median box side over LBP's (0.972 / 0.990 of the face) on FER2013 validation faces; the box centres
    # agree (python benchmarks/detection.py).
    "lbp": Cascade("lbpcascade_frontalface.xml", box_scale=0.982),
}
DETECTORS = ("fast", "lbp", "haar")
DEFAULT_DETECTOR = "fast"

_local = threading.local()  # cascades per thread: CascadeClassifier objects are not safe to share across threads


def _cascade(name: str = "haar") -> "cv2.CascadeClassifier":
    cascades = _local.__dict__.setdefault("cascades", {})
    cascade = cascades.get(name)
    if cascade is None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise ImageError("This OpenCV build has no cascade classifier; install opencv-python-headless>=4.12,<5.")
        path = CASCADES[name].path()
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise ImageError(f"Could not load the face detector from {path}; reinstall fer and opencv-python-headless<5.")
        cascades[name] = cascade
    return cascade


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) or gray (H, W) -> gray uint8 (H, W)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ImageError(f"Expected an RGB (H, W, 3) or gray (H, W) image; got shape {image.shape}.")


def detect_faces(image: np.ndarray, max_side: int = DETECT_MAX_SIDE, max_faces: int | None = None,
                 detector: str = DEFAULT_DETECTOR) -> list[Box]:
    """Return face boxes (x, y, w, h) in `image`'s own pixel coordinates, largest first, at most `max_faces`
    (MAX_FACES when None).

    `image` is RGB uint8 (H, W, 3) or gray uint8 (H, W), as `fer.images.load_image` returns. Detection runs on a
    copy downscaled to `max_side`, so large photos cost the same as small ones; an empty list means no face.
    `detector` is one of DETECTORS (see the module's docstring).
    """
    if detector not in DETECTORS:
        raise ValueError(f"Unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}.")
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
    names = ("lbp", "haar") if detector == "fast" else (detector,)
    for name in names:
        found = _cascade(name).detectMultiScale(small, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBOURS,
                                                minSize=(min_side, min_side))
        found = np.asarray(found).reshape(-1, 4)
        if len(found):
            break
    boxes = [_clip_box(_haar_framed(box, CASCADES[name], scale), width, height) for box in found]
    boxes.sort(key=lambda box: box[2] * box[3], reverse=True)
    return boxes[:MAX_FACES if max_faces is None else max_faces]


def _haar_framed(box: np.ndarray, cascade: Cascade, scale: float) -> tuple[int, ...]:
    """A box found on the detection copy -> Haar framing in the photo's pixels."""
    x, y, w, h = (float(v) for v in box)
    side_w, side_h = w * cascade.box_scale, h * cascade.box_scale
    framed = (x + (w - side_w) / 2, y + (h - side_h) / 2, side_w, side_h)
    return tuple(int(round(v / scale)) for v in framed)


def _clip_box(box: tuple[int, ...], width: int, height: int) -> Box:
    x, y, w, h = box
    x, y = max(0, min(x, width - 1)), max(0, min(y, height - 1))
    return x, y, max(1, min(w, width - x)), max(1, min(h, height - y))
