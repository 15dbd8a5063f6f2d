"""What an outside probe of the running app found (issue 36), each checked against the app served in-process and
called as an outside caller would: through gradio_client, or raw HTTP where gradio_client would not send it.

Faces beyond 20, the upload limit's side doors, sign-ins across a restart, account names that collide, pasted images
decoded differently, unlimited password guesses, tracebacks in the log, server paths in messages, coerced arguments.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import json
import logging
import socket
import tempfile

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

import app
from fer import auth, faces, inputs, labels, photo, throttle

from test_app_review import environment  # noqa: F401 (autouse: labels in tmp_path, alice and bob, a fixed secret)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(predictor, port: int | None = None):
    """The app launched in this process, as `python app.py` launches it; yields its URL."""
    demo = app.build_demo(predictor)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1",
                           server_port=port or _free_port(), quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def url(predictor):
    with serving(predictor) as served:
        yield served


@pytest.fixture
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def call(url: str, api_name: str, *data) -> tuple[str, object]:
    """One call through Gradio's plain HTTP API, as curl would make it: ("complete", outputs) or ("error", message)."""
    started = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": list(data)}, timeout=120)
    started.raise_for_status()
    stream = httpx.get(f"{url}gradio_api/call/{api_name}/{started.json()['event_id']}", timeout=120).text
    event = stream.split("event: ", 1)[1].split("\n", 1)[0]
    payload = json.loads(stream.split("data: ", 1)[1].split("\n", 1)[0])
    return event, payload["error"] if event == "error" else payload


def data_url(data: bytes, mime: str = "image/png") -> dict:
    return {"url": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"}


def png(image: np.ndarray | Image.Image) -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def class_photo(astronaut, tmp_path_factory) -> str:
    """A class photo of 30 faces: the astronaut's head tiled 6 x 5, 1080 x 900 pixels."""
    head = cv2.resize(astronaut[30:230, 120:320], (180, 180), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("class") / "class.png"
    Image.fromarray(np.tile(head, (5, 6, 1))).save(path)
    return str(path)


# ------------------------------------------------------------------------------------------------ 1. every face


def test_a_class_photo_of_30_faces_gets_30_boxes_and_says_so(client, class_photo, predictor):
    from gradio_client import handle_file

    found = client.predict(handle_file(class_photo), api_name="/predict")
    assert len(found) == 30
    assert len({tuple(face["box"]) for face in found}) == 30
    _, result = app.predict_photo(predictor, class_photo)
    assert photo.describe(result).startswith("30 faces found")


def test_a_photo_at_the_face_limit_says_only_the_largest_were_classified(client, class_photo, predictor, monkeypatch):
    from gradio_client import handle_file

    monkeypatch.setattr(faces, "MAX_FACES", 12)
    assert len(client.predict(handle_file(class_photo), api_name="/predict")) == 12
    _, result = app.predict_photo(predictor, class_photo)
    assert "Only the 12 largest faces were classified" in photo.describe(result)


# ------------------------------------------------------------------------------------------------ 2. one byte limit


def test_a_data_url_over_the_image_limit_is_refused_like_an_upload(url, client, tmp_path):
    from gradio_client import handle_file

    oversized = b"\x89PNG\r\n\x1a\n" + bytes(inputs.MAX_IMAGE_BYTES)  # a little over the limit once encoded
    event, message = call(url, "predict", data_url(oversized), False)
    assert event == "error" and "larger than the 15 MB limit" in message
    (tmp_path / "big.png").write_bytes(oversized)
    with pytest.raises(Exception):  # the same bytes uploaded: Gradio's upload route refuses them
        client.predict(handle_file(str(tmp_path / "big.png")), api_name="/predict")


def test_a_body_over_the_request_limit_is_refused_before_it_is_read(url):
    host, port = url.removeprefix("http://").strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(b"POST /gradio_api/call/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 104857600\r\n\r\n" + b"x" * 1024)  # claims 100 MB, sends 1 kB
        response = http.client.HTTPResponse(connection)
        response.begin()  # the status line and headers, however many packets they come in
        reply = response.read().decode()  # then the body, as long as Content-Length says (one recv may stop short)
    assert (response.version, response.status) == (11, 413) and "at most 15 MB" in reply

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(30):
            yield bytes(2**20)

    response = httpx.post(f"{url}gradio_api/call/predict", content=chunks(), timeout=120,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert call(url, "predict", None, False) == ("complete", [[], None])  # still serving


def test_an_image_url_is_not_downloaded(url):
    event, message = call(url, "predict", {"path": "https://example.com/face.png", "meta": {"_type": "gradio.FileData"}},
                          False)
    assert event == "error" and "does not download images" in message


def test_the_pixel_limit_holds_for_a_data_url(url):
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # 400 megapixels in a few kB
    event, message = call(url, "predict", data_url(bomb.getvalue()), False)
    assert event == "error" and "pixels" in message


# ------------------------------------------------------------------------------------------------ 3. restarts


def test_a_sign_in_survives_a_restart_with_the_same_secret(predictor, environment, monkeypatch):
    from gradio_client import Client

    labels.flag_for_review(np.full((48, 48), 90, np.uint8), [0.25] * 4, predictor.version, "test")
    with serving(predictor) as first:
        token, who, _ = Client(first, verbose=False).predict("alice", "wonderland", api_name="/review_sign_in")
    assert "Signed in as **alice**" in who
    with serving(predictor) as restarted:
        reviewer = Client(restarted, verbose=False)
        reviewer.predict("flagged", token, api_name="/review_load")
        reviewer.predict(token, api_name="/review_sad")
        monkeypatch.setenv("FER_SESSION_SECRET", "another secret")
        with pytest.raises(Exception, match="Sign in"):
            reviewer.predict(token, api_name="/review_neutral")
    rows = labels.read_corrections(labels.corrections_path(environment)).rows
    assert [(row["reviewer"], row["corrected_label"]) for row in rows] == [("alice", "sad")]


# ------------------------------------------------------------------------------------------------ 4. one name, one account


@pytest.mark.parametrize("first, second", [("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"), ("Ana", "ana"),
                                           ("ana", "a\u200bna"), ("ana", "\u202eana")])
def test_accounts_whose_names_clean_alike_are_refused(client, tmp_path, monkeypatch, first, second):
    accounts = tmp_path / "reviewers"
    accounts.write_text(f"{first}:one\n{second}:two\n", encoding="utf-8")
    monkeypatch.setenv("FER_REVIEWERS_FILE", str(accounts))
    monkeypatch.setenv("FER_REVIEWERS", "")
    for name, password in ((first, "one"), (second, "two")):
        with pytest.raises(Exception, match="same name once cleaned"):
            client.predict(name, password, api_name="/review_sign_in")
    with pytest.raises(SystemExit) as stopped:
        app.check_reviewer_accounts()
    assert "line 1" in str(stopped.value) and "line 2" in str(stopped.value)


def test_undo_acts_only_on_the_reviewers_own_labels(client, predictor, environment, url):
    from gradio_client import Client

    labels.flag_for_review(np.full((48, 48), 90, np.uint8), [0.25] * 4, predictor.version, "test")
    alice, _, _ = client.predict("alice", "wonderland", api_name="/review_sign_in")
    client.predict("flagged", alice, api_name="/review_load")
    client.predict(alice, api_name="/review_sad")
    bob_client = Client(url, verbose=False)
    bob, _, _ = bob_client.predict("bob", "builder", api_name="/review_sign_in")
    bob_client.predict("flagged", bob, api_name="/review_load")
    *_, note = bob_client.predict(bob, api_name="/review_undo")
    assert note.startswith("Nothing to undo")
    resolved = labels.resolve_labels(labels.read_corrections(labels.corrections_path(environment)).rows)
    assert list(resolved.values()) == ["sad"]


def test_invisible_characters_are_removed_from_reviewer_names(client, predictor, environment, monkeypatch):
    monkeypatch.setenv("FER_REVIEWERS", "\u202eeve\u200d:pw")
    labels.flag_for_review(np.full((48, 48), 90, np.uint8), [0.25] * 4, predictor.version, "test")
    token, who, _ = client.predict("eve", "pw", api_name="/review_sign_in")
    client.predict("flagged", token, api_name="/review_load")
    client.predict(token, api_name="/review_happy")
    assert [row["reviewer"] for row in labels.read_corrections(labels.corrections_path(environment)).rows] == ["eve"]


# ------------------------------------------------------------------------------------------------ 5. one decoder


def test_a_pasted_16_bit_png_gives_the_same_answer_as_its_upload(url, client, astronaut, tmp_path):
    from gradio_client import handle_file

    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    path = tmp_path / "gray16.png"
    Image.fromarray(gray, mode="I;16").save(path)
    uploaded = client.predict(handle_file(str(path)), api_name="/predict")
    assert len(uploaded) == 1
    event, (pasted, _) = call(url, "predict", data_url(path.read_bytes()), False)
    assert event == "complete" and pasted == uploaded


@pytest.mark.parametrize("payload, words", [
    (data_url(b"hello, world", "text/plain"), "The picture is not an image this app can read (it looks like a text"),
    ({"url": "data:image/png;base64,%%%%"}, "base64 text is damaged"),
    ({"url": "data:image/png,rawbytes"}, "without base64 data"),
    (data_url(b""), "is empty"),
])
def test_bad_pasted_pictures_get_the_upload_messages(url, payload, words):
    event, message = call(url, "predict", payload, False)
    assert event == "error" and words in message


def test_a_bad_webcam_frame_gets_a_clear_message(predictor):
    with pytest.raises(app.gr.Error, match="damaged"):
        app.live_frame(predictor, inputs.ImagePayload(url="data:image/jpeg;base64,!!!"), None)
    frame = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(frame, format="JPEG")
    cut = data_url(frame.getvalue()[:len(frame.getvalue()) // 2], "image/jpeg")["url"]  # a frame cut off in transit
    with pytest.raises(app.gr.Error, match="The picture could not be decoded .*truncated"):
        app.live_frame(predictor, inputs.ImagePayload(url=cut), None)


# ------------------------------------------------------------------------------------------------ 6. password guesses


def test_wrong_passwords_back_off_per_account_and_per_client(client, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(throttle, "_now", lambda: now[0])
    for _ in range(throttle.FREE_FAILURES):
        with pytest.raises(Exception, match="Wrong reviewer name or password"):
            client.predict("alice", "guess", api_name="/review_sign_in")
    with pytest.raises(Exception, match="Too many failed sign-ins"):  # even the right password must wait
        client.predict("alice", "wonderland", api_name="/review_sign_in")
    with pytest.raises(Exception, match="Too many failed sign-ins"):  # and so must this client, for any account
        client.predict("bob", "builder", api_name="/review_sign_in")
    now[0] += throttle.FIRST_DELAY_S + 0.1
    with pytest.raises(Exception, match="Wrong reviewer name or password"):
        client.predict("alice", "guess again", api_name="/review_sign_in")
    with pytest.raises(Exception, match="try again in 4 s"):  # the delay doubles
        client.predict("alice", "wonderland", api_name="/review_sign_in")
    now[0] += 2 * throttle.FIRST_DELAY_S + 0.1
    token, who, _ = client.predict("alice", "wonderland", api_name="/review_sign_in")
    assert "alice" in who and auth.verify_token(token) == "alice"


def test_a_salted_slow_hash_signs_in_through_the_app(client, tmp_path, monkeypatch):
    accounts = tmp_path / "reviewers"
    accounts.write_text(f"carol:{auth.hash_password('by the sea')}\ndan:{hashlib.sha256(b'legacy').hexdigest()}\n")
    monkeypatch.setenv("FER_REVIEWERS_FILE", str(accounts))
    assert auth.hash_password("by the sea").startswith("scrypt$")
    for name, password in (("carol", "by the sea"), ("dan", "legacy")):
        _, who, _ = client.predict(name, password, api_name="/review_sign_in")
        assert name in who
    with pytest.raises(Exception, match="Wrong reviewer name or password"):
        client.predict("carol", "by the see", api_name="/review_sign_in")


# ------------------------------------------------------------------------------------------------ 7-9. logs, paths, types


def test_expected_errors_log_one_line_each_and_no_traceback(url, client, capfd, caplog, tmp_path):
    from gradio_client import handle_file

    text = tmp_path / "text.jpg"
    text.write_text("not a picture")
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="fer.app"):
        for arguments, api_name in [(("alice", "guess"), "/review_sign_in"), ((handle_file(str(text)),), "/predict"),
                                    ((None,), "/review_sad"), (("flagged", "forged.token.x.y"), "/review_load")]:
            with pytest.raises(Exception):
                client.predict(*arguments, api_name=api_name)
    lines = [record.getMessage() for record in caplog.records if record.name == "fer.app"]
    assert len(lines) == 4 and all("127.0.0.1" in line for line in lines)
    for endpoint, line in zip(("review_sign_in", "predict", "review_sad", "review_load"), lines):
        assert line.startswith(f"{endpoint} refused for") and "\n" not in line
    assert "'alice'" in lines[0] and "text.jpg" in lines[1]
    assert "Traceback" not in capfd.readouterr().err


def test_error_messages_name_the_users_file_not_the_servers_path(client, tmp_path):
    from gradio_client import handle_file

    text = tmp_path / "text.jpg"
    text.write_text("not a picture")
    with pytest.raises(Exception) as refused:
        client.predict(handle_file(str(text)), api_name="/predict")
    message = str(refused.value)
    assert "text.jpg is not an image this app can read" in message
    assert tempfile.gettempdir() not in message and "gradio" not in message.lower()


@pytest.mark.parametrize("value", ["yes", {"a": 1}, 1, [True]])
def test_a_checkbox_argument_must_be_a_boolean(client, astronaut, tmp_path, value):
    from gradio_client import handle_file

    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    with pytest.raises(Exception, match="whole_image must be true or false"):
        client.predict(handle_file(str(path)), value, api_name="/predict")
    assert client.predict(handle_file(str(path)), True, api_name="/predict")[0]["box"] == [0, 0, 512, 512]


def test_text_arguments_must_be_text(client):
    with pytest.raises(Exception, match="name must be text"):
        client.predict({"a": 1}, "wonderland", api_name="/review_sign_in")
