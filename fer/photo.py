"""The Predict tab's work on one photo: faces and probabilities, the model inputs kept for flagging, the picture.

    result = analyze_photo(predictor, "photo.jpg")   # result.faces is Predictor.predict's list, largest face first
    picture = annotate_photo("photo.jpg", result)    # RGB uint8, boxes and labels drawn, at most 1280 px
    sha = flag_face(result, 0)                       # face 1 goes to the reviewers' queue (fer.labels)
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from fer import annotate, labels
from fer import faces as face_detection
from fer.images import ImageSource, load_image
from fer.preprocess import preprocess_face

logger = logging.getLogger(__name__)

MAX_SHOWN_FACES = 5  # faces that get their own probabilities panel; the rest are boxed and in the JSON
FLAG_SOURCE = "app:predict"  # the `source` column of flagged.csv for faces flagged on the Predict tab


@dataclasses.dataclass(frozen=True)
class PhotoResult:
    """What the model said about one photo, kept in the visitor's gr.State until they flag a face or upload again."""

    faces: list[dict]  # [{"box": [x, y, w, h], "probabilities": {class: p}}], largest first, as Predictor.predict
    crops: np.ndarray  # (N, S, S) uint8: exactly what the model saw for each face, in the same order
    whole_image: bool
    model_version: str

    @property
    def shown(self) -> list[dict]:
        return self.faces[:MAX_SHOWN_FACES]


def analyze_photo(predictor, image: ImageSource, whole_image: bool = False) -> PhotoResult:
    """Detect and classify every face in `image` (anything `fer.images.load_image` reads); raises ImageError."""
    rgb = load_image(image)  # (H, W, 3) uint8, EXIF rotation applied, alpha flattened
    faces = predictor.predict(rgb, whole_image=whole_image)
    config = predictor.preprocess_config
    if whole_image:
        crops = [preprocess_face(rgb, None, config)]
    else:
        crops = [preprocess_face(rgb, tuple(face["box"]), config) for face in faces]
    size = predictor.image_size
    crops_array = np.stack(crops) if crops else np.zeros((0, size, size), dtype=np.uint8)
    return PhotoResult(faces=faces, crops=crops_array, whole_image=whole_image, model_version=predictor.version)


def face_caption(index: int, probabilities: dict[str, float]) -> str:
    """Face numbers start at 1 and match the probability panels' titles."""
    return annotate.caption(probabilities, prefix=f"{index + 1}: ")


def annotate_photo(image: ImageSource, result: PhotoResult,
                   max_side: int | None = annotate.DISPLAY_MAX_SIDE) -> np.ndarray:
    """`image` with every face of `result` boxed and captioned, coloured by its most probable class."""
    rgb = load_image(image)
    if result.whole_image:
        return annotate.resize_for_display(rgb, max_side)[0]  # the whole picture is the face: no box to draw
    boxes = [tuple(face["box"]) for face in result.faces]
    captions = [face_caption(index, face["probabilities"]) for index, face in enumerate(result.faces)]
    colours = [annotate.colour_for(face["probabilities"]) for face in result.faces]
    return annotate.draw_faces(rgb, boxes, captions, colours, max_side)


def describe(result: PhotoResult | None) -> str:
    """One or two sentences (Markdown) saying what was found."""
    if result is None:
        return ""
    count = len(result.faces)
    if result.whole_image:
        return "Classified the whole image as one face."
    if count == 0:
        return ("**No face found.** The detector looks for roughly frontal faces that are not too small in the "
                "picture. If this picture is already a cropped face (a FER2013 image, say), tick "
                "**Treat the whole image as one face**.")
    if count == 1:
        return "1 face found."
    if count <= MAX_SHOWN_FACES:
        return f"{count} faces found, largest first."
    if count >= face_detection.MAX_FACES:
        return (f"**Only the {count} largest faces were classified**: that is the most one photo gets, and this "
                f"photo may hold more. Crop it into parts to classify the rest. The {MAX_SHOWN_FACES} largest have "
                "probabilities below; the others are boxed on the picture and listed in the JSON.")
    return (f"{count} faces found. The {MAX_SHOWN_FACES} largest have probabilities below; the other "
            f"{count - MAX_SHOWN_FACES} are boxed on the picture and listed in the JSON.")


def flag_face(result: PhotoResult, index: int, source: str = FLAG_SOURCE, labels_dir: str | Path | None = None) -> str:
    """Send face `index` (0 = largest) of `result` to the reviewers' queue; return its SHA-256.

    Stores the 48x48 model input and the model's probabilities through `fer.labels.flag_for_review` (nothing of
    the rest of the photo). Raises IndexError for a face that is not in `result`, FerError if storing fails.
    """
    if not 0 <= index < len(result.faces):
        raise IndexError(f"There is no face {index + 1} in this result ({len(result.faces)} faces).")
    sha = labels.flag_for_review(result.crops[index], result.faces[index]["probabilities"], result.model_version,
                                 source, labels_dir=labels_dir)
    logger.info("face %s flagged for review", sha[:12])
    return sha

