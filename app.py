"""The Gradio app: the Predict tab (photos) and the Live tab (webcam), wired to the fer library.

    python app.py                     # http://127.0.0.1:7860 with the model models/current.json names

The same file runs as a Hugging Face Space. Settings come from the environment: FER_MODELS_DIR and FER_LABELS_DIR
(see fer/config.py), GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (Gradio's own). The server downloads nothing and
sends no usage analytics.

Handlers here only translate between components and library calls (fer.photo, fer.live), and turn library errors
into gr.Error. To add a tab, write a `_something_tab(...)` function and call it inside `gr.Tabs()` in `build_demo`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import gradio as gr
from gradio.data_classes import ImageData

import fer
from fer import annotate, config, live, photo
from fer.errors import FerError

MAX_FILE_SIZE = "15mb"  # uploads over this are refused by Gradio before they reach the handlers
CONCURRENCY = 2  # events run at once (a Space's free CPU has 2 cores; TensorFlow uses both for one batch)
STREAM_EVERY_S = 1 / 15  # the browser sends a webcam frame this often (target 15 frames/s)
STREAM_TIME_LIMIT_S = 300  # one visitor's stream then rejoins the queue, so others get a turn
DELETE_CACHE = (600, 1800)  # every 10 minutes, delete uploads older than 30 minutes from Gradio's temporary cache
CSS = ".face-panel { max-width: 360px; }"  # a lone face's panel should not stretch across the page

TITLE = "fer: facial expression recognition"
NOTE = f"""
# {TITLE}

**What this can and cannot tell you.** The model sorts the *visible facial expression* of each face into one of four
categories: happy, sad, neutral or surprise. It reads how a face looks (posed or not), not what a person feels, and it
has no other categories: an angry or frightened face still gets one of these four. It is often wrong, most of all
between sad and neutral. Its output is **not a diagnosis** of anything and must not be used to judge a person.

**What is stored.** Nothing you upload or stream is kept: photos pass through the server's temporary cache (deleted
within about half an hour) and webcam frames are only held in memory. A face is stored only if you press
**This is wrong** under it: its 48×48 grayscale crop and the model's probabilities go to the reviewers' queue.
Reviewers' corrections are saved when a reviewer saves one.
"""
NO_FACE_HELP = "Treat the whole image as one face (for close-up face crops such as FER2013 images)"
FLAGGED_NOTE = ("Face {number} was sent to the reviewers' queue. Stored: its 48×48 grayscale crop and the model's "
                "probabilities, nothing else from the photo.")
LIVE_NOTE = """
Press the webcam's record button to start. Faces are boxed with their smoothed top expression. The plot follows the
largest face over this session (one point a second; nothing is stored, and the session ends with the page). A
single moment means little: the study's early-warning use looks for **sad or neutral sustained over minutes**
versus stretches of happy or surprise.
"""


# ------------------------------------------------------------------------------------------------ start-up


def load_app_predictor():
    """The model the app serves, loaded once; a missing or broken model stops the app with what to do."""
    try:
        return fer.load_predictor()
    except FerError as error:
        raise SystemExit(
            f"The app cannot start: {error}\n"
            f"Models folder: {config.models_dir()} (FER_MODELS_DIR changes it). `python -m fer.models list` shows "
            "the models there and `python -m fer.models use NAME` picks the one to serve."
        ) from None


# ------------------------------------------------------------------------------------------------ handlers


def predict_photo(predictor, image: str | None,
                  whole_image: bool = False) -> tuple[list[dict], photo.PhotoResult | None]:
    """API `predict`: an image file -> every face's box and probabilities (Predictor.predict's list), and the state."""
    if image is None:
        return [], None
    try:
        result = photo.analyze_photo(predictor, image, whole_image=bool(whole_image))
    except FerError as error:
        raise gr.Error(str(error)) from None
    return result.faces, result


def show_photo(image: str | None, result: photo.PhotoResult | None) -> list:
    """The annotated picture, a sentence, and one probabilities panel (with its flag button) per shown face."""
    shown = result.shown if result is not None else []
    picture = None
    if image is not None and result is not None:
        try:
            picture = photo.annotate_photo(image, result)
        except FerError as error:
            raise gr.Error(str(error)) from None
    panels, labels, buttons = [], [], []
    for index in range(photo.MAX_SHOWN_FACES):
        face = shown[index] if index < len(shown) else None
        panels.append(gr.Column(visible=face is not None))
        labels.append(gr.Label(value=face["probabilities"] if face else None, label=_panel_title(index, result)))
        buttons.append(gr.Button("This is wrong", interactive=True))
    return [picture, photo.describe(result), *panels, *labels, *buttons, ""]


def _panel_title(index: int, result: photo.PhotoResult | None) -> str:
    if result is not None and result.whole_image:
        return "Whole image"
    return f"Face {index + 1}" + (" (largest)" if index == 0 else "")


def flag_photo_face(index: int, result: photo.PhotoResult | None) -> tuple[gr.Button, str]:
    """'This is wrong' under face `index`: send it to the reviewers' queue."""
    if result is None or index >= len(result.faces):
        raise gr.Error("Classify a photo first; there is no such face to send.")
    try:
        photo.flag_face(result, index)
    except FerError as error:
        raise gr.Error(f"Could not send face {index + 1} for review: {error}") from None
    return gr.Button("Sent for review", interactive=False), FLAGGED_NOTE.format(number=index + 1)


def live_frame(predictor, frame, session: live.LiveSession | None) -> tuple:
    """One webcam frame -> the annotated frame, the session, and (once a second) the labels and the plot."""
    if frame is None:
        return gr.skip(), session, gr.skip(), gr.skip(), gr.skip()
    session = session if session is not None else live.LiveSession()
    try:
        picture, sampled = live.process_frame(predictor, frame, session)
    except (FerError, ValueError) as error:
        raise gr.Error(str(error)) from None
    if not sampled:
        return picture, session, gr.skip(), gr.skip(), gr.skip()
    return (picture, session, live.current_probabilities(session), live.recent_share(session),
            live.series_table(session))


def reset_live() -> tuple:
    """'Start a new session': forget the tracked faces and the series."""
    return None, None, None, None, None


# ------------------------------------------------------------------------------------------------ layout


def _inline_image(**options) -> gr.Image:
    """An output gr.Image whose pictures go to the browser inline, as JPEG data URLs, never into Gradio's file cache.

    A plain gr.Image saves every picture it shows as a file: for webcam frames, ~15 files a second of a visitor's face
    on the server's disk. The override is per instance because Gradio writes a .pyi stub beside any source file that
    subclasses a component.
    """
    image = gr.Image(interactive=False, **options)
    image.postprocess = lambda value: None if value is None else ImageData(url=annotate.jpeg_data_url(value))
    return image


def _predict_tab(predictor) -> None:
    result_state = gr.State(None)
    with gr.Row():
        with gr.Column():
            image_in = gr.Image(label="Photo", type="filepath", image_mode=None,  # filepath: fer.images decodes it,
                                sources=["upload", "webcam", "clipboard"])       # EXIF rotation and alpha included
            whole_image = gr.Checkbox(label=NO_FACE_HELP, value=False)
            classify = gr.Button("Classify", variant="primary")
        with gr.Column():
            picture = gr.Image(label="Faces found", interactive=False, format="jpeg", elem_id="predict-picture",
                               buttons=["download", "fullscreen"])  # no "share": it would post the photo to the Hub
            message = gr.Markdown(elem_id="predict-message")
    panels, labels, buttons = [], [], []
    with gr.Row():
        for index in range(photo.MAX_SHOWN_FACES):
            with gr.Column(visible=False, min_width=200, elem_id=f"face-{index + 1}",
                           elem_classes="face-panel") as panel:
                labels.append(gr.Label(label=f"Face {index + 1}", num_top_classes=4))
                buttons.append(gr.Button("This is wrong", size="sm", variant="secondary"))
            panels.append(panel)
    flag_message = gr.Markdown()
    with gr.Accordion("The API's answer (JSON)", open=False):
        faces_json = gr.JSON(label="faces")

    gr.on(
        triggers=[image_in.input, whole_image.input, classify.click],
        fn=functools.partial(predict_photo, predictor),
        inputs=[image_in, whole_image],
        outputs=[faces_json, result_state],
        api_name="predict",
        api_description="An image -> a list of faces, largest first: {box: [x, y, w, h], probabilities: {class: p}}.",
    ).success(
        fn=show_photo,
        inputs=[image_in, result_state],
        outputs=[picture, message, *panels, *labels, *buttons, flag_message],
        api_visibility="private",
    )
    for index, button in enumerate(buttons):
        button.click(fn=functools.partial(flag_photo_face, index), inputs=[result_state],
                     outputs=[button, flag_message], api_visibility="private")


def _live_tab(predictor) -> None:
    session_state = gr.State(None)
    gr.Markdown(LIVE_NOTE)
    with gr.Row():
        webcam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy")
        frame_out = _inline_image(label="Faces", elem_id="live-frame", buttons=["fullscreen"])
    with gr.Row():
        now = gr.Label(label="Largest face now (smoothed)", num_top_classes=4, elem_id="live-now")
        share = gr.Label(label="Top expression over the last minute (share of time)", num_top_classes=4,
                         elem_id="live-share")
    # Starts as None: Gradio 6.31 draws no lines into a plot that started from an empty table.
    plot = gr.LinePlot(None, x="seconds", y="probability", color="expression", y_lim=[0, 1],
                       color_map=annotate.colour_map(predictor.classes), label="This session: largest face",
                       x_title="seconds since start", y_title="probability")
    reset = gr.Button("Start a new session")

    webcam.stream(
        fn=functools.partial(live_frame, predictor),
        inputs=[webcam, session_state],
        outputs=[frame_out, session_state, now, share, plot],
        stream_every=STREAM_EVERY_S,
        time_limit=STREAM_TIME_LIMIT_S,
        show_progress="hidden",
        api_visibility="private",
    )
    reset.click(fn=reset_live, outputs=[session_state, frame_out, now, share, plot], api_visibility="private")


def build_demo(predictor) -> gr.Blocks:
    """The whole UI around one loaded predictor, queued; launch it with `launch(demo)`."""
    # No usage analytics: visitors' use of a wellbeing tool is not ours to report to a third party.
    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE, analytics_enabled=False) as demo:
        gr.Markdown(NOTE, elem_id="note")
        gr.Markdown(f"Model: `{predictor.version}` · classes: {', '.join(predictor.classes)}")
        with gr.Tabs():
            with gr.Tab("Predict"):
                _predict_tab(predictor)
            with gr.Tab("Live webcam"):
                _live_tab(predictor)
    demo.queue(default_concurrency_limit=CONCURRENCY)
    return demo


def launch(demo: gr.Blocks, **overrides):
    """Launch with the app's limits; server name and port default to GRADIO_SERVER_NAME/PORT, else 127.0.0.1:7860."""
    return demo.launch(**{"max_file_size": MAX_FILE_SIZE, "css": CSS, **overrides})


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("fer").setLevel(logging.INFO)
    launch(build_demo(load_app_predictor()))
