"""The app: handlers called directly, the app served in-process and called through gradio_client, the live tracker."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import tempfile
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import app
import fixtures_video
from fer import annotate, labels, live, photo, recording
from fer.config import CLASS_NAMES, PreprocessConfig
from fer.errors import FerError
from fer.preprocess import face_sha256, preprocess_face

ASTRONAUT_BOX = (177, 67, 93, 93)  # where the Haar detector finds the astronaut's face in the 512x512 photo


@pytest.fixture(autouse=True)
def labels_dir(tmp_path, monkeypatch):
    """Flags land in a temporary folder, never in the project's labels/."""
    folder = tmp_path / "labels"
    monkeypatch.setenv("FER_LABELS_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut) -> dict:
    """Photo files of the kinds visitors upload, each holding the astronaut's face (except `blank`)."""
    folder = tmp_path_factory.mktemp("photos")
    paths = {}

    def save(name: str, image: Image.Image, **options) -> None:
        paths[name] = str(folder / name)
        image.save(paths[name], **options)

    save("astronaut.png", Image.fromarray(astronaut))
    save("blank.png", Image.fromarray(np.full((240, 320, 3), 128, dtype=np.uint8)))
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, dtype=np.uint8)])
    rgba[:40, :, 3] = 0  # a transparent strip, flattened onto white by fer.images
    save("rgba.png", Image.fromarray(rgba, mode="RGBA"))
    save("gray.png", Image.fromarray(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY), mode="L"))
    # Stored on its side with EXIF orientation 6 ("rotate 90 degrees clockwise to view"), as phones do: the face is
    # only found if the rotation is honoured.
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif.jpg", Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1))), exif=exif.tobytes(), quality=95)
    save("large.jpg", Image.fromarray(astronaut).resize((4000, 4000)), quality=85)  # 16 megapixels
    save("crowd.png", Image.fromarray(np.tile(astronaut, (2, 4, 1))))  # eight faces
    save("face_crop.png", Image.fromarray(preprocess_face(astronaut, ASTRONAUT_BOX)))  # 48x48, like FER2013
    (folder / "not_an_image.png").write_text("hello")
    paths["not_an_image.png"] = str(folder / "not_an_image.png")
    return paths


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _overlap(first, second) -> float:
    return live.iou(tuple(first), tuple(second))


# ------------------------------------------------------------------------------------------------ Predict tab


def test_predict_gives_predictor_format_and_keeps_model_inputs(predictor, photos, astronaut):
    faces, result = app.predict_photo(predictor, photos["astronaut.png"])
    assert faces == predictor.predict(photos["astronaut.png"])
    assert len(faces) == 1
    assert _overlap(faces[0]["box"], ASTRONAUT_BOX) > 0.8
    probabilities = faces[0]["probabilities"]
    assert list(probabilities) == list(CLASS_NAMES)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    json.dumps(faces)  # plain JSON types, as the API returns them
    assert result.crops.shape == (1, 48, 48) and result.crops.dtype == np.uint8
    np.testing.assert_array_equal(result.crops[0], preprocess_face(astronaut, tuple(faces[0]["box"]),
                                                                   predictor.preprocess_config))
    assert result.model_version == predictor.version


@pytest.mark.parametrize("name", ["rgba.png", "gray.png", "exif.jpg", "large.jpg"])
def test_predict_reads_awkward_photos(predictor, photos, name):
    faces, _ = app.predict_photo(predictor, photos[name])
    # Shrunk from 4000 px for detection, this photo also gets the LBP cascade's one known false alarm on it, a
    # smaller box on the spacesuit (tests/test_preprocess.py); the face is the largest box either way.
    assert len(faces) == (2 if name == "large.jpg" else 1)
    scale = 4000 / 512 if name == "large.jpg" else 1.0
    expected = [round(v * scale) for v in ASTRONAUT_BOX]
    assert _overlap(faces[0]["box"], expected) > 0.6  # upright coordinates: EXIF rotation was applied


def test_no_face_says_so_and_whole_image_classifies_it(predictor, photos):
    faces, result = app.predict_photo(predictor, photos["blank.png"])
    assert faces == []
    outputs = app.show_photo(photos["blank.png"], result)
    assert "No face found" in outputs[1] and "whole image" in outputs[1]
    assert not any(panel.visible for panel in outputs[2:2 + photo.MAX_SHOWN_FACES])

    faces, result = app.predict_photo(predictor, photos["face_crop.png"], True)
    assert len(faces) == 1 and faces[0]["box"] == [0, 0, 48, 48]
    np.testing.assert_array_equal(result.crops[0], np.asarray(Image.open(photos["face_crop.png"])))
    outputs = app.show_photo(photos["face_crop.png"], result)
    assert outputs[2].visible and outputs[2 + photo.MAX_SHOWN_FACES].label == "Whole image"


def test_show_photo_boxes_faces_and_fills_one_panel_per_face(predictor, photos, astronaut):
    faces, result = app.predict_photo(predictor, photos["astronaut.png"])
    picture, message, *rest = app.show_photo(photos["astronaut.png"], result)
    count = photo.MAX_SHOWN_FACES
    panels, label_updates = rest[:count], rest[count:2 * count]
    assert message == "1 face found."
    assert picture.shape == astronaut.shape
    x, y, w, h = faces[0]["box"]
    colour = annotate.colour_for(faces[0]["probabilities"])
    assert tuple(picture[y + h // 2, x]) == colour  # the box's left edge
    assert not np.array_equal(picture, astronaut)
    assert [panel.visible for panel in panels] == [True] + [False] * (count - 1)
    assert label_updates[0].value["label"] == annotate.top_class(faces[0]["probabilities"])[0]


def test_more_faces_than_panels_are_mentioned(predictor, photos):
    faces, result = app.predict_photo(predictor, photos["crowd.png"])
    assert len(faces) > photo.MAX_SHOWN_FACES
    areas = [face["box"][2] * face["box"][3] for face in faces]
    assert areas == sorted(areas, reverse=True)
    outputs = app.show_photo(photos["crowd.png"], result)
    assert f"{len(faces)} faces found" in outputs[1] and "boxed on the picture" in outputs[1]
    assert all(panel.visible for panel in outputs[2:2 + photo.MAX_SHOWN_FACES])


def test_unreadable_upload_is_a_gradio_error(predictor, photos):
    with pytest.raises(gr.Error, match="not an image"):
        app.predict_photo(predictor, photos["not_an_image.png"])
    assert app.predict_photo(predictor, None) == ([], None)


def test_this_is_wrong_sends_the_model_input_to_the_review_queue(predictor, photos, labels_dir):
    _, result = app.predict_photo(predictor, photos["astronaut.png"])
    button, note = app.flag_photo_face(0, result)
    assert button.interactive is False and "reviewers' queue" in note
    rows = labels.read_flagged(labels_dir).rows
    assert len(rows) == 1
    assert rows[0]["image_sha256"] == face_sha256(result.crops[0])
    assert rows[0]["model_version"] == predictor.version and rows[0]["source"] == photo.FLAG_SOURCE
    np.testing.assert_array_equal(labels.load_saved_face(rows[0]["image_sha256"], labels_dir), result.crops[0])


def test_flag_failures_are_gradio_errors(predictor, photos, monkeypatch, caplog):
    _, result = app.predict_photo(predictor, photos["astronaut.png"])
    with pytest.raises(gr.Error, match="Classify a photo first"):
        app.flag_photo_face(0, None)
    with pytest.raises(gr.Error, match="Classify a photo first"):
        app.flag_photo_face(3, result)

    def failing(*args, **kwargs):
        raise FerError("/srv/labels/flagged.csv is read-only")

    monkeypatch.setattr(labels, "flag_for_review", failing)
    with caplog.at_level("WARNING", logger="fer.app"), pytest.raises(gr.Error) as refused:
        app.flag_photo_face(0, result)
    assert "could not store it" in refused.value.message and "/srv" not in refused.value.message  # no server path
    assert "/srv/labels/flagged.csv is read-only" in caplog.text  # the reason is in the server's log


def test_flag_wrapper_passes_face_probabilities_and_version(predictor, photos, monkeypatch):
    _, result = app.predict_photo(predictor, photos["astronaut.png"])
    calls = []
    monkeypatch.setattr(labels, "flag_for_review", lambda *args, **kwargs: calls.append((args, kwargs)) or "abc")
    assert photo.flag_face(result, 0) == "abc"
    (face, probabilities, version, source), kwargs = calls[0]
    assert face.shape == (48, 48) and probabilities == result.faces[0]["probabilities"]
    assert version == predictor.version and source == photo.FLAG_SOURCE and kwargs == {"labels_dir": None}


# ------------------------------------------------------------------------------------------------ start-up


def test_missing_model_stops_the_app_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_MODELS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as stopped:
        app.load_app_predictor()
    message = str(stopped.value)
    assert str(tmp_path / "current.json") in message and "fer.models use" in message


def test_corrupt_model_stops_the_app_naming_the_file(tmp_path, monkeypatch, model_path):
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    (tmp_path / "broken.json").write_text(model_path.with_suffix(".json").read_text())
    (tmp_path / "current.json").write_text(json.dumps({"model": "broken.keras"}))
    monkeypatch.setenv("FER_MODELS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as stopped:
        app.load_app_predictor()
    assert str(tmp_path / "broken.keras") in str(stopped.value)


# ------------------------------------------------------------------------------------------------ served app


@pytest.fixture(scope="module")
def served(predictor):
    demo = app.build_demo(predictor)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(),
                           quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False)


def test_launch_limits_upload_size(served):
    demo, _ = served
    assert demo.max_file_size == 15 * 1024 * 1024


def test_only_predict_is_a_public_endpoint(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/predict"}
    assert api["unnamed_endpoints"] == {}


def test_client_predict_on_a_photo_and_on_no_face(client, photos, predictor):
    from gradio_client import handle_file

    faces = client.predict(handle_file(photos["astronaut.png"]), api_name="/predict")
    assert len(faces) == 1
    assert set(faces[0]) == {"box", "probabilities"} and len(faces[0]["probabilities"]) == 4
    assert faces[0]["box"] == predictor.predict(photos["astronaut.png"])[0]["box"]
    assert client.predict(handle_file(photos["blank.png"]), api_name="/predict") == []
    whole = client.predict(image=handle_file(photos["blank.png"]), whole_image=True, api_name="/predict")
    assert whole[0]["box"] == [0, 0, 320, 240]


def test_client_gets_our_error_for_a_non_image_and_the_server_keeps_serving(client, photos, tmp_path):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="not an image"):  # fer.images' message, not Gradio's generic one
        client.predict(handle_file(photos["not_an_image.png"]), api_name="/predict")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 megapixels in a few kB
    with pytest.raises(Exception, match="pixels"):
        client.predict(handle_file(str(bomb)), api_name="/predict")
    assert len(client.predict(handle_file(photos["astronaut.png"]), api_name="/predict")) == 1


# ------------------------------------------------------------------------------------------------ live tab


class ScriptedPredictor:
    """Stands in for a Predictor: returns the next prepared row of probabilities for every face it is given."""

    classes = CLASS_NAMES
    image_size = 48
    preprocess_config = PreprocessConfig()

    def __init__(self, rows):
        self.rows = [np.asarray(row, dtype=np.float32) for row in rows]
        self.calls = 0

    def predict_faces(self, faces):
        row = self.rows[min(self.calls, len(self.rows) - 1)]
        self.calls += 1
        return np.repeat(row[None], len(faces), axis=0)


@pytest.fixture(scope="module")
def webcam_frame(astronaut) -> np.ndarray:
    """A 640x480 webcam-like frame with the astronaut in the middle."""
    frame = np.full((480, 640, 3), 40, dtype=np.uint8)
    frame[:, 64:576] = cv2.resize(astronaut, (512, 480), interpolation=cv2.INTER_AREA)
    return frame


def test_live_frame_boxes_the_face_and_keeps_its_track(predictor, webcam_frame):
    session = live.LiveSession()
    picture, _ = live.process_frame(predictor, webcam_frame, session, now=0.0)
    assert picture.shape == webcam_frame.shape and picture.dtype == np.uint8
    assert len(session.tracks) == 1
    first = session.tracks[0]
    assert first.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    shifted = np.roll(webcam_frame, 6, axis=1)  # the person moves a little
    for index in range(1, 7):
        live.process_frame(predictor, shifted, session, now=index / 15)
    assert [track.track_id for track in session.tracks] == [first.track_id]


def test_live_detects_every_few_frames_on_a_small_copy(predictor, webcam_frame, monkeypatch):
    calls = []
    real = live.detect_faces

    def counting(image, max_side, max_faces):
        calls.append(max_side)
        return real(image, max_side=max_side, max_faces=max_faces)

    monkeypatch.setattr(live, "detect_faces", counting)
    session, config = live.LiveSession(), live.LiveConfig(detect_every=3)
    for index in range(9):
        live.process_frame(predictor, webcam_frame, session, config, now=index / 15)
    assert calls == [config.detect_max_side] * 3
    live.process_frame(predictor, webcam_frame, session, config, now=5.0)  # after a pause: detect again at once
    assert len(calls) == 4


def test_live_matches_faces_by_overlap():
    tracks = [live.Track(1, (100, 100, 50, 50)), live.Track(2, (300, 100, 50, 50))]
    boxes = [(305, 102, 50, 50), (600, 100, 50, 50), (98, 99, 52, 52)]
    assert live.match_boxes(tracks, boxes, min_iou=0.3) == {0: 1, 2: 0}
    assert live.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and live.iou((0, 0, 10, 10), (20, 0, 10, 10)) == 0.0


def test_live_smooths_probabilities_over_time(webcam_frame):
    happy, sad = [1, 0, 0, 0], [0, 1, 0, 0]
    scripted = ScriptedPredictor([happy, sad, happy, sad, happy, sad])
    session, config = live.LiveSession(), live.LiveConfig(smoothing_s=0.5)
    live.process_frame(scripted, webcam_frame, session, config, now=0.0)
    np.testing.assert_allclose(session.tracks[0].probabilities, happy)
    live.process_frame(scripted, webcam_frame, session, config, now=0.1)
    weight = 1 - np.exp(-0.1 / 0.5)
    np.testing.assert_allclose(session.tracks[0].probabilities, [1 - weight, weight, 0, 0], rtol=1e-5)
    for index in range(2, 6):  # the raw label flips every frame; the smoothed one stays happy
        live.process_frame(scripted, webcam_frame, session, config, now=index / 10)
        assert session.tracks[0].probabilities.argmax() == 0


def test_live_series_is_sampled_once_a_second(webcam_frame):
    scripted = ScriptedPredictor([[0.1, 0.6, 0.2, 0.1]])
    session = live.LiveSession()
    sampled = [live.process_frame(scripted, webcam_frame, session, now=index / 15)[1] for index in range(31)]
    assert sum(sampled) == 3 and sampled[0]
    table = live.series_table(session)
    assert list(table.columns) == ["seconds", "expression", "probability"]
    assert len(table) == 3 * len(CLASS_NAMES) and list(table["seconds"].unique()) == [0.0, 1.0, 2.0]
    assert live.recent_share(session) == {"happy": 0.0, "sad": 1.0, "neutral": 0.0, "surprise": 0.0}
    assert live.current_probabilities(session)["sad"] == pytest.approx(0.6)


def test_live_without_a_face_draws_nothing_and_samples_nothing(predictor):
    frame = np.full((480, 640, 3), 90, dtype=np.uint8)
    session = live.LiveSession()
    picture, sampled = live.process_frame(predictor, frame, session, now=0.0)
    np.testing.assert_array_equal(picture, frame)
    assert not sampled and session.tracks == [] and live.series_table(session).empty
    assert live.recent_share(session) == {} and live.current_probabilities(session) is None


def test_live_handler_keeps_state_per_session(predictor, webcam_frame):
    picture, first, *_ = app.live_frame(predictor, webcam_frame, None)
    assert isinstance(first, live.LiveSession) and first.frame_count == 1
    outputs = app.live_frame(predictor, webcam_frame, first)
    assert outputs[1] is first and first.frame_count == 2
    assert outputs[2:] == (gr.skip(),) * 3  # labels and plot only change when the series takes a point
    _, second, *_ = app.live_frame(predictor, webcam_frame, None)  # another visitor
    assert second is not first and second.frame_count == 1 and first.frame_count == 2
    assert app.live_frame(predictor, None, first)[1] is first
    assert app.reset_live() == (None,) * 5


def test_live_handler_returns_labels_and_plot_when_sampled(predictor, webcam_frame):
    _, session, now, share, table = app.live_frame(predictor, webcam_frame, None)
    assert set(now) == set(CLASS_NAMES) and sum(share.values()) == pytest.approx(1.0)
    assert len(table) == len(CLASS_NAMES)


# ------------------------------------------------------------------------------------------------ drawing


def test_draw_faces_draws_on_a_copy_and_shrinks_large_pictures():
    image = np.zeros((3000, 2000, 3), dtype=np.uint8)
    drawn = annotate.draw_faces(image, [(1000, 1000, 500, 500)], ["happy 90%"], [(46, 204, 64)])
    assert image.max() == 0
    assert drawn.shape == (annotate.DISPLAY_MAX_SIDE, round(2000 * annotate.DISPLAY_MAX_SIDE / 3000), 3)
    scale = annotate.DISPLAY_MAX_SIDE / 3000
    assert tuple(drawn[round(1250 * scale), round(1000 * scale)]) == (46, 204, 64)
    with pytest.raises(ValueError):
        annotate.draw_faces(image, [(0, 0, 10, 10)], [], [])


def test_live_frames_go_to_the_browser_inline_not_to_disk(webcam_frame, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    payload = app._inline_image().postprocess(webcam_frame)
    assert payload.path is None and payload.url.startswith("data:image/jpeg;base64,")
    assert not (tmp_path / "cache").exists()
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload.url.split(",", 1)[1]))), dtype=int)
    assert decoded.shape == webcam_frame.shape and np.abs(decoded - webcam_frame).mean() < 5


def test_colour_map_matches_box_colours():
    colours = annotate.colour_map(CLASS_NAMES)
    assert list(colours) == list(CLASS_NAMES)
    probabilities = {"happy": 0.1, "sad": 0.7, "neutral": 0.1, "surprise": 0.1}
    assert colours["sad"] == "#{:02x}{:02x}{:02x}".format(*annotate.colour_for(probabilities))


def test_large_upload_picture_is_shown_at_display_size(predictor, photos):
    _, result = app.predict_photo(predictor, photos["large.jpg"])
    picture = app.show_photo(photos["large.jpg"], result)[0]
    assert max(picture.shape[:2]) == annotate.DISPLAY_MAX_SIDE


def test_exif_photo_is_shown_upright(predictor, photos, astronaut):
    _, result = app.predict_photo(predictor, photos["exif.jpg"])
    picture = app.show_photo(photos["exif.jpg"], result)[0].astype(int)
    upright = np.abs(picture - astronaut).mean()
    sideways = np.abs(picture - np.rot90(astronaut, 1)).mean()
    assert upright < sideways / 3


# ------------------------------------------------------------------------------------------------ recording tab


@pytest.fixture(scope="module")
def recording_clip(tmp_path_factory, astronaut):
    frames = fixtures_video.moving_astronaut(astronaut, count=10)
    return fixtures_video.write_clip(tmp_path_factory.mktemp("recording") / "session one.mp4", frames, fps=10)


def _recording_folders() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("fer-recording-")}


def test_recording_gives_video_plot_table_and_csv_then_forgets_its_files(predictor, recording_clip):
    annotated, figure, summary, table, message, folder = app.analyze_recording(predictor, str(recording_clip),
                                                                               "default")
    assert Path(annotated).name == "session_one_annotated.webm" and Path(annotated).parent == Path(folder)
    assert Path(table).name == "session_one_faces.csv" and Path(table).parent == Path(folder)
    rows = pd.read_csv(table)
    assert len(rows) == 10 and set(rows["face_id"]) == {1}
    assert list(summary["face"]) == [1] and summary.loc[0, "samples"] == 10
    assert [axis.get_title(loc="left") for axis in figure.axes] == ["face 1"]
    assert "**1 face** tracked" in message and "10 rows" in message
    app.forget_recording(folder)
    assert not Path(folder).exists()
    app.forget_recording(None)  # nothing to forget: no error


def test_recording_sampling_choices(predictor, recording_clip):
    assert [value for _, value in app.RECORDING_SAMPLING][0] == "default"
    for value, samples in (("0.5s", 2), ("1s", 1)):
        *_, table, _, folder = app.analyze_recording(predictor, str(recording_clip), value)
        assert len(pd.read_csv(table)) == samples
        app.forget_recording(folder)


def test_recording_refuses_bad_uploads_and_what_the_tab_does_not_take(predictor, tmp_path, astronaut):
    before = _recording_folders()
    with pytest.raises(gr.Error, match="Upload a video first"):
        app.analyze_recording(predictor, None, "default")
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    with pytest.raises(gr.Error, match="text file"):
        app.analyze_recording(predictor, str(notes), "default")
    uhd = [cv2.resize(frame, (3840, 2160)) for frame in fixtures_video.moving_astronaut(astronaut, 2)]
    with pytest.raises(gr.Error, match="3840x2160"):
        app.analyze_recording(predictor, str(fixtures_video.write_clip(tmp_path / "uhd.mp4", uhd, fps=2)), "default")
    long = fixtures_video.write_clip(tmp_path / "long.mp4", fixtures_video.blank_frames(7), fps=0.01)  # 700 s
    with pytest.raises(gr.Error, match="11 min 40 s long, over the limit of 10 min"):
        app.analyze_recording(predictor, str(long), "default")
    assert _recording_folders() == before  # a refused video leaves no folder behind


def test_recording_tab_states_its_limits_and_what_is_kept(predictor):
    note = app.RECORDING_NOTE
    assert "15 MB" in note and "10 min" in note and "2.1 megapixels" in note and "Full HD" in note
    assert "Nothing is kept" in note and "half an hour" in note
    demo = app.build_demo(predictor)
    states = [block for block in demo.blocks.values() if isinstance(block, gr.State)]
    assert any(state.delete_callback is recording.discard for state in states)  # cleaned when a session ends
