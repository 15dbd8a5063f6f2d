"""Drawing face boxes and their labels onto a copy of a photo (OpenCV), for the app's Predict and Live tabs."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from fer.errors import ImageError
from fer.faces import Box

# RGB colours, one per class index of the served model (cycled if a model ever has more classes).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (46, 204, 64),    # green
    (0, 116, 217),    # blue
    (255, 133, 27),   # orange
    (240, 18, 190),   # magenta
    (255, 220, 0),    # yellow
    (127, 219, 255),  # aqua
)
DISPLAY_MAX_SIDE = 1280  # annotated photos are shown at most this large; drawing happens after the resize


def class_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def colour_map(classes: Sequence[str]) -> dict[str, str]:
    """Class name -> "#rrggbb", the same colours the boxes use (for plots)."""
    return {name: "#{:02x}{:02x}{:02x}".format(*class_colour(index)) for index, name in enumerate(classes)}


def colour_for(probabilities: Mapping[str, float]) -> tuple[int, int, int]:
    """The colour of the most probable class; `probabilities` is in the model's class order, as predictors return it."""
    return class_colour(list(probabilities).index(top_class(probabilities)[0]))


def top_class(probabilities: Mapping[str, float]) -> tuple[str, float]:
    """The most probable class and its probability."""
    name = max(probabilities, key=probabilities.get)
    return name, float(probabilities[name])


def caption(probabilities: Mapping[str, float], prefix: str = "") -> str:
    """Short text for a box, e.g. "1: happy 91%"."""
    name, probability = top_class(probabilities)
    return f"{prefix}{name} {probability:.0%}"


def resize_for_display(image: np.ndarray, max_side: int | None = DISPLAY_MAX_SIDE) -> tuple[np.ndarray, float]:
    """Shrink `image` so its longer side is at most `max_side`; return it and the scale applied (<= 1)."""
    height, width = image.shape[:2]
    scale = 1.0 if not max_side else min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return image.copy(), 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def draw_faces(image: np.ndarray, boxes: Sequence[Box], captions: Sequence[str], colours: Sequence[tuple[int, int, int]],
               max_side: int | None = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Return a copy of `image` (RGB uint8 (H, W, 3)) shrunk to `max_side`, each box outlined with its caption above.

    `boxes` are (x, y, w, h) in `image`'s pixels; `captions` and `colours` (RGB) go with them one to one.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"draw_faces expects an RGB uint8 (H, W, 3) image; got {image.dtype} {image.shape}.")
    if not len(boxes) == len(captions) == len(colours):
        raise ValueError(f"Got {len(boxes)} boxes, {len(captions)} captions and {len(colours)} colours; they must match.")
    canvas, scale = resize_for_display(image, max_side)
    canvas = np.ascontiguousarray(canvas)
    # Lines and text follow the picture's size, so they read the same on a webcam frame and a 12-megapixel photo
    # shown in the same space; text shrinks towards the width of a small face's box (down to a readable minimum),
    # so captions in a crowd cover each other less.
    height, width = canvas.shape[:2]
    side = max(height, width)
    thickness = max(2, round(side / 320))
    largest_font, smallest_font = max(0.5, side / 1000), max(0.4, side / 1800)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for box, text, colour in zip(boxes, captions, colours):
        x, y, w, h = (round(v * scale) for v in box)
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thickness, cv2.LINE_AA)
        unit_width = cv2.getTextSize(text, font, 1.0, 1)[0][0]
        font_scale = max(smallest_font, min(largest_font, 1.3 * w / unit_width))
        text_thickness = max(1, round(font_scale * 1.5))
        (text_width, text_height), baseline = cv2.getTextSize(text, font, font_scale, text_thickness)
        pad = max(2, thickness // 2)
        label_width, label_height = text_width + 2 * pad, text_height + baseline + 2 * pad
        # Above the box, or inside its top edge when the box touches the top; never past the right edge.
        top = y - label_height if y - label_height >= 0 else y
        left = max(0, min(x, width - label_width))
        cv2.rectangle(canvas, (left, top), (left + label_width, top + label_height), colour, cv2.FILLED)
        cv2.putText(canvas, text, (left + pad, top + pad + text_height), font, font_scale, _ink(colour),
                    text_thickness, cv2.LINE_AA)
    return canvas


def jpeg_data_url(image: np.ndarray, quality: int = 85) -> str:
    """RGB uint8 (H, W, 3) -> "data:image/jpeg;base64,...", for showing a picture without writing it to disk."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError(f"Could not encode a {image.shape} image as JPEG.")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on `colour`."""
    red, green, blue = colour
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)
