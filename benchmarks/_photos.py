"""Benchmark photos built from real face photos that installed packages ship, so nothing is downloaded.

Sources: scikit-image's astronaut (Eileen Collins, 512x512 RGB) and its LFW subset (25x25 gray face crops from
Labeled Faces in the Wild), and matplotlib's Grace Hopper portrait (512x600 RGB). Both pictures are 640x480 RGB uint8:

    one_face_photo()    the astronaut shrunk to 480x480 and padded with gray to 640x480: one face of about 90 px
    five_face_photo()   five face crops (astronaut, Grace Hopper, three LFW faces) tiled 3 + 2 on a gray canvas

and `write_one_face_clip` turns the first into a 640x480 video in which the astronaut sways from side to side.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
TILE_WIDTH, TILE_HEIGHT = 213, 240  # three across, two rows
CANVAS_GRAY = 118
LFW_FACES = (0, 1, 3)  # LFW-subset faces that our detector and the PyPI fer package's both find once tiled


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())  # (512, 512, 3) RGB


def grace_hopper() -> np.ndarray | None:
    """matplotlib's sample portrait (600, 512, 3) RGB, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        return None
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def lfw_face(index: int) -> np.ndarray:
    """One of the LFW subset's 25x25 face crops, as RGB uint8 (25, 25, 3)."""
    from skimage import data

    face = data.lfw_subset()[index]  # (25, 25) float in [0, 1]
    gray = np.clip(np.rint(face * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def one_face_photo() -> np.ndarray:
    """(480, 640, 3) RGB: the astronaut shrunk to 480x480 (her face about 88 px) between plain gray side bars."""
    photo = cv2.resize(astronaut(), (HEIGHT, HEIGHT), interpolation=cv2.INTER_AREA)  # (480, 480, 3)
    side = (WIDTH - HEIGHT) // 2
    return cv2.copyMakeBorder(photo, 0, 0, side, side, cv2.BORDER_CONSTANT, value=(CANVAS_GRAY,) * 3)


def _crop_around(image: np.ndarray, box: tuple[int, int, int, int], face_fraction: float) -> np.ndarray:
    """A tile-shaped crop centred on `box` in which the face spans `face_fraction` of the tile's width."""
    x, y, w, h = box
    crop_width = w / face_fraction
    crop_height = crop_width * TILE_HEIGHT / TILE_WIDTH
    left = int(round(x + w / 2 - crop_width / 2))
    top = int(round(y + h / 2 - crop_height / 2))
    pad = int(max(crop_width, crop_height))
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[top + pad:top + pad + int(round(crop_height)), left + pad:left + pad + int(round(crop_width))]
    return cv2.resize(crop, (TILE_WIDTH, TILE_HEIGHT), interpolation=cv2.INTER_AREA)


def _lfw_tile(index: int) -> np.ndarray:
    """An LFW face enlarged to 120 px, centred on a tile of the mean colour of its edge pixels."""
    face = cv2.resize(lfw_face(index), (120, 120), interpolation=cv2.INTER_CUBIC)
    edge = np.concatenate([face[0], face[-1], face[:, 0], face[:, -1]])  # (4 * 120, 3)
    tile = np.empty((TILE_HEIGHT, TILE_WIDTH, 3), np.uint8)
    tile[:] = np.rint(edge.mean(axis=0)).astype(np.uint8)
    top, left = (TILE_HEIGHT - 120) // 2, (TILE_WIDTH - 120) // 2
    tile[top:top + 120, left:left + 120] = face
    return tile


def five_face_tiles() -> list[np.ndarray]:
    """Five (240, 213, 3) RGB tiles, each holding one real face."""
    tiles = [_crop_around(astronaut(), (177, 67, 93, 93), face_fraction=0.5)]
    hopper = grace_hopper()
    if hopper is not None:
        tiles.append(_crop_around(hopper, (149, 100, 231, 231), face_fraction=0.5))
    else:  # without matplotlib: the astronaut again, mirrored and framed tighter
        tiles.append(_crop_around(astronaut()[:, ::-1], (512 - 177 - 93, 67, 93, 93), face_fraction=0.55))
    tiles += [_lfw_tile(index) for index in LFW_FACES]
    return tiles


def five_face_photo() -> np.ndarray:
    """(480, 640, 3) RGB: three tiles across the top row, two centred below, on a plain gray canvas."""
    canvas = np.full((HEIGHT, WIDTH, 3), CANVAS_GRAY, np.uint8)
    tiles = five_face_tiles()
    for slot, tile in enumerate(tiles):
        row, column = divmod(slot, 3)
        offset = 0 if row == 0 else (WIDTH - 2 * TILE_WIDTH) // 2
        left, top = offset + column * TILE_WIDTH, row * TILE_HEIGHT
        canvas[top:top + TILE_HEIGHT, left:left + TILE_WIDTH] = tile
    return canvas


def write_one_face_clip(path: str | Path, frames: int = 150, fps: float = 25.0, sway_px: int = 40) -> Path:
    """A 640x480 MPEG-4 Part 2 (mp4v) clip of `one_face_photo`, shifted sideways by up to `sway_px` on a 4-second
    period, so a tracker has to follow the face. mp4v because it is what this OpenCV writes fastest and what the PyPI
    fer package writes too; both sides decode the same file."""
    base = cv2.cvtColor(one_face_photo(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an mp4v video to {path}")
    for index in range(frames):
        shift = int(round(sway_px * np.sin(2 * np.pi * index / (4 * fps))))
        writer.write(np.roll(base, shift, axis=1))
    writer.release()
    return Path(path)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 -> JPEG file bytes (what an upload or a file on disk holds)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return encoded.tobytes()
