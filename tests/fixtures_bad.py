"""Every bad or odd input the bad-input tests use, generated in code into a folder: nothing binary is committed.

    files = fixtures_bad.write_image_files(tmp_path, photo)   # {file name: path}: ~35 images, non-images, bombs
    models = fixtures_bad.write_bad_models(tmp_path, good)     # {name: .keras path}: broken copies of a good model
    trees = fixtures_bad.write_bad_data(tmp_path)              # {name: dataset root}: folders training must refuse

`photo` is an RGB uint8 picture with one frontal face (the astronaut). UNREADABLE lists the files that must be refused
and the words their error must contain; what the other inputs should give is stated in the tests that use them.
`huge_photo` (10000x8000, 240 MB) is built only by the test that needs it.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fer.config import CLASS_NAMES
from fer.images import MAX_FILE_BYTES

EXIF_ORIENTATION = 0x0112
ROTATE_CLOCKWISE_TO_VIEW = 6  # EXIF: the stored pixels must be turned 90 degrees clockwise to stand upright


def encode(image: np.ndarray | Image.Image, format: str, **options) -> bytes:
    """`image` (RGB uint8 array or PIL image) encoded by Pillow as `format`."""
    picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, so its header can declare any size: `rows` is the raw filtered scanline data."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows, 9))
            + _png_chunk(b"IEND", b""))


def bomb_png_header() -> bytes:
    """67 bytes declaring a 30000x30000 RGB image (2.7 GB decoded) with almost no pixel data behind it."""
    return png_bytes(30000, 30000, 8, 2, b"\x00" * 16)


def bomb_gif_header() -> bytes:
    """A GIF whose screen and only frame claim 30000x30000 pixels."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 30000, 30000, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 30000, 30000, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def compressible_png_bomb() -> bytes:
    """A complete, valid 11000x10000 black-and-white PNG (110 megapixels) that is only ~15 kB on disk."""
    width, height = 11000, 10000
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + 1 bit per pixel
    return png_bytes(width, height, 1, 0, row * height)


def png16_gray(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG of the uint16 (H, W) `values`."""
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG")


def gradient16(height: int = 32, width: int = 64, peak: int = 65535) -> np.ndarray:
    """(H, W) uint16 ramp from 0 to `peak` across the columns."""
    return np.tile(np.linspace(0, peak, width).round().astype(np.uint16), (height, 1))


def float_ramp(peak: float, height: int = 32, width: int = 64) -> np.ndarray:
    """(H, W) float32 ramp from 0 to `peak` across the columns."""
    return np.tile(np.linspace(0, peak, width, dtype=np.float32), (height, 1))


def png16_rgb(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one; OpenCV can, in BGR order)."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb16[:, :, ::-1]))
    assert ok
    return data.tobytes()


def colour_blocks(height: int = 40, width: int = 60) -> np.ndarray:
    """(H, W, 3) uint8: red left third, green middle, blue right: easy to check after a colour conversion."""
    image = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    image[:, :third, 0] = 255
    image[:, third:2 * third, 1] = 255
    image[:, 2 * third:, 2] = 255
    return image


def animated(format: str) -> bytes:
    """Two frames, red then blue; only the first should be read."""
    frames = [Image.new("RGB", (24, 16), (255, 0, 0)), Image.new("RGB", (24, 16), (0, 0, 255))]
    return encode(frames[0], format, save_all=True, append_images=frames[1:], duration=100, loop=0,
                  **({"lossless": True} if format == "WEBP" else {}))


def exif_rotated_jpeg(photo: np.ndarray) -> bytes:
    """`photo` stored lying on its side (turned 90 degrees anticlockwise) with the EXIF tag that stands it up."""
    stored = np.ascontiguousarray(np.rot90(photo, k=1))  # anticlockwise: the face now looks sideways
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_CLOCKWISE_TO_VIEW
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def huge_photo(photo: np.ndarray, width: int = 10000, height: int = 8000,
               face_scale: int = 8) -> tuple[np.ndarray, tuple[int, int]]:
    """A `width` x `height` RGB picture: mid-grey with `photo` enlarged `face_scale` times inside it.

    Returns the picture and the (x, y) where the enlarged photo's top-left corner lies.
    """
    enlarged = cv2.resize(photo, None, fx=face_scale, fy=face_scale, interpolation=cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), 128, np.uint8)
    left, top = width - enlarged.shape[1] - 1000, (height - enlarged.shape[0]) // 2
    canvas[top:top + enlarged.shape[0], left:left + enlarged.shape[1]] = enlarged
    return canvas, (left, top)


def video(directory: Path, name: str, fourcc: str) -> Path:
    """A real three-frame video written by OpenCV (`fourcc` "mp4v" for .mp4, "MJPG" for .avi)."""
    path = directory / name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 5, (32, 24))
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for step in range(3):
        writer.write(np.full((24, 32, 3), 60 * step, np.uint8))
    writer.release()
    return path


# Every file input that must be refused -> words its error message must contain (besides the file's path).
UNREADABLE = {
    "empty.jpg": "empty",
    "notes.jpg": "text file",
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "bomb.png": "too many pixels",
    "bomb.gif": "too many pixels",
    "bomb_compressed.png": "11000x10000 pixels",
    "garbage.png": "not an image",
    "float_wide.tiff": "[0, 1] or [0, 255]",
    "document.pdf": "PDF",
    "drawing.svg": "SVG",
    "drawing.eps": "PostScript",
    "photo.heic": "HEIC",
    "video.mp4": "video",
    "video.avi": "video",
    "too_large.jpg": "50 MB limit",
    "folder.jpg": "not a file",
    "missing.jpg": "No such file",
}

MINIMAL_PDF = b"""%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 48 48] >> endobj
trailer << /Root 1 0 R >>
%%EOF
"""
MINIMAL_SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48"><circle cx="24" cy="24" r="20" fill="gold"/></svg>
"""
# Pillow identifies EPS files and would run Ghostscript (an external interpreter) to draw them.
MINIMAL_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 48 48\nnewpath 0 0 moveto 48 48 lineto stroke\n%%EOF\n"
HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32  # an iPhone photo's first box


def write_image_files(directory: Path, photo: np.ndarray) -> dict[str, Path]:
    """Write every file input into `directory`; returns {name: path} (the "missing" path is not created)."""
    directory.mkdir(parents=True, exist_ok=True)
    jpeg = encode(photo, "JPEG", quality=90)
    png = encode(photo, "PNG")
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:, : photo.shape[1] // 2, 3] = 0  # left half fully transparent
    palette = Image.fromarray(colour_blocks()).quantize(colors=4)
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = palette.getpixel((0, 0))  # the red left third is see-through
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))  # (32, 64)
    contents: dict[str, bytes] = {
        # Unreadable: each must be refused with a message naming the problem.
        "empty.jpg": b"",
        "notes.jpg": b"Dear reviewer,\nthis is a text file with a .jpg name.\n",
        "truncated.jpg": jpeg[: len(jpeg) * 6 // 10],
        "truncated.png": png[: len(png) // 2],
        "bomb.png": bomb_png_header(),
        "bomb.gif": bomb_gif_header(),
        "bomb_compressed.png": compressible_png_bomb(),
        "document.pdf": MINIMAL_PDF,
        "drawing.svg": MINIMAL_SVG,
        "drawing.eps": MINIMAL_EPS,
        "photo.heic": HEIC_HEADER,
        "garbage.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,  # a PNG signature, then nonsense
        "float_wide.tiff": encode(Image.fromarray(float_ramp(1000.0)), "TIFF"),  # 32-bit float pixels up to 1000
        # Readable: each must decode to the right pixels.
        "photo.jpg": jpeg,
        "photo.png": png,
        "exif_rotated.jpg": exif_rotated_jpeg(photo),
        "gray16.png": png16_gray(gradient16()),
        "gray16_dark.png": png16_gray(gradient16(peak=200)),
        "rgb16.png": png16_rgb(np.stack([gradient16(), gradient16()[:, ::-1], np.full((32, 64), 32768, np.uint16)], axis=2)),
        "cmyk.jpg": encode(Image.fromarray(colour_blocks()).convert("CMYK"), "JPEG", quality=95),
        "animated.gif": animated("GIF"),
        "animated.webp": animated("WEBP"),
        "blocks.webp": encode(colour_blocks(), "WEBP", lossless=True),
        "blocks.bmp": encode(colour_blocks(), "BMP"),
        "blocks.tiff": encode(colour_blocks(), "TIFF", compression="tiff_lzw"),
        "palette.png": encode(palette, "PNG"),
        "palette_transparent.png": encode(palette_transparent, "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "gray.png": encode(gray, "PNG"),  # mode L
        "gray_alpha.png": encode(np.dstack([gray, np.where(gray < 128, 0, 255).astype(np.uint8)]), "PNG"),  # mode LA
        "float.tiff": encode(Image.fromarray(float_ramp(1.0)), "TIFF"),  # 32-bit float pixels in [0, 1]
        "int32.tiff": encode(Image.fromarray(gradient16().astype(np.int32)), "TIFF"),  # mode I, 16-bit values
        "strip.png": encode(np.full((1, 2000, 3), 90, np.uint8), "PNG"),  # one pixel tall
        "one_pixel.png": encode(np.array([[[200, 10, 10]]], np.uint8), "PNG"),
        "black.png": encode(np.zeros((480, 640, 3), np.uint8), "PNG"),
        "white.png": encode(np.full((480, 640, 3), 255, np.uint8), "PNG"),
    }
    paths = {}
    for name, data in contents.items():
        (directory / name).write_bytes(data)
        paths[name] = directory / name
    paths["video.mp4"] = video(directory, "video.mp4", "mp4v")
    paths["video.avi"] = video(directory, "video.avi", "MJPG")
    too_large = directory / "too_large.jpg"
    with open(too_large, "wb") as stream:  # sparse: costs no disk space
        stream.truncate(MAX_FILE_BYTES + 1)
    paths["too_large.jpg"] = too_large
    folder = directory / "folder.jpg"
    folder.mkdir(exist_ok=True)
    paths["folder.jpg"] = folder
    paths["missing.jpg"] = directory / "missing.jpg"
    return paths


def write_bad_models(directory: Path, good_model: Path) -> dict[str, Path]:
    """Broken variants of the working model `good_model` (a .keras file beside its .json), one per name."""
    directory.mkdir(parents=True, exist_ok=True)
    metadata = json.loads(good_model.with_suffix(".json").read_text())

    def model(name: str, keras_bytes: bytes | None, json_text: str | None) -> Path:
        path = directory / f"{name}.keras"
        if keras_bytes is not None:
            path.write_bytes(keras_bytes)
        if json_text is not None:
            path.with_suffix(".json").write_text(json_text)
        return path

    good_bytes = good_model.read_bytes()
    good_json = json.dumps(metadata)
    return {
        "missing": model("missing", None, None),
        "no_json": model("no_json", good_bytes, None),
        "mismatched_classes": model("mismatched_classes", good_bytes,
                                    json.dumps({**metadata, "classes": ["happy", "sad", "neutral"]})),
        "wrong_image_size": model("wrong_image_size", good_bytes, json.dumps({**metadata, "image_size": 64})),
        "corrupt": model("corrupt", b"this is not a zip archive\n" * 10, good_json),
        "truncated": model("truncated", good_bytes[: len(good_bytes) // 2], good_json),
        "invalid_json": model("invalid_json", good_bytes, '{"classes": ["happy", '),
        "json_lacks_keys": model("json_lacks_keys", good_bytes, json.dumps({"name": "x"})),
        "json_not_an_object": model("json_not_an_object", good_bytes, "null"),
    }


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_bad_data(directory: Path) -> dict[str, Path]:
    """Dataset roots that training and evaluation must refuse or read around, one per name."""
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, size=(48, 48), dtype=np.uint8)
    roots = {name: directory / name for name in ("no_classes", "no_classes_split", "unreadable_split", "mixed")}
    for folder in (roots["no_classes"], roots["no_classes_split"] / "train", roots["no_classes_split"] / "validation"):
        for other in ("cats", "dogs"):  # folders and images, but none of our classes
            _write_png(folder / other / "a.png", face)
    for split in ("train", "validation"):
        for name in CLASS_NAMES:
            folder = roots["unreadable_split"] / split / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "notes.jpg").write_text("not an image\n")
            (folder / "empty.png").write_bytes(b"")
    for index, name in enumerate(CLASS_NAMES):
        _write_png(roots["mixed"] / name / "good.png", np.roll(face, 12 * index, axis=0))
        (roots["mixed"] / name / "notes.jpg").write_text("not an image\n")
    (roots["mixed"] / "happy" / "bomb.png").write_bytes(bomb_png_header())
    shutil.copyfile(roots["mixed"] / "happy" / "good.png", roots["mixed"] / "happy" / "README.txt")  # not an image suffix
    return roots
