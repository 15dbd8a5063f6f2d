"""Decoding any image a user or a dataset hands us into one array contract: RGB uint8, shape (H, W, 3)."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer.errors import ImageError

# Larger images are refused before decoding: a 30000x30000 "decompression bomb" would need 2.7 GB.
MAX_PIXELS = 100_000_000
MAX_FILE_BYTES = 50 * 1024 * 1024

ImageSource = str | os.PathLike | bytes | np.ndarray | Image.Image


def load_image(source: ImageSource) -> np.ndarray:
    """Return `source` as a C-contiguous RGB uint8 array of shape (H, W, 3).

    `source` may be a file path, the encoded bytes of a file, a PIL image, or a NumPy array. Arrays are taken as
    RGB (or RGBA, or grayscale (H, W) / (H, W, 1)); uint8 is used as is, uint16 is scaled down, floats must be finite
    and in [0, 1] (or [0, 255] when any value exceeds 1). EXIF orientation is applied; transparency is flattened onto
    white; 16-bit, palette, CMYK and grayscale files are converted; animated files give their first frame.
    Raises ImageError with a message naming the problem for anything else.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "the uploaded data"
    elif isinstance(source, (str, os.PathLike)):
        data, name = _read_file(Path(source)), str(source)
    else:
        raise ImageError(f"Cannot read an image from a {type(source).__name__}; pass a path, bytes or an array.")
    if not data:
        raise ImageError(f"{name} is empty (0 bytes); choose a JPEG, PNG, WEBP, BMP, GIF or TIFF image.")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name} is {len(data) / 2**20:.0f} MB; images up to {MAX_FILE_BYTES // 2**20} MB are accepted.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixel_count(image.size, name)
            return _pil_to_rgb(image)
    except ImageError:
        raise
    except (UnidentifiedImageError, SyntaxError):
        raise ImageError(f"{name} is not an image this app can read; use JPEG, PNG, WEBP, BMP, GIF or TIFF.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} declares too many pixels; use an image under {MAX_PIXELS // 1_000_000} megapixels.") from None
    except (OSError, ValueError, EOFError) as error:
        raise ImageError(f"{name} could not be decoded ({error}); it may be truncated or corrupt.") from None


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise ImageError(f"No such file: {path}")
    if not path.is_file():
        raise ImageError(f"{path} is not a file.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path} is {size / 2**20:.0f} MB; images up to {MAX_FILE_BYTES // 2**20} MB are accepted.")
    return path.read_bytes()


def _check_pixel_count(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels ({width}x{height}).")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name} is {width}x{height} pixels; use an image under {MAX_PIXELS // 1_000_000} megapixels."
        )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    _check_pixel_count(image.size, "the image")
    image.seek(0)  # animated GIF/WEBP/TIFF: first frame
    image.load()  # decode now so truncated files fail here
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(image))
    if mode == "P":
        image = image.convert("RGBA")
    if mode == "LA":
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(
            f"An image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}."
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"An image array must not be empty; got shape {array.shape}.")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise ImageError(f"An image array of {array.shape[1]}x{array.shape[0]} pixels is too large.")
    array = _to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = np.rint(array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.min(initial=0) < 0:
            raise ImageError("An integer image array must not hold negative values.")
        peak = int(array.max(initial=0))
        if peak <= 255:
            return array.astype(np.uint8)
        if peak <= 65535:
            return (array.astype(np.uint32) >> 8).astype(np.uint8)  # 16-bit to 8-bit
        raise ImageError(f"An integer image array must hold values up to 65535; found {peak}.")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError("The image array holds NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise ImageError(f"A float image array must lie in [0, 1] or [0, 255]; found [{low:g}, {high:g}].")
        scale = 255.0 if high <= 1.0 else 1.0
        return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    raise ImageError(f"Unsupported image array dtype {array.dtype}; use uint8.")
