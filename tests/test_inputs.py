"""fer.inputs: images however they arrive (uploaded file, data: URL, URL) and argument types, checked before work.
The same checks through the served app are in tests/test_app_probe.py."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from fer import inputs
from fer.errors import ImageError
from fer.images import load_image


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_upload_and_a_data_url_of_the_same_bytes_give_the_same_pixels(tmp_path, astronaut):
    data = _png((astronaut.mean(axis=2).astype(np.uint16) * 257))  # 16-bit grayscale
    path = tmp_path / "upload-cache-name.png"
    path.write_bytes(data)
    uploaded = inputs.read_image(inputs.ImagePayload(path=str(path), orig_name="mine.png"))
    pasted = inputs.read_image(inputs.ImagePayload(url="data:image/png;base64," + base64.b64encode(data).decode()))
    np.testing.assert_array_equal(uploaded, pasted)
    np.testing.assert_array_equal(uploaded, load_image(data))


def test_messages_name_the_users_file_never_the_server_path(tmp_path):
    path = tmp_path / "cache" / "d170df" / "text.jpg"
    path.parent.mkdir(parents=True)
    path.write_text("hello")
    with pytest.raises(ImageError) as refused:
        inputs.read_image(inputs.ImagePayload(path=str(path), orig_name="C:\\Users\\ana\\text.jpg"))
    assert str(refused.value).startswith("text.jpg is not an image") and str(tmp_path) not in str(refused.value)
    with pytest.raises(ImageError, match="^The picture is not an image"):
        inputs.read_image(inputs.ImagePayload(path=str(path)))


def test_every_route_has_the_same_byte_limit(tmp_path):
    data = b"\x89PNG" + bytes(2000)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    for payload in (inputs.ImagePayload(path=str(path), orig_name="big.png"),
                    inputs.ImagePayload(url="data:image/png;base64," + base64.b64encode(data).decode())):
        with pytest.raises(ImageError, match="larger than the"):
            inputs.read_image(payload, max_bytes=1000)


@pytest.mark.parametrize("payload, words", [
    (inputs.ImagePayload(path="https://example.com/a.png"), "does not download"),
    (inputs.ImagePayload(url="http://example.com/a.png"), "does not download"),
    (inputs.ImagePayload(), "without its data"),
    (inputs.ImagePayload(url="data:image/png,%89PNG"), "without base64 data"),
    (inputs.ImagePayload(url="data:image/png;base64,@@@@"), "damaged"),
])
def test_payloads_that_cannot_be_read_are_refused_with_a_reason(payload, words):
    with pytest.raises((inputs.InputError, ImageError), match=words):
        inputs.read_image(payload)


def test_shown_names_are_short_and_visible():
    assert inputs.shown_name("/tmp/x/photo.jpg") == "photo.jpg"
    assert inputs.shown_name("evil\u202egpj.exe") == "evilgpj.exe"
    assert inputs.shown_name("a\nb<img src=x>.png") == "abimg src=x.png"
    assert len(inputs.shown_name("x" * 500 + ".png")) == inputs.MAX_SHOWN_NAME
    assert inputs.shown_name(None) is None and inputs.shown_name("\u200b") is None


def test_arguments_of_the_wrong_type_are_refused():
    assert inputs.require_bool(True, "flag") is True and inputs.require_bool(None, "flag") is False
    for value in ("yes", 1, 0, {"a": 1}, [True], "true"):
        with pytest.raises(inputs.InputError, match="flag must be true or false"):
            inputs.require_bool(value, "flag")
    assert inputs.require_text("ana", "name") == "ana" and inputs.require_text(None, "name") == ""
    for value in ({"a": 1}, 3, ["ana"]):
        with pytest.raises(inputs.InputError, match="name must be text"):
            inputs.require_text(value, "name")
    with pytest.raises(inputs.InputError, match="longer than 10"):
        inputs.require_text("x" * 11, "name", max_length=10)
