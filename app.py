"""The Gradio app: Predict (photos), Live webcam, Review (reviewers correct labels) and Model tabs.

    python app.py                     # http://127.0.0.1:7860 with the model models/current.json names

The same file runs as a Hugging Face Space. Settings come from the environment: FER_MODELS_DIR and FER_LABELS_DIR
(see fer/config.py), FER_DATA_DIR (the labelled faces reviewers rank and fine-tuning trains on),
FER_UNLABELLED_DIR (an optional folder of unlabelled faces to review), reviewer accounts FER_REVIEWERS /
FER_REVIEWERS_FILE and FER_SESSION_SECRET (see fer/auth.py), GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (Gradio's
own). The server downloads nothing and sends no usage analytics.

Handlers here only translate between components and library calls (fer.photo, fer.live, fer.review, fer.train),
and turn library errors into gr.Error. Every handler that writes (labels, retraining) checks the reviewer's signed
session token on the server, whatever the page shows. What clients send is checked by fer.inputs before any work:
images (uploaded, pasted, webcam) within one byte and pixel limit, and arguments of the right type; request bodies
over MAX_REQUEST_BYTES are refused before they are read (fer.body_limit). An expected refusal (a bad image, a wrong
password, a call without a sign-in) logs one line, what and who and which endpoint, and no traceback. To add a tab,
write a `_something_tab(...)` function and call it inside `gr.Tabs()` in `build_demo`.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import logging
import os
import sys

import gradio as gr
from gradio.data_classes import ImageData

import fer
from fer import annotate, auth, config, inputs, labels, live, photo, recording, review, review_view, train, video
from fer.body_limit import BodyLimit
from fer.errors import FerError
from fer.serving import ServedModel

logger = logging.getLogger("fer.app")

MAX_FILE_SIZE = inputs.MAX_IMAGE_BYTES  # Gradio refuses larger uploads; fer.inputs holds data: URLs to the same
MAX_REQUEST_BYTES = inputs.MAX_REQUEST_BYTES  # any larger request body is refused before it is read
TOKEN_STORAGE_KEY = "fer-reviewer-token"  # where the browser keeps the reviewer's signed token (localStorage)
CONCURRENCY = 2  # events run at once (a Space's free CPU has 2 cores; TensorFlow uses both for one batch)
STREAM_EVERY_S = 1 / 15  # the browser sends a webcam frame this often (target 15 frames/s)
STREAM_TIME_LIMIT_S = 300  # one visitor's stream then rejoins the queue, so others get a turn
DELETE_CACHE = (600, 1800)  # every 10 minutes, delete uploads older than 30 minutes from Gradio's temporary cache
CSS = ".face-panel { max-width: 360px; }"  # a lone face's panel should not stretch across the page
QUEUE_LIMIT = 500  # faces per review queue: a sitting's work; load the queue again for more
QUEUE_CHOICES = [
    ("Training faces, likeliest mislabels first (sad and neutral)", "dataset"),
    ("Faces visitors marked as wrong", "flagged"),
    ("Unlabelled faces ($FER_UNLABELLED_DIR), sad-neutral toss-ups first", "unlabelled"),
]

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
# Recordings: Gradio refuses uploads over MAX_FILE_SIZE; fer.video refuses longer or larger videos before decoding.
RECORDING_LIMITS = video.VideoLimits(max_bytes=15 * 2**20, max_duration_s=10 * 60, max_frame_pixels=1920 * 1080)
RECORDING_SAMPLING = [("every frame, up to 10 a second", "default"), ("2 a second", "0.5s"), ("1 a second", "1s")]
RECORDING_NOTE = f"""
Upload a recorded session ({video.FORMATS}; {RECORDING_LIMITS.describe()}, so at most Full HD; use
`python -m fer.video` on your own computer for anything longer). Each face is tracked through the video and numbered;
you get the video with boxes and labels, each face's expressions over time, the share of time each expression was
the most likely one, and a CSV with one row per analysed frame and face.

**What is stored.** Nothing is kept: your video, its annotated copy and the CSV pass through the server's temporary
cache and are deleted within about half an hour, as photos are; the analysis's own working files are deleted as soon
as they are handed to you.
"""
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


def _client(request: gr.Request | None) -> str | None:
    """The caller's address as the server saw it (a proxy's, behind one); None for a direct Python call."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def refused(error, endpoint: str, request: gr.Request | None = None, who: str | None = None,
            level: int = logging.INFO) -> gr.Error:
    """An expected refusal, to raise: one log line (what, who, which endpoint) and the visitor's message, without
    the traceback Gradio prints for other errors (those are bugs)."""
    client = _client(request) or "an unknown caller"
    logger.log(level, "%s refused for %s: %s", endpoint, f"{who} ({client})" if who else client, error)
    return gr.Error(str(error), print_exception=False)


def predict_photo(predictor, image: inputs.ImagePayload | None, whole_image: bool = False,
                  request: gr.Request = None) -> tuple[list[dict], photo.PhotoResult | None]:
    """API `predict`: an image -> every face's box and probabilities (Predictor.predict's list), and the state."""
    try:
        whole_image = inputs.require_bool(whole_image, "whole_image")
        if image is None:
            return [], None
        result = photo.analyze_photo(predictor, inputs.read_image(image), whole_image=whole_image)
    except FerError as error:
        raise refused(error, "predict", request) from None
    return result.faces, result


def show_photo(image: inputs.ImagePayload | None, result: photo.PhotoResult | None,
               request: gr.Request = None) -> list:
    """The annotated picture, a sentence, and one probabilities panel (with its flag button) per shown face."""
    shown = result.shown if result is not None else []
    picture = None
    if image is not None and result is not None:
        try:
            picture = photo.annotate_photo(inputs.read_image(image), result)
        except FerError as error:
            raise refused(error, "predict", request) from None
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


def flag_photo_face(index: int, result: photo.PhotoResult | None, request: gr.Request = None) -> tuple[gr.Button, str]:
    """'This is wrong' under face `index`: send it to the reviewers' queue."""
    if result is None or index >= len(result.faces):
        raise refused("Classify a photo first; there is no such face to send.", "flag", request)
    try:
        photo.flag_face(result, index)
    except FerError as error:
        # The details (a full disk, the labels folder's path) are for the server's log, not for visitors.
        logger.warning("flag failed for %s: %s", _client(request) or "an unknown caller", error)
        raise gr.Error(f"Could not send face {index + 1} for review: the server could not store it. Please try "
                       "again later.", print_exception=False) from None
    return gr.Button("Sent for review", interactive=False), FLAGGED_NOTE.format(number=index + 1)


def live_frame(predictor, frame, session: live.LiveSession | None, request: gr.Request = None) -> tuple:
    """One webcam frame -> the annotated frame, the session, and (once a second) the labels and the plot."""
    if frame is None:
        return gr.skip(), session, gr.skip(), gr.skip(), gr.skip()
    session = session if session is not None else live.LiveSession()
    try:
        picture, sampled = live.process_frame(predictor, inputs.read_image(frame), session)
    except FerError as error:
        raise refused(error, "live", request) from None
    if not sampled:
        return picture, session, gr.skip(), gr.skip(), gr.skip()
    return (picture, session, live.current_probabilities(session), live.recent_share(session),
            live.series_table(session))


def reset_live() -> tuple:
    """'Start a new session': forget the tracked faces and the series."""
    return None, None, None, None, None


def analyze_recording(predictor, upload: str | None, sampling: str, progress=gr.Progress(),
                      request: gr.Request = None) -> tuple:
    """A video file -> the annotated video, the timeline figure, the per-face table, the CSV, a note, and the private
    folder holding the files (deleted by `forget_recording` once Gradio has copied them)."""
    if upload is None:
        raise refused("Upload a video first.", "recording", request)
    progress(0.0, desc="reading the video")
    try:
        every_s = None if sampling == "default" else video.parse_interval(sampling)
        result = recording.analyze_recording(
            predictor, upload, RECORDING_LIMITS, every_s,
            progress=lambda done, total: progress((done, total or None), desc="analysing frames", unit="frames"))
    except (FerError, ValueError) as error:
        raise refused(error, "recording", request) from None
    return str(result.annotated), result.figure, result.summary, str(result.csv), result.message, str(result.folder)


def forget_recording(folder: str | None) -> None:
    """Delete the analysis's own copies of its outputs (Gradio's cache has them now)."""
    recording.discard(folder)


def signed_in_reviewer(token, endpoint: str = "review", request: gr.Request | None = None) -> str:
    """The reviewer a session token belongs to; gr.Error for anyone else. Called by every handler that writes."""
    name = auth.verify_token(token)
    if name is None:
        message = "Sign in as a reviewer first (Review tab)." if auth.reviewers_configured() else auth.SETUP_HELP
        raise refused(message, endpoint, request, level=logging.WARNING)
    return name


def sign_in(name, password, request: gr.Request = None) -> tuple:
    """Check a reviewer's name and password (with a back-off after failures); the browser keeps the signed token."""
    try:
        name = inputs.require_text(name, "name", max_length=1000)
        token = auth.sign_in(name, inputs.require_text(password, "password", max_length=1000), _client(request))
    except FerError as error:
        raise refused(error, "review_sign_in", request, who=repr(name[:80]) if isinstance(name, str) else None,
                      level=logging.WARNING) from None
    return token, describe_sign_in(token), ""


def describe_sign_in(token) -> str:
    """Who the browser's token signs in, and until when; "" for none (also what the page shows after a reload)."""
    name, expiry = auth.verify_token(token), auth.token_expiry(token)
    if name is None or expiry is None:
        return ""
    until = datetime.datetime.fromtimestamp(expiry, datetime.timezone.utc).strftime("%H:%M UTC")
    return f"Signed in as **{name}** (until {until})."


def sign_out(token=None) -> tuple:
    auth.revoke_token(token)
    return auth.SIGNED_OUT, None, "Signed out.", *show_review_item(None, "")


def show_review_item(session: review.ReviewSession | None, note: str) -> tuple:
    """The face (enlarged), what is known about it, the model's probabilities, progress, and a note."""
    if session is None:
        return None, "", None, "", note
    item = session.current
    if item is None:
        return None, "**This queue is done.** Load it again for more faces.", None, session.describe_progress(), note
    return (review_view.enlarge(item.face), review_view.describe_item(item), item.probabilities,
            session.describe_progress(), note)


def load_review_queue(served, source, token=None, progress=gr.Progress(), request: gr.Request = None) -> tuple:
    """Build the chosen queue for the signed-in reviewer, leaving out faces they have already labelled."""
    reviewer = signed_in_reviewer(token, "review_load", request)
    folder = None
    try:
        source = inputs.require_text(source, "queue")
        if source == "unlabelled":
            folder = os.environ.get("FER_UNLABELLED_DIR")
            if not folder:
                raise inputs.InputError("No unlabelled faces configured: set FER_UNLABELLED_DIR to a folder of face "
                                        "images and restart the app.")
        progress(0.0, desc="ranking faces (the first time for a model takes up to a minute)")
        items = review.build_queue(source, predictor=served, reviewer=reviewer, folder=folder, limit=QUEUE_LIMIT,
                                   votes=review.load_votes(predictor=served) if source == "dataset" else None)
    except (FerError, ValueError) as error:  # ValueError: an unknown queue
        raise refused(error, "review_load", request, who=reviewer) from None
    session = review.ReviewSession(items, reviewer)
    note = f"Loaded {len(items)} faces." if items else "Nothing to review in this queue."
    return session, *show_review_item(session, note)


def review_action(action: str, token=None, session: review.ReviewSession | None = None,
                  request: gr.Request = None) -> tuple:
    """A label, skip, back or undo on the current face of the reviewer's queue."""
    endpoint = f"review_{action}"
    reviewer = signed_in_reviewer(token, endpoint, request)
    if session is None:
        raise refused("Load a queue first.", endpoint, request, who=reviewer)
    if session.reviewer != labels.clean_reviewer(reviewer):
        raise refused("This queue was loaded under another sign-in; load it again.", endpoint, request, who=reviewer)
    try:
        if action in review_view.LABEL_ACTIONS:
            note = review_view.describe_row(session.record(action), "Saved")
        elif action == "skip":
            session.skip()
            note = "Skipped."
        elif action == "back":
            session.back()
            note = "Back one face."
        elif action == "undo":
            note = review_view.describe_row(session.undo(), "Undid your label of")
        else:
            raise gr.Error(f"Unknown review action {action!r}.")
    except FerError as error:
        raise refused(error, endpoint, request, who=reviewer) from None
    return session, *show_review_item(session, note)


def show_agreement(token=None, request: gr.Request = None) -> str:
    reviewer = signed_in_reviewer(token, "agreement", request)
    try:
        return review_view.format_agreement(labels.summarize())
    except FerError as error:
        raise refused(error, "agreement", request, who=reviewer) from None


def describe_served(served) -> str:
    return f"Model: `{served.version}` · classes: {', '.join(served.classes)}"


def show_model() -> tuple:
    """The served model's summary, per-class scores, confusion matrix, and the history of models."""
    try:
        return review_view.model_overview()
    except FerError as error:  # shown in the tab rather than raised: this also runs on every page load
        return f"Cannot describe the model: {error}", None, None, None


def fine_tune(served, token=None, progress=gr.Progress(), request: gr.Request = None) -> tuple:
    """Fine-tune the current model on the corrections, gate it, and serve it at once if it passes."""
    reviewer = signed_in_reviewer(token, "fine_tune", request)
    corrections = labels.corrections_path()
    data_root = review.default_data_dir().parent
    if not corrections.is_file():
        raise refused(f"No corrections yet ({corrections}); label some faces on the Review tab first.", "fine_tune",
                      request, who=reviewer)
    if not data_root.is_dir():
        raise refused(f"Fine-tuning needs the labelled training faces at {data_root}; set FER_DATA_DIR.",
                      "fine_tune", request, who=reviewer)
    try:
        result = train.retrain_from_corrections(corrections, data_root,
                                                progress=lambda fraction, message: progress(fraction, desc=message))
        if result.promoted:
            served.reload()
    except FerError as error:
        raise refused(error, "fine_tune", request, who=reviewer) from None
    verdict = "Promoted: the app now serves it." if result.promoted else f"Rejected: {result.reason}."
    return f"**{verdict}**\n\n```\n{result.format()}\n```", *show_model()


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


def _image_input(**options) -> gr.Image:
    """An input gr.Image that hands the handler an unread fer.inputs.ImagePayload, for fer.inputs to check and decode.

    Gradio's own preprocessing decodes every picture with PIL before the handler runs, with its own limits and
    messages (a pasted 16-bit PNG came out washed out, a bad webcam frame gave an empty error), and would download
    an image sent as a URL. Here an upload, a pasted or webcam data: URL and an API call all reach fer.inputs, which
    holds them to one byte limit and decodes them with fer.images.
    """
    image = gr.Image(type="filepath", image_mode=None, **options)
    image.preprocess = lambda payload: None if payload is None else inputs.ImagePayload(
        path=payload.path, url=payload.url, orig_name=payload.orig_name)
    image.async_move_resource_to_block_cache = inputs.refuse_download(image.async_move_resource_to_block_cache)
    return image


def _as_sent(component):
    """Hand the handler the value as the client sent it: Gradio would turn {"a": 1} into the text "{'a': 1}" or
    refuse an unknown choice with a traceback; fer.inputs refuses a value of the wrong type with a clear message."""
    component.preprocess = lambda payload: payload
    return component


def _bind(handler, *arguments):
    """functools.partial(handler, *arguments) as a plain function: Gradio finds gr.Request parameters by their type
    hints, which it cannot read through a partial."""

    @functools.wraps(handler)
    def bound(*args, **kwargs):
        return handler(*arguments, *args, **kwargs)

    bound.__signature__ = inspect.signature(functools.partial(handler, *arguments))
    return bound


def _predict_tab(predictor) -> None:
    result_state = gr.State(None)
    with gr.Row():
        with gr.Column():
            image_in = _image_input(label="Photo", sources=["upload", "webcam", "clipboard"])
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
        fn=_bind(predict_photo, predictor),
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
        button.click(fn=_bind(flag_photo_face, index), inputs=[result_state],
                     outputs=[button, flag_message], api_visibility="private")


def _live_tab(predictor) -> None:
    session_state = gr.State(None)
    gr.Markdown(LIVE_NOTE)
    with gr.Row():
        webcam = _image_input(label="Webcam", sources=["webcam"], streaming=True)
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
        fn=_bind(live_frame, predictor),
        inputs=[webcam, session_state],
        outputs=[frame_out, session_state, now, share, plot],
        stream_every=STREAM_EVERY_S,
        time_limit=STREAM_TIME_LIMIT_S,
        show_progress="hidden",
        api_visibility="private",
    )
    reset.click(fn=reset_live, outputs=[session_state, frame_out, now, share, plot], api_visibility="private")


def _recording_tab(predictor) -> None:
    # Holds the private folder of the latest result between the analysis and its clean-up; also cleaned when the
    # visitor's session ends, should the clean-up event never run.
    folder = gr.State(None, delete_callback=recording.discard)
    gr.Markdown(RECORDING_NOTE)
    with gr.Row():
        with gr.Column():
            # A file box, not gr.Video: browsers preview few codecs (Chromium neither MPEG-4 Part 2 nor H.264), and
            # gr.Video reports every other upload as "not playable" although fer.video reads it.
            upload = gr.File(label="Recording", file_types=list(video.SUFFIXES), type="filepath",
                             elem_id="recording-upload")
            sampling = gr.Radio(RECORDING_SAMPLING, value="default", label="Frames analysed")
            start = gr.Button("Analyse", variant="primary")
        with gr.Column():
            annotated = gr.Video(label="Faces found", interactive=False, buttons=["download"],  # no share to the Hub
                                 elem_id="recording-video")
            message = gr.Markdown(elem_id="recording-message")
    timeline = gr.Plot(label="Expressions over time, per face", format="png")
    summary = gr.Dataframe(label="Per face: share of time each expression was the most likely (%)",
                           interactive=False, elem_id="recording-summary")
    table = gr.File(label="CSV: one row per analysed frame and face", interactive=False, elem_id="recording-csv")
    start.click(
        fn=_bind(analyze_recording, predictor),
        inputs=[upload, sampling],
        outputs=[annotated, timeline, summary, table, message, folder],
        api_visibility="private",
        concurrency_id="recording",
        concurrency_limit=1,  # one video at a time: it keeps a core busy for minutes
    ).then(fn=forget_recording, inputs=[folder], outputs=[folder], api_visibility="private")


def _review_tab(served, token: gr.BrowserState) -> gr.Markdown:
    session = gr.State(None)
    if not auth.reviewers_configured():
        gr.Markdown(auth.SETUP_HELP, elem_id="review-setup")
    with gr.Row():
        name = _as_sent(gr.Textbox(label="Reviewer", max_length=labels.MAX_REVIEWER_LENGTH, scale=2))
        password = _as_sent(gr.Textbox(label="Password", type="password", max_length=256, scale=2))
        with gr.Column(scale=1, min_width=120):
            sign_in_button = gr.Button("Sign in", variant="primary")
            sign_out_button = gr.Button("Sign out", size="sm")
    who = gr.Markdown(elem_id="review-who")
    with gr.Row():
        source = _as_sent(gr.Dropdown(QUEUE_CHOICES, value="dataset", label="Queue", scale=3))
        load = gr.Button("Load queue", scale=1)
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            face = gr.Image(label="Face", interactive=False, height=review_view.FACE_DISPLAY_SIZE + 40,
                            format="png", elem_id="review-face", buttons=["fullscreen"])  # no share to the Hub
        with gr.Column(scale=2):
            about = gr.Markdown(elem_id="review-about")
            scores = gr.Label(label="Model's probabilities", num_top_classes=4)
            position = gr.Markdown(elem_id="review-progress")
    with gr.Row():
        buttons = {action: gr.Button(f"{text} ({key.upper()})", elem_id=review_view.button_id(action),
                                     variant="primary" if action in review_view.LABEL_ACTIONS else "secondary")
                   for action, (key, text) in review_view.SHORTCUTS.items()}
    gr.Markdown(review_view.shortcut_help())
    note = gr.Markdown(elem_id="review-note")
    with gr.Accordion("Reviewers' agreement", open=False):
        agreement = gr.Markdown()
        refresh = gr.Button("Refresh", size="sm")

    view = [face, about, scores, position, note]
    sign_in_button.click(sign_in, [name, password], [token, who, password], api_name="review_sign_in",
                         api_visibility="undocumented")
    sign_out_button.click(sign_out, [token], [token, session, who, *view], api_visibility="private")
    load.click(_bind(load_review_queue, served), [source, token], [session, *view],
               api_name="review_load", api_visibility="undocumented", concurrency_id="review-load",
               concurrency_limit=1)
    for action, button in buttons.items():
        button.click(_bind(review_action, action), [token, session], [session, *view],
                     api_name=f"review_{action}", api_visibility="undocumented", show_progress="minimal")
    refresh.click(show_agreement, [token], [agreement], api_visibility="private")
    return who


def _model_tab(served, token: gr.BrowserState) -> list:
    gr.Markdown("Signed-in reviewers can fine-tune the served model on the reviewers' corrections here (sign in on "
                "the Review tab). The new model is compared with the current one on the validation faces and served "
                "only if it is not worse on macro-F1, sad or neutral (`fer.gate`).")
    summary = gr.Markdown(elem_id="model-summary")
    with gr.Row():
        per_class = gr.Dataframe(label="Validation scores per class", interactive=False)
        confusion = gr.Dataframe(label="Confusion matrix (rows: true, columns: predicted)", interactive=False)
    history = gr.Dataframe(label="Models (newest first)", interactive=False)
    with gr.Row():
        refresh = gr.Button("Refresh")
        tune = gr.Button("Fine-tune on the corrections (a few minutes)", variant="primary")
    verdict = gr.Markdown(elem_id="model-verdict")
    outputs = [summary, per_class, confusion, history]
    refresh.click(show_model, None, outputs, api_visibility="private")
    tune.click(_bind(fine_tune, served), [token], [verdict, *outputs],
               api_visibility="private", concurrency_id="fine-tune", concurrency_limit=1)
    return outputs


def build_demo(predictor) -> gr.Blocks:
    """The whole UI around one loaded predictor, queued; launch it with `launch(demo)`.

    The predictor is wrapped in a ServedModel, so a fine-tune promoted from the Model tab is served at once.
    """
    served = predictor if isinstance(predictor, ServedModel) else ServedModel(predictor)
    # No usage analytics: visitors' use of a wellbeing tool is not ours to report to a third party.
    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE, analytics_enabled=False) as demo:
        gr.Markdown(NOTE, elem_id="note")
        model_line = gr.Markdown(describe_served(served), elem_id="model-line")
        # The reviewer's signed session token: the browser keeps it (localStorage) and sends it with each event; every
        # handler that writes verifies its signature and expiry, so with FER_SESSION_SECRET set it survives a restart.
        token = gr.BrowserState(None, storage_key=TOKEN_STORAGE_KEY, secret=auth.storage_secret())
        with gr.Tabs():
            with gr.Tab("Predict"):
                _predict_tab(served)
            with gr.Tab("Live webcam"):
                _live_tab(served)
            with gr.Tab("Recording"):
                _recording_tab(served)
            with gr.Tab("Review"):
                who = _review_tab(served, token)
            with gr.Tab("Model"):
                model_outputs = _model_tab(served, token)
        demo.load(show_model, None, model_outputs, api_visibility="private")
        demo.load(functools.partial(describe_served, served), None, model_line, api_visibility="private")
        demo.load(describe_sign_in, [token], [who], api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY)
    demo.validate_inputs = _missing_arguments_refused(demo.validate_inputs)
    return demo


def _missing_arguments_refused(validate):
    """Gradio's check that a call brought all its arguments, refusing a short call (an API client that left out the
    reviewer's token, say) in one log line rather than a traceback."""

    def validate_inputs(block_fn, values):
        try:
            validate(block_fn, values)
        except ValueError:
            raise refused("This call is missing arguments: pass every one the endpoint takes (a reviewer's calls "
                          "start with the token that /review_sign_in returned).", block_fn.api_name or block_fn.name,
                          level=logging.WARNING) from None

    return validate_inputs


def check_reviewer_accounts() -> None:
    """Refuse to start when two reviewer accounts would be one reviewer in the labels (fer.auth)."""
    try:
        auth.check_accounts()
    except FerError as error:
        raise SystemExit(f"The app cannot start: {error}") from None


def launch(demo: gr.Blocks, **overrides):
    """Launch with the app's limits; server name and port default to GRADIO_SERVER_NAME/PORT, else 127.0.0.1:7860."""
    return demo.launch(**{"max_file_size": MAX_FILE_SIZE, "css": CSS, "js": review_view.shortcut_script(),
                          "app_kwargs": {"middleware": [BodyLimit.middleware(MAX_REQUEST_BYTES, inputs.REQUEST_TOO_LARGE)]}, **overrides})


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("fer").setLevel(logging.INFO)
    check_reviewer_accounts()
    launch(build_demo(load_app_predictor()))
