"""The app in a real browser: Playwright drives Debian's Chromium (`apt-get install chromium`) against the app served
in-process. Uploads a photo of a person and checks the page shows its box and four probabilities; streams the same
person through a fake webcam and checks the live tab labels them; uploads a video of her and checks the annotated
copy plays.

Playwright's own browser download is not used. A missing Chromium fails these tests (they must run in CI), it
does not skip them; CHROMIUM_PATH overrides /usr/bin/chromium.
"""

from __future__ import annotations

import io
import os
import re
import socket
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import app
import fixtures_video
from fer import annotate, labels

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium")
TIMEOUT_MS = 60_000  # a loaded CI machine may take a while for the first TensorFlow call


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(predictor):
    demo = app.build_demo(predictor)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(),
                           quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def fake_webcam(tmp_path_factory, astronaut) -> Path:
    """A Y4M video of the astronaut, which Chromium plays as its camera (--use-file-for-fake-video-capture)."""
    frame = np.full((480, 640, 3), 40, dtype=np.uint8)
    frame[:, 64:576] = cv2.resize(astronaut, (512, 480), interpolation=cv2.INTER_AREA)
    planes = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes()  # Y, then U and V at quarter size
    path = tmp_path_factory.mktemp("webcam") / "astronaut.y4m"
    with open(path, "wb") as stream:
        stream.write(b"YUV4MPEG2 W640 H480 F15:1 Ip A1:1 C420jpeg\n")
        for _ in range(15):
            stream.write(b"FRAME\n" + planes)
    return path


@pytest.fixture(scope="module")
def browser(fake_webcam):
    if not CHROMIUM.is_file():
        pytest.fail(f"No Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` (Debian), or set "
                    "CHROMIUM_PATH. The browser tests must run, so they fail rather than skip.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: `pip install -r requirements-dev.txt`.")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",  # grant the camera without a prompt
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={fake_webcam}",
        ])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1300, "height": 1400}, permissions=["camera"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served)
    yield page
    context.close()


def test_upload_shows_box_and_four_probabilities(page, predictor, astronaut, tmp_path, monkeypatch):
    labels_dir = tmp_path / "labels"
    monkeypatch.setenv("FER_LABELS_DIR", str(labels_dir))  # read by the server thread when a face is flagged
    photo_path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo_path)

    page.get_by_text("not a diagnosis").wait_for()  # the note on what the model can and cannot tell
    page.locator("input[type=file]").first.set_input_files(str(photo_path))
    panel = page.locator("#face-1")
    panel.wait_for(state="visible")
    text = panel.inner_text()
    for name in predictor.classes:
        assert re.search(rf"{name}\s+\d+%", text), f"no percentage for {name} in {text!r}"
    assert len(re.findall(r"\d+%", text)) == 4
    assert page.locator("#face-2").is_hidden()
    assert "1 face found" in page.locator("#predict-message").inner_text()

    # The annotated picture the page shows has the face's box drawn in its class colour.
    face = predictor.predict(astronaut)[0]
    source = page.locator("#predict-picture img").get_attribute("src")
    shown = np.asarray(Image.open(io.BytesIO(page.request.get(source).body())).convert("RGB"), dtype=int)
    assert shown.shape == astronaut.shape
    x, y, w, h = face["box"]
    edge = shown[y + h // 4: y + 3 * h // 4, x]  # the box's left edge; the picture is a JPEG, so allow some error
    assert np.abs(edge - annotate.colour_for(face["probabilities"])).max(axis=1).mean() < 40
    page.screenshot(path=str(tmp_path / "predict.png"), full_page=True)

    page.locator("#face-1").get_by_role("button", name="This is wrong").click()
    page.get_by_text("Sent for review").wait_for()
    assert len(labels.read_flagged(labels_dir).rows) == 1


def test_live_webcam_labels_the_face(page, predictor, tmp_path):
    page.get_by_role("tab", name="Live webcam").click()
    page.get_by_role("button", name="Click to Access Webcam").click()
    page.get_by_text("Record", exact=True).click()
    now = page.locator("#live-now")
    # The labels fill in once the session's series takes its first point, i.e. once a face is tracked.
    page.wait_for_function("document.querySelector('#live-now').innerText.match(/\\d+%/g)?.length === 4",
                           timeout=TIMEOUT_MS)
    text = now.inner_text()
    assert all(name in text for name in predictor.classes)
    page.locator("#live-frame img").wait_for(state="visible")  # the annotated frames come back
    page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
    page.get_by_text("Stop", exact=True).click()


def test_recording_plays_its_annotated_video_in_the_browser(page, astronaut, tmp_path):
    """The annotated copy (VP8 WebM) must play in Chromium, which has no H.264 or MPEG-4 Part 2 decoder of its own."""
    clip = fixtures_video.write_clip(tmp_path / "session.mp4", fixtures_video.moving_astronaut(astronaut, 10), fps=10)
    page.get_by_role("tab", name="Recording").click()
    page.get_by_text("Nothing is kept").wait_for()
    page.locator("#recording-upload input[type=file]").set_input_files(str(clip))
    page.get_by_role("button", name="Analyse").click()
    page.locator("#recording-video video").wait_for(state="attached")
    page.wait_for_function("(() => { const v = document.querySelector('#recording-video video');"
                           " return v && v.readyState >= 2 && v.videoWidth === 480 && v.duration > 0.9; })()",
                           timeout=TIMEOUT_MS)  # decoded: the browser knows its size and length and has a frame
    assert "1 face" in page.locator("#recording-message").inner_text()
    assert "happy %" in page.locator("#recording-summary").inner_text()
    assert "session_faces" in page.locator("#recording-csv").inner_text()  # the download link
    # The analysis's own folder is deleted once Gradio has copied its files; the page is served those copies.
    deadline = time.monotonic() + 30
    while any(name.startswith("fer-recording-") for name in os.listdir(tempfile.gettempdir())):
        assert time.monotonic() < deadline, "the analysis's working folder was not deleted"
        time.sleep(0.2)
    source = page.locator("#recording-video video").get_attribute("src")
    assert "fer-recording-" not in source
    served_video = page.request.get(source)
    assert served_video.ok and served_video.body().startswith(b"\x1aE\xdf\xa3")  # the WebM, still there
    page.screenshot(path=str(tmp_path / "recording.png"), full_page=True)


def sign_in_as_alice(page) -> None:
    page.get_by_role("tab", name="Review").click()
    page.get_by_label("Reviewer").fill("alice")
    page.get_by_label("Password").fill("wonderland")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as alice").wait_for()


def load_flagged_queue(page, count: int) -> None:
    page.get_by_label("Queue").click()
    page.get_by_role("option", name="Faces visitors marked as wrong").click()
    page.get_by_role("button", name="Load queue").click()
    page.get_by_text(f"Loaded {count} faces").wait_for()


def test_reviewer_signs_in_and_labels_a_face_with_one_key(page, predictor, tmp_path, monkeypatch):
    labels_dir = tmp_path / "labels"
    monkeypatch.setenv("FER_LABELS_DIR", str(labels_dir))  # read by the server thread at each call
    monkeypatch.setenv("FER_REVIEWERS", "alice:wonderland")
    for shade in (60, 160):
        face = np.full((48, 48), shade, np.uint8)
        labels.flag_for_review(face, predictor.predict_faces(face)[0], predictor.version, "test")

    sign_in_as_alice(page)
    load_flagged_queue(page, 2)
    assert "1 of 2" in page.locator("#review-progress").inner_text()

    page.locator("#review-about").click()  # focus outside any text field, as after reading the face
    page.keyboard.press("s")
    page.wait_for_function("document.querySelector('#review-progress').innerText.includes('2 of 2 · 1 labelled')")
    assert "Saved" in page.locator("#review-note").inner_text()
    rows = labels.read_corrections(labels.corrections_path(labels_dir)).rows
    assert [(row["reviewer"], row["corrected_label"]) for row in rows] == [("alice", "sad")]
    page.screenshot(path=str(tmp_path / "review.png"), full_page=True)


def test_a_reviewers_sign_in_survives_a_server_restart(browser, predictor, tmp_path, monkeypatch):
    labels_dir = tmp_path / "labels"
    monkeypatch.setenv("FER_LABELS_DIR", str(labels_dir))
    monkeypatch.setenv("FER_REVIEWERS", "alice:wonderland")
    monkeypatch.setenv("FER_SESSION_SECRET", "kept across restarts")
    labels.flag_for_review(np.full((48, 48), 60, np.uint8), [0.25] * 4, predictor.version, "test")
    port = _free_port()

    def start():
        demo = app.build_demo(predictor)
        app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
        return demo

    demo = start()
    context = browser.new_context(viewport={"width": 1300, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        sign_in_as_alice(page)
        demo.close()
        demo = start()  # the server restarts; the browser keeps its token

        page.reload()
        page.get_by_role("tab", name="Review").click()
        page.get_by_text("Signed in as alice").wait_for()
        load_flagged_queue(page, 1)
        page.locator("#review-about").click()
        page.keyboard.press("h")
        page.wait_for_function("document.querySelector('#review-note').innerText.includes('Saved')")
        rows = labels.read_corrections(labels.corrections_path(labels_dir)).rows
        assert [(row["reviewer"], row["corrected_label"]) for row in rows] == [("alice", "happy")]

        page.get_by_role("button", name="Sign out").click()
        page.get_by_text("Signed out.").wait_for()
        page.reload()  # signing out is kept too: the browser's copy of the token is gone
        page.get_by_role("tab", name="Review").click()
        page.get_by_role("button", name="Load queue").click()
        page.get_by_text("Sign in as a reviewer first").first.wait_for()
    finally:
        context.close()
        demo.close()
