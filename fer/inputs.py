"""What a browser or an API client sends the app, checked before any work is done on it.

An image reaches the app one of three ways, and each is held to the same MAX_IMAGE_BYTES before it is decoded:
  an uploaded file   Gradio's upload route stores it (refusing larger files) and sends its path; read here after
                     checking its size, and named in messages by the file name the user chose, never the server path
  a `data:` URL      inside the request itself (a pasted picture, a webcam frame, an API client); its base64 text is
                     measured before it is decoded
  an http(s) URL     refused: the server downloads nothing (`refuse_download` keeps Gradio from fetching it)
Every one is then decoded by fer.images, with its pixel limit and its messages, so the same bytes give the same
picture whichever way they came. The request as a whole is capped earlier, at MAX_REQUEST_BYTES (fer.body_limit),
so an oversized body is refused before it is read.

Plain arguments sent through the API are checked too: `require_bool` and `require_text` refuse values of the wrong
type (a string "yes" for a checkbox) instead of coercing them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import unicodedata
from pathlib import Path

import numpy as np

from fer.errors import FerError, ImageError
from fer.images import FORMAT_NAMES, ImageSource, load_image, too_large

MAX_IMAGE_BYTES = 15 * 2**20  # one image, however it arrives
# A data URL holds the image as base64 (4 characters per 3 bytes), inside a JSON body with a few other fields.
MAX_REQUEST_BYTES = 4 * math.ceil(MAX_IMAGE_BYTES / 3) + 2**20
MAX_SHOWN_NAME = 80  # characters of a user's file name repeated in a message
REQUEST_TOO_LARGE = (f"This request is larger than the app accepts: an image may be at most {MAX_IMAGE_BYTES / 2**20:g} "
                     "MB, as a file or as a data: URL. Send a smaller or more compressed image.")


class InputError(FerError, ValueError):
    """A request's argument is of the wrong type or arrived in a way the app does not accept."""


@dataclasses.dataclass(frozen=True)
class ImagePayload:
    """An image argument as Gradio received it, not yet read: a path in its upload cache or a URL, and the name of
    the file the user chose (None for pasted and webcam pictures)."""

    path: str | None = None
    url: str | None = None
    orig_name: str | None = None

    @property
    def name(self) -> str:
        """How messages call this image: the user's own file name, or "The picture" (messages start with it)."""
        return shown_name(self.orig_name) or "The picture"


def shown_name(orig_name) -> str | None:
    """A client-supplied file name made safe to repeat in a message: its last part, visible characters (no angle
    brackets, which a page might take for HTML), cut short."""
    if not isinstance(orig_name, str):
        return None
    base = orig_name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(char for char in base
                   if (unicodedata.category(char)[0] not in "CZ" or char == " ") and char not in "<>").strip()
    if len(base) > MAX_SHOWN_NAME:
        base = base[:MAX_SHOWN_NAME - 1] + "…"
    return base or None


def is_download(path) -> bool:
    """Whether an upload's `path` is a URL the server would have to fetch."""
    return isinstance(path, str) and path.lower().startswith(("http://", "https://"))


def refuse_download(move):
    """Wrap a Gradio component's `async_move_resource_to_block_cache` so that a URL is passed through unfetched
    (`read_image` then refuses it with a message) instead of being downloaded, at any size, before any check."""

    async def move_unless_url(url_or_file_path):
        if is_download(url_or_file_path):
            return url_or_file_path
        return await move(url_or_file_path)

    return move_unless_url


def read_image(payload: ImagePayload | ImageSource, max_bytes: int = MAX_IMAGE_BYTES) -> np.ndarray:
    """The picture in `payload` as RGB uint8 (H, W, 3), by fer.images.load_image; ImageError or InputError, naming
    the picture as the user knows it, for anything over the limits or unreadable. Anything else fer.images reads
    (a path, bytes, an array: a direct call from Python) is read as it reads it."""
    if not isinstance(payload, ImagePayload):
        return load_image(payload, max_bytes=max_bytes)
    name = payload.name
    url = payload.url if isinstance(payload.url, str) else ""
    if url.startswith("data:"):
        return load_image(decode_data_url(url, name, max_bytes), name=name, max_bytes=max_bytes)
    if is_download(payload.path) or (not payload.path and is_download(url)):
        raise InputError(f"{name} was sent as a web address; this app does not download images. Upload the file "
                         "instead (gradio_client: handle_file on a local copy).")
    if not payload.path:
        raise InputError(f"{name} arrived without its data; upload the file again.")
    return load_image(Path(payload.path), name=name, max_bytes=max_bytes)


def decode_data_url(url: str, name: str = "The picture", max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a base64 `data:` URL, measured before decoding; ImageError or InputError otherwise."""
    header, comma, text = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InputError(f"{name} is a data: URL without base64 data; send data:image/png;base64,… or upload "
                         "the file.")
    if len(text) > 4 * math.ceil(max_bytes / 3) + 4:  # a little slack for padding
        raise ImageError(too_large(name, len(text) * 3 // 4, max_bytes))
    try:
        data = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{name} is a data: URL whose base64 text is damaged; send the picture again, or upload "
                         f"it as a {FORMAT_NAMES} file.") from None
    return data


def require_bool(value, argument: str, default: bool = False) -> bool:
    """`value` if it is a JSON boolean (None means `default`); InputError for anything else, such as "yes" or 1."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(f"{argument} must be true or false; got {_describe(value)}.")
    return value


def require_text(value, argument: str, max_length: int = 1000) -> str:
    """`value` if it is a string of at most `max_length` characters (None means ""); InputError otherwise."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{argument} must be text; got {_describe(value)}.")
    if len(value) > max_length:
        raise InputError(f"{argument} is longer than {max_length} characters.")
    return value


def _describe(value) -> str:
    kind = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)
    shown = repr(value) if len(repr(value)) <= 20 else repr(value)[:19] + "…"
    return f"{kind} ({shown})"

