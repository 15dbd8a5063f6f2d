"""fer.images.load_image: every kind of file, array and PIL image decodes to exact RGB uint8 pixels, or fails with an
ImageError that names the file and the problem; corrupt bytes never escape as another exception."""

import io
import re
import threading
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

import fixtures_bad
from fer import images
from fer.errors import ImageError
from fer.images import MAX_PIXELS, load_image


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut):
    return fixtures_bad.write_image_files(tmp_path_factory.mktemp("images"), astronaut)


def assert_rgb(array, shape):
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.shape == shape
    assert array.flags["C_CONTIGUOUS"]


def mean_difference(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ---- files that decode, each to the pixels it holds ------------------------------------------------------------

def test_photo_files(files, astronaut):
    np.testing.assert_array_equal(load_image(files["photo.png"]), astronaut)
    jpeg = load_image(files["photo.jpg"])
    assert_rgb(jpeg, astronaut.shape)
    assert mean_difference(jpeg, astronaut) < 3
    # A path, a str and the file's bytes give the same pixels.
    np.testing.assert_array_equal(load_image(str(files["photo.jpg"])), jpeg)
    np.testing.assert_array_equal(load_image(files["photo.jpg"].read_bytes()), jpeg)
    np.testing.assert_array_equal(load_image(bytearray(files["photo.jpg"].read_bytes())), jpeg)


def test_exif_orientation_is_applied(files, astronaut):
    stored = np.asarray(Image.open(files["exif_rotated.jpg"]))
    assert stored.shape == astronaut.shape and mean_difference(stored, astronaut) > 20  # lies on its side on disk
    upright = load_image(files["exif_rotated.jpg"])
    assert_rgb(upright, astronaut.shape)
    assert mean_difference(upright, astronaut) < 4


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
@pytest.mark.parametrize("exif", [b"Exif\x00\x00garbage", b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01" * 20])
def test_unreadable_exif_keeps_the_photo_as_stored(astronaut, exif):
    photo = load_image(fixtures_bad.encode(astronaut, "JPEG", quality=95, exif=exif))
    assert mean_difference(photo, astronaut) < 3


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_out_of_range_orientation_is_ignored(astronaut, orientation):
    exif = Image.Exif()
    exif[fixtures_bad.EXIF_ORIENTATION] = orientation
    photo = load_image(fixtures_bad.encode(astronaut, "JPEG", quality=95, exif=exif.tobytes()))
    assert mean_difference(photo, astronaut) < 3


@pytest.mark.parametrize("name", ["blocks.webp", "blocks.bmp", "blocks.tiff", "palette.png"])
def test_lossless_formats_give_exact_pixels(files, name):
    np.testing.assert_array_equal(load_image(files[name]), fixtures_bad.colour_blocks())


def test_cmyk_jpeg_is_converted_to_rgb(files):
    rgb = load_image(files["cmyk.jpg"])
    assert_rgb(rgb, (40, 60, 3))
    assert np.abs(rgb.astype(int) - fixtures_bad.colour_blocks()).max() < 16


def test_sixteen_bit_pngs_keep_their_high_byte(files):
    ramp = fixtures_bad.gradient16()
    expected = np.repeat((ramp >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(load_image(files["gray16.png"]), expected)
    # A dark 16-bit picture (every value under 256 of 65535) is black, not mistaken for a bright 8-bit one.
    np.testing.assert_array_equal(load_image(files["gray16_dark.png"]), 0)
    rgb = load_image(files["rgb16.png"])
    assert_rgb(rgb, (32, 64, 3))
    np.testing.assert_array_equal(rgb[:, :, 0], expected[:, :, 0])
    np.testing.assert_array_equal(rgb[:, :, 1], expected[:, ::-1, 0])
    np.testing.assert_array_equal(rgb[:, :, 2], 128)


def test_thirty_two_bit_tiffs(files):
    expected = np.round(fixtures_bad.float_ramp(1.0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(load_image(files["float.tiff"]), np.repeat(expected[:, :, None], 3, axis=2))
    ramp = (fixtures_bad.gradient16() >> 8).astype(np.uint8)
    np.testing.assert_array_equal(load_image(files["int32.tiff"]), np.repeat(ramp[:, :, None], 3, axis=2))


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp"])
def test_animations_give_their_first_frame(files, name):
    frame = load_image(files[name])
    assert_rgb(frame, (16, 24, 3))
    np.testing.assert_array_equal(frame, np.broadcast_to(np.array([255, 0, 0], np.uint8), frame.shape))


def test_multi_picture_jpeg_gives_its_first_picture():
    pictures = [Image.new("RGB", (20, 10), (255, 0, 0)), Image.new("RGB", (20, 10), (0, 0, 255))]
    data = fixtures_bad.encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:])
    first = load_image(data)
    assert first[..., 0].min() > 240 and first[..., 2].max() < 15


def test_transparency_is_flattened_onto_white(files, astronaut):
    rgba = load_image(files["rgba.png"])
    half = astronaut.shape[1] // 2
    np.testing.assert_array_equal(rgba[:, :half], 255)
    np.testing.assert_array_equal(rgba[:, half:], astronaut[:, half:])
    keyed = load_image(files["palette_transparent.png"])  # a palette PNG whose red entry is transparent
    expected = fixtures_bad.colour_blocks()
    expected[:, :20] = 255
    np.testing.assert_array_equal(keyed, expected)


def test_gray_and_gray_alpha(files):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))
    np.testing.assert_array_equal(load_image(files["gray.png"]), np.repeat(gray[:, :, None], 3, axis=2))
    flattened = np.where(gray < 128, 255, gray)
    np.testing.assert_array_equal(load_image(files["gray_alpha.png"]), np.repeat(flattened[:, :, None], 3, axis=2))


def test_tiny_and_uniform_images(files):
    np.testing.assert_array_equal(load_image(files["one_pixel.png"]), [[[200, 10, 10]]])
    np.testing.assert_array_equal(load_image(files["strip.png"]), np.full((1, 2000, 3), 90))
    np.testing.assert_array_equal(load_image(files["black.png"]), 0)
    np.testing.assert_array_equal(load_image(files["white.png"]), 255)


def test_pixel_limit_is_ours_not_pillows():
    # 90 megapixels is over Pillow's bomb warning (89.5) but under MAX_PIXELS: the header is accepted and decoding
    # starts (and fails on the missing pixel data) instead of the file being refused for its size.
    header_only = fixtures_bad.png_bytes(10000, 9000, 1, 0, b"\x00" * 100)
    assert 10000 * 9000 < MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="truncated"):
            load_image(header_only)


# ---- files that must be refused, each with a message naming the problem ----------------------------------------

REFUSED = fixtures_bad.UNREADABLE


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unreadable_files_are_refused_with_their_reason(files, name):
    with pytest.raises(ImageError) as caught:
        load_image(files[name])
    message = str(caught.value)
    assert REFUSED[name] in message and str(files[name]) in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(set(REFUSED) - {"folder.jpg", "missing.jpg", "too_large.jpg", "empty.jpg"}))
def test_unreadable_bytes_are_refused_the_same_way(files, name):
    with pytest.raises(ImageError, match=re.escape(REFUSED[name])) as caught:
        load_image(files[name].read_bytes())
    assert "the uploaded data" in str(caught.value)


@pytest.mark.parametrize("name", ["bomb.png", "bomb.gif", "bomb_compressed.png"])
def test_bombs_are_refused_before_any_pixel_is_decoded(files, name, monkeypatch):
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image))
    with pytest.raises(ImageError, match="pixels"):
        load_image(files[name])
    assert decoded == []


def test_ghostscript_is_never_run(files, monkeypatch):
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: pytest.fail("Ghostscript was run"))
    with pytest.raises(ImageError, match="PostScript"):
        load_image(files["drawing.eps"])


def test_a_file_that_cannot_be_read_names_the_os_error(files, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(files["photo.jpg"]), "read_bytes", refuse)
    with pytest.raises(ImageError, match="Cannot read .*photo.jpg: .*Permission denied"):
        load_image(files["photo.jpg"])


@pytest.mark.parametrize("source", [None, 3, [[1, 2], [3, 4]], io.BytesIO(b"x")], ids=["None", "int", "list", "BytesIO"])
def test_unsupported_source_types(source):
    with pytest.raises(ImageError, match=f"Cannot read an image from a {type(source).__name__}"):
        load_image(source)


def test_corrupt_bytes_only_ever_raise_image_error(astronaut):
    """Seeded byte flips and cuts of every format: each gives a valid picture or an ImageError, never anything else."""
    rng = np.random.default_rng(7)
    small = astronaut[160:224, 160:224]
    originals = [fixtures_bad.encode(small, fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")]
    for _ in range(300):
        data = bytearray(originals[rng.integers(len(originals))])
        for position in rng.integers(0, len(data), size=rng.integers(1, 8)):
            data[position] = rng.integers(0, 256)
        if rng.random() < 0.3:
            data = data[: rng.integers(1, len(data))]
        try:
            picture = load_image(bytes(data))
        except ImageError as error:
            assert "\n" not in str(error)
            continue
        assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3


def test_concurrent_loads_leave_the_warning_filters_alone(files):
    before = list(warnings.filters)
    names = ["bomb_compressed.png", "photo.jpg", "notes.jpg", "animated.gif"] * 8

    def load(name):
        try:
            load_image(files[name])
        except ImageError:
            pass

    threads = [threading.Thread(target=load, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == before


# ---- PIL images ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I;16", "I", "F"])
def test_pil_images_of_every_common_mode(mode):
    picture = load_image(Image.new(mode, (7, 5)))
    assert_rgb(picture, (5, 7, 3))


def test_closed_or_truncated_pil_images_are_refused(files):
    closed = Image.open(files["photo.png"])
    closed.close()
    with pytest.raises(ImageError, match="closed"):
        load_image(closed)
    truncated = Image.open(files["truncated.png"])  # opens lazily; the pixels are missing
    with pytest.raises(ImageError, match="truncated"):
        load_image(truncated)


def test_a_pil_image_on_a_later_frame_gives_its_first_frame(files):
    animation = Image.open(files["animated.gif"])
    animation.seek(1)
    frame = load_image(animation)
    np.testing.assert_array_equal(frame[0, 0], [255, 0, 0])  # the first frame, whatever frame the caller was on
    assert animation.size == (24, 16)


# ---- arrays ---------------------------------------------------------------------------------------------------------

GOOD_ARRAYS = {  # array -> the RGB uint8 it means (all 2x3 pixels)
    "uint8 rgb": (np.full((2, 3, 3), 7, np.uint8), 7),
    "uint8 gray": (np.full((2, 3), 9, np.uint8), 9),
    "uint8 gray with a channel axis": (np.full((2, 3, 1), 9, np.uint8), 9),
    "uint8 rgba, opaque": (np.dstack([np.full((2, 3, 3), 40, np.uint8), np.full((2, 3), 255, np.uint8)]), 40),
    "uint8 rgba, transparent": (np.zeros((2, 3, 4), np.uint8), 255),
    "bool": (np.ones((2, 3), bool), 255),
    "uint16": (np.full((2, 3, 3), 65535, np.uint16), 255),
    "big-endian uint16": (np.full((2, 3), 0x8000, ">u2"), 128),
    "int64 in 0..255": (np.full((2, 3, 3), 200, np.int64), 200),
    "float in [0, 1]": (np.full((2, 3, 3), 0.5, np.float32), 128),
    "float in [0, 255]": (np.full((2, 3, 3), 100.0), 100),
    "float16": (np.full((2, 3), 1.0, np.float16), 255),
    "non-contiguous": (np.full((2, 6, 3), 5, np.uint8)[:, ::2], 5),
}


@pytest.mark.parametrize("name", sorted(GOOD_ARRAYS))
def test_arrays_of_every_accepted_kind(name):
    array, value = GOOD_ARRAYS[name]
    picture = load_image(array)
    assert_rgb(picture, (2, 3, 3))
    np.testing.assert_array_equal(picture, value)


BAD_ARRAYS = {  # array -> words the message must contain
    "two channels": (np.zeros((4, 4, 2), np.uint8), "shape"),
    "five channels": (np.zeros((4, 4, 5), np.uint8), "shape"),
    "one dimension": (np.zeros(16, np.uint8), "shape"),
    "four dimensions": (np.zeros((1, 4, 4, 3), np.uint8), "shape"),
    "a scalar": (np.array(3, np.uint8), "shape"),
    "no pixels": (np.zeros((0, 0, 3), np.uint8), "empty"),
    "no columns": (np.zeros((4, 0), np.uint8), "empty"),
    "NaN": (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    "infinity": (np.full((4, 4), np.inf), "infinite"),
    "negative floats": (np.full((4, 4), -0.5), r"\[0, 1\] or \[0, 255\]"),
    "floats over 255": (np.full((4, 4), 300.0), r"\[0, 1\] or \[0, 255\]"),
    "negative integers": (np.full((4, 4), -1, np.int8), "negative"),
    "integers over 65535": (np.full((4, 4), 70000, np.int32), "65535"),
    "objects": (np.full((4, 4), None, dtype=object), "dtype object"),
    "complex": (np.zeros((4, 4), complex), "dtype complex"),
    "strings": (np.full((4, 4), "a"), "dtype <U1"),
    "datetimes": (np.zeros((4, 4), "datetime64[s]"), "dtype datetime64"),
    "too many pixels": (np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (20000, 20000, 3), (0, 0, 0)), "too large"),
}


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_bad_arrays_are_refused_with_their_reason(name):
    array, words = BAD_ARRAYS[name]
    with pytest.raises(ImageError, match=words):
        load_image(array)


def test_describe_names_what_a_file_seems_to_be():
    assert images.describe_content(b"\x00\x00\x00\x20ftypavif") == "an AVIF image"
    assert images.describe_content(b"\x1aE\xdf\xa3" + b"\x00" * 8) == "a video (WebM/MKV)"
    assert images.describe_content(b"PK\x03\x04rest") == "a ZIP archive"
    assert images.describe_content("caf\u00e9 ".encode() * 400) == "a text file"  # a character cut at the 1 kB window
    assert images.describe_content(bytes(range(256))) is None
