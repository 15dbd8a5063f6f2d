"""Decoding any image a user or a dataset hands us into one array contract: RGB uint8, shape (H, W, 3)."""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer.errors import ImageError

# Larger images are refused before decoding: a 30000x30000 "decompression bomb" would need 2.7 GB.
MAX_PIXELS = 100_000_000
MAX_FILE_BYTES = 50 * 1024 * 1024
# The formats we promise. Pillow knows more, but some are risky to hand untrusted bytes: EPS runs Ghostscript.
# (Phone cameras' multi-picture JPEGs open through "JPEG" too, as Pillow's MPO images.)
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
FORMAT_NAMES = "JPEG, PNG, WEBP, BMP, GIF or TIFF"

# What Pillow raises for corrupt input (its own fuzzing harness lists these); anything else is a bug worth seeing.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, NotImplementedError, OverflowError, MemoryError)
# warnings.catch_warnings swaps process-wide state; the lock keeps our threads (fer.data decodes on four) from
# restoring each other's filters. It is held only while Pillow reads the header, never while it decodes pixels.
_open_lock = threading.Lock()

ImageSource = str | os.PathLike | bytes | np.ndarray | Image.Image


def load_image(source: ImageSource, *, name: str | None = None, max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Return `source` as a C-contiguous RGB uint8 array of shape (H, W, 3).

    `source` may be a file path, the encoded bytes of a file, a PIL image, or a NumPy array. Arrays are taken as
    RGB (or RGBA, or grayscale (H, W) / (H, W, 1)); uint8 is used as is, uint16 is scaled down, floats must be finite
    and in [0, 1] (or [0, 255] when any value exceeds 1). Files may be JPEG, PNG, WEBP, BMP, GIF or TIFF, at most
    MAX_FILE_BYTES and MAX_PIXELS. EXIF orientation is applied; transparency is flattened onto white; 16-bit,
    palette, CMYK and grayscale files are converted; animated files give their first frame.
    Raises ImageError with a one-line message naming the problem (and the file) for anything else. Messages call
    the image `name` when given (the file name a user chose, rather than where the server keeps it), else its path;
    `max_bytes` lowers the size limit (the app's upload limit).
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        return _decode(source, name or "the image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "the uploaded data"
    elif isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        data = _read_file(Path(source), name, max_bytes)
    else:
        raise ImageError(f"Cannot read an image from a {type(source).__name__}; pass a path, bytes or an array.")
    if not data:
        raise ImageError(f"{name} is empty (0 bytes); choose a {FORMAT_NAMES} image.")
    if len(data) > max_bytes:
        raise ImageError(too_large(name, len(data), max_bytes))
    return _decode(_open(data, name), name)


def _read_file(path: Path, name: str, max_bytes: int) -> bytes:
    try:
        if not path.exists():
            raise ImageError(f"No such file: {name}")
        if not path.is_file():
            raise ImageError(f"{name} is not a file (a folder or a device?); choose an image file.")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(too_large(name, size, max_bytes))
        return path.read_bytes()
    except ImageError:
        raise
    except (OSError, ValueError) as error:  # permission denied, a NUL in the name, a file vanishing mid-read
        raise ImageError(f"Cannot read {name}: {_one_line(error)}") from None


def too_large(name: str | Path, size: int, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The message for an image of `size` bytes over the `max_bytes` limit."""
    return (f"{name} is larger than the {max_bytes / 2**20:g} MB limit ({size:,} bytes); "
            "use a smaller or more compressed image.")


def _open(data: bytes, name: str) -> Image.Image:
    """Read the header only: unknown formats are refused here, oversized images by `_decode` before it decodes."""
    try:
        with _open_lock, warnings.catch_warnings():
            # Pillow warns above ~89 megapixels; our own MAX_PIXELS check below decides, with the real size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:  # over twice Pillow's limit: it refuses to even report the size
        raise ImageError(f"{name} declares far too many pixels (a decompression bomb?); use an image under "
                         f"{MAX_PIXELS // 1_000_000} megapixels.") from None
    except UnidentifiedImageError:
        what = describe_content(data)
        seems = f" (it looks like {what})" if what else ""
        raise ImageError(f"{name} is not an image this app can read{seems}; use {FORMAT_NAMES}.") from None
    except _DECODE_ERRORS as error:
        raise ImageError(f"{name} could not be decoded ({_one_line(error)}); it may be truncated or corrupt.") from None
    return image  # _decode checks the pixel count before decoding any pixel


def describe_content(data: bytes) -> str | None:
    """What a file Pillow could not identify (or fer.video could not read) seems to be, from its first bytes, to say so
    in the error; None when the bytes say nothing we recognise."""
    head = data[:64]
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"%!PS"):
        return "a PostScript (EPS) drawing"
    if head[4:8] == b"ftyp":  # ISO media: MP4 and MOV videos, but also HEIC and AVIF photos
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1"):
            return "a HEIC photo"
        if brand in (b"avif", b"avis"):
            return "an AVIF image"
        return "a video (MP4/MOV)"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "a video (AVI)"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "a video (WebM/MKV)"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    start = data[:1024]
    if b"<svg" in start.lower():
        return "an SVG drawing"
    if b"\x00" not in start:
        try:
            start.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError as error:
            if error.start >= len(start) - 3:  # a multi-byte character cut by the 1024-byte window
                return "a text file"
    return None


def _check_pixel_count(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels ({width}x{height}).")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name} is {width}x{height} pixels; use an image under {MAX_PIXELS // 1_000_000} megapixels."
        )


def _decode(image: Image.Image, name: str) -> np.ndarray:
    """Pixels of an opened (possibly not yet decoded) PIL image as RGB uint8 (H, W, 3)."""
    _check_pixel_count(image.size, name)
    try:
        if image.tell() != 0:
            image.seek(0)  # animated GIF/WEBP/PNG, multi-page TIFF: the first frame
        image.load()  # decode now, so truncated files fail here
        try:
            image = ImageOps.exif_transpose(image)
        except _DECODE_ERRORS:
            pass  # unreadable EXIF: show the pixels as stored rather than refuse the photo
        return _pil_to_rgb(image)
    except ImageError as error:  # 32-bit or float pixels (TIFF) outside the ranges _to_uint8 understands
        raise ImageError(f"{name} holds pixel values this app cannot convert ({str(error).rstrip('.')}).") from None
    except _DECODE_ERRORS as error:
        raise ImageError(f"{name} could not be decoded ({_one_line(error)}); it may be truncated or corrupt.") from None


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):
        # 16-bit grayscale: keep the high byte. `_array_to_rgb` would guess the range from the values and show a
        # dark 16-bit picture (all values under 256) as a bright 8-bit one.
        values = np.asarray(image)  # (H, W) uint16 in either byte order
        return _array_to_rgb((values >> 8).astype(np.uint8))
    if image.mode in ("I", "F"):
        return _array_to_rgb(np.asarray(image))
    if image.has_transparency_data:  # LA, PA, RGBA, or a palette/gray/RGB PNG with a transparent colour
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


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
        raise ImageError(
            f"An image array of {array.shape[1]}x{array.shape[0]} pixels is too large; "
            f"use one under {MAX_PIXELS // 1_000_000} megapixels."
        )
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
