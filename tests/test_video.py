"""fer.video and fer.timeline: recorded videos in, one CSV row per sampled frame and face, an annotated copy, a plot.

Clips are written here with OpenCV (tests/fixtures_video.py); the model is the untrained test model, so the tests
check the pipeline (sampling, tracking, rows, files, errors), not the expressions.
"""

from __future__ import annotations

import math
import tracemalloc

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fixtures_video
from fer import annotate, live, video
from fer.config import CLASS_NAMES
from fer.errors import FerError, VideoError
from fer.preprocess import preprocess_face

COLUMNS = ["time_s", "frame", "face_id", "x", "y", "w", "h", *CLASS_NAMES, "label"]
APP_LIKE_LIMITS = video.VideoLimits(max_bytes=15 * 2**20, max_duration_s=600, max_frame_pixels=1920 * 1080)


@pytest.fixture(scope="module")
def frames(astronaut) -> list[np.ndarray]:
    return fixtures_video.moving_astronaut(astronaut, count=12)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, frames):
    """12 frames at 10 frames/s (1.2 s), mp4v: the astronaut sliding right."""
    return fixtures_video.write_clip(tmp_path_factory.mktemp("clip") / "astronaut.mp4", frames, fps=10)


@pytest.fixture(scope="module")
def analysed(predictor, clip, tmp_path_factory):
    folder = tmp_path_factory.mktemp("analysed")
    result = video.analyze_video(predictor, clip, folder / "faces.csv", folder / "annotated.webm")
    return result, pd.read_csv(folder / "faces.csv"), folder


def decoded(path) -> list[np.ndarray]:
    """Every frame of a video as RGB, decoded the way fer.video decodes it."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


# ---- the CSV ------------------------------------------------------------------------------------------------------


def test_one_row_per_sampled_frame_and_face(analysed):
    result, table, _ = analysed
    assert list(table.columns) == COLUMNS
    assert result.frames_sampled == 12 and result.rows == len(table) == 12  # 10 frames/s: every frame is sampled
    assert list(table["frame"]) == list(range(12))
    np.testing.assert_allclose(table["time_s"], np.arange(12) / 10)
    np.testing.assert_allclose(table[list(CLASS_NAMES)].sum(axis=1), 1.0, atol=2e-4)  # 4 decimals each
    assert list(table["label"]) == list(table[list(CLASS_NAMES)].idxmax(axis=1))


def test_the_moving_face_keeps_one_id_and_its_box_follows_it(analysed):
    _, table, _ = analysed
    assert set(table["face_id"]) == {1}
    centres = table["x"] + table["w"] / 2
    travel = fixtures_video.CANVAS[0] - fixtures_video.PERSON
    assert centres.iloc[-1] - centres.iloc[0] > 0.6 * travel  # the box moved right with her
    assert centres.is_monotonic_increasing or np.all(np.diff(centres) >= -2)


def test_rows_hold_what_the_model_says_about_that_box_of_that_frame(predictor, clip, tmp_path):
    """Without smoothing, each row's probabilities are the model's own for the row's box in the row's frame."""
    config = video.VideoConfig(smoothing_s=0)
    video.analyze_video(predictor, clip, tmp_path / "raw.csv", config=config)
    table = pd.read_csv(tmp_path / "raw.csv")
    pictures = decoded(clip)
    for row in table.itertuples():
        face = preprocess_face(pictures[row.frame], (row.x, row.y, row.w, row.h), predictor.preprocess_config)
        expected = predictor.predict_faces(face[None])[0]
        np.testing.assert_allclose([getattr(row, name) for name in CLASS_NAMES], expected, atol=1e-4)


def test_probabilities_are_smoothed_over_video_time(predictor, clip, tmp_path):
    video.analyze_video(predictor, clip, tmp_path / "raw.csv", config=video.VideoConfig(smoothing_s=0))
    video.analyze_video(predictor, clip, tmp_path / "smooth.csv", config=video.VideoConfig(smoothing_s=0.5))
    raw, smooth = pd.read_csv(tmp_path / "raw.csv"), pd.read_csv(tmp_path / "smooth.csv")
    columns = list(CLASS_NAMES)
    np.testing.assert_allclose(smooth[columns].iloc[0], raw[columns].iloc[0], atol=1e-4)  # the first sample is taken
    weight = live.smoothing_weight(0.1, 0.5)  # as is, later ones blend in with the Live tab's weight
    expected = (1 - weight) * smooth[columns].iloc[0].to_numpy() + weight * raw[columns].iloc[1].to_numpy()
    np.testing.assert_allclose(smooth[columns].iloc[1], expected, atol=3e-4)


@pytest.mark.parametrize("every, sampled", [(None, 10), (0.0, 30), (0.5, 2), (0.25, 4), (5.0, 1)])
def test_sampling_interval(predictor, tmp_path, every, sampled):
    """A 30 frames/s clip of one second: by default 10 samples, every frame with 0, else one per interval."""
    clip = fixtures_video.write_clip(tmp_path / "thirty.mp4", fixtures_video.blank_frames(30), fps=30)
    result = video.analyze_video(predictor, clip, tmp_path / "rows.csv", config=video.VideoConfig(every_s=every))
    assert result.frames_sampled == sampled and result.frames_decoded == 30
    assert result.rows == 0 and result.timeline.faces == {}  # no face: no rows, a header only
    assert list(pd.read_csv(tmp_path / "rows.csv").columns) == COLUMNS


@pytest.mark.parametrize("text, seconds", [("0.5s", 0.5), ("500ms", 0.5), ("2", 2.0), ("0", 0.0), (" .25 s ", 0.25)])
def test_parse_interval(text, seconds):
    assert video.parse_interval(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1", "abc", "1h", "", "0.5 fps", "nan"])
def test_parse_interval_refuses_nonsense(text):
    with pytest.raises(ValueError, match="sampling interval"):
        video.parse_interval(text)


def test_two_people_get_two_ids_that_stay_with_them(predictor, astronaut, tmp_path):
    clip = fixtures_video.write_clip(tmp_path / "two.mp4", fixtures_video.two_people(astronaut, 10), fps=10)
    result = video.analyze_video(predictor, clip, tmp_path / "two.csv", config=video.VideoConfig(detect_every_s=0))
    table = pd.read_csv(tmp_path / "two.csv")
    assert set(table["face_id"]) == {1, 2} and len(result.timeline.faces) == 2
    for _, rows in table.groupby("face_id"):
        centres = rows["x"] + rows["w"] / 2
        assert centres.max() < 400 or centres.min() > 400  # each id stays on its own side of the picture
    summary = result.timeline.summary_table()
    assert list(summary["face"]) == [1, 2] and summary["samples"].sum() == len(table)


# ---- the annotated copy and the plot ------------------------------------------------------------------------------


def test_annotated_copy_is_vp8_webm_with_a_frame_per_sample(analysed):
    result, table, folder = analysed
    path = folder / "annotated.webm"
    head = path.read_bytes()[:64]
    assert head.startswith(b"\x1aE\xdf\xa3") and b"webm" in head  # an EBML file whose DocType is WebM
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    assert fourcc == "VP80" and capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    pictures = decoded(path)
    assert len(pictures) == result.frames_sampled
    assert pictures[0].shape == (360, 480, 3)
    x, y, w, h = table.loc[0, ["x", "y", "w", "h"]]
    edge = np.asarray(pictures[0][y + h // 4: y + 3 * h // 4, x], dtype=int)  # the box's left edge
    colour = annotate.colour_for(dict(table.loc[0, list(CLASS_NAMES)]))
    assert np.abs(edge - colour).max(axis=1).mean() < 60  # drawn in its class colour (VP8 blurs it a little)


def test_annotated_copy_shows_sparse_samples_at_one_frame_a_second_at_least(tmp_path):
    writer = video._AnnotatedOutput(tmp_path / "a.webm", step_s=2.5)
    assert (writer.copies, writer.fps) == (3, pytest.approx(1.2))  # 2.5 s a sample: 3 frames at 1.2 frames/s
    assert video._AnnotatedOutput(tmp_path / "a.webm", step_s=0.1).copies == 1


def test_annotated_copy_is_shrunk_and_even_sized(predictor, tmp_path, astronaut):
    frames = [cv2.resize(frame, (1001, 751)) for frame in fixtures_video.moving_astronaut(astronaut, 3)]
    clip = fixtures_video.write_clip(tmp_path / "odd.avi", frames, fps=5)
    video.analyze_video(predictor, clip, annotated_path=tmp_path / "odd.webm")
    pictures = decoded(tmp_path / "odd.webm")
    assert len(pictures) == 3 and pictures[0].shape == (480, 640, 3)  # 640 px at most; odd sides made even


def test_a_failing_encoder_stops_the_work_with_a_clear_error_and_leaves_no_file(predictor, clip, tmp_path,
                                                                                monkeypatch):
    class FullDisk:  # a writer that opens, then fails on its first frame (on the encoder thread)
        def __init__(self, *args):
            self.released = False

        def isOpened(self):
            return True

        def write(self, frame):
            raise cv2.error("No space left on device")

        def release(self):
            self.released = True

    monkeypatch.setattr(video.cv2, "VideoWriter", FullDisk)
    with pytest.raises(VideoError, match="Writing annotated.webm failed: .*No space left"):
        video.analyze_video(predictor, clip, tmp_path / "rows.csv", tmp_path / "annotated.webm")
    assert list(tmp_path.iterdir()) == []  # neither output, nor a temporary file, is left behind


@pytest.mark.parametrize("suffix, fourcc", [(".mp4", "FMP4"), (".avi", "MJPG")])
def test_annotated_copy_in_other_containers(predictor, clip, tmp_path, suffix, fourcc):
    video.analyze_video(predictor, clip, annotated_path=tmp_path / f"annotated{suffix}")
    capture = cv2.VideoCapture(str(tmp_path / f"annotated{suffix}"))
    assert int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode() == fourcc
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 12


def test_plot_has_a_panel_per_face_in_the_boxes_colours(analysed, tmp_path):
    result, _, _ = analysed
    figure = result.timeline.figure()
    axes = [axis for axis in figure.axes if axis.get_title(loc="left").startswith("face")]
    assert [axis.get_title(loc="left") for axis in axes] == ["face 1"]
    colours = {line.get_label(): line.get_color() for line in axes[0].get_lines()}
    assert colours == annotate.colour_map(CLASS_NAMES)
    result.timeline.save_plot(tmp_path / "plot.png", title="clip")
    assert Image.open(tmp_path / "plot.png").size[0] >= 800


def test_plot_without_faces_says_so(tmp_path):
    from fer.timeline import Timeline

    figure = Timeline(CLASS_NAMES, 0.1).figure()
    assert any("no face found" in text.get_text() for text in figure.axes[0].texts)


def test_summary_shares_and_gaps():
    from fer.timeline import Timeline

    timeline = Timeline(CLASS_NAMES, step_s=0.5)
    happy, sad = np.array([0.7, 0.1, 0.1, 0.1]), np.array([0.1, 0.7, 0.1, 0.1])
    for seconds, probabilities in [(0.0, happy), (0.5, happy), (1.0, sad), (5.0, happy)]:  # out of view 1.0-5.0 s
        timeline.add(3, seconds, probabilities)
    row = timeline.summary_table().iloc[0]
    assert row["face"] == 3 and row["samples"] == 4 and row["time seen (s)"] == 2.0
    assert (row["first seen (s)"], row["last seen (s)"]) == (0.0, 5.0)
    assert (row["happy %"], row["sad %"], row["most often"]) == (75.0, 25.0, "happy")
    line = timeline.figure().axes[0].get_lines()[0]
    assert np.isnan(line.get_xdata()).sum() == 1  # the line breaks over the gap instead of bridging it


# ---- bad input ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory, astronaut):
    return fixtures_video.write_bad_videos(tmp_path_factory.mktemp("bad_videos"), astronaut)


@pytest.mark.parametrize("name", sorted(fixtures_video.BAD_VIDEOS))
def test_bad_files_are_refused_naming_the_problem(predictor, bad_videos, name, tmp_path):
    if name == "missing.mp4":
        bad_videos[name].unlink(missing_ok=True)
    with pytest.raises(VideoError, match=fixtures_video.BAD_VIDEOS[name]) as refused:
        video.analyze_video(predictor, bad_videos[name], tmp_path / "rows.csv", tmp_path / "annotated.webm")
    assert str(bad_videos[name]) in str(refused.value) and "\n" not in str(refused.value)
    assert isinstance(refused.value, FerError) and isinstance(refused.value, ValueError)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_a_video_cut_short_gives_what_it_holds_and_says_so(predictor, frames, tmp_path):
    whole = fixtures_video.write_clip(tmp_path / "whole.webm", frames * 3, fps=10).read_bytes()  # 36 frames
    cut = tmp_path / "cut.webm"
    cut.write_bytes(whole[: int(len(whole) * 0.6)])  # WebM clusters: the first part still plays
    result = video.analyze_video(predictor, cut, tmp_path / "cut.csv")
    assert 5 <= result.frames_sampled < 36 and result.rows == len(pd.read_csv(tmp_path / "cut.csv"))
    assert any("truncated" in warning for warning in result.warnings)


def test_a_4k_video_is_refused_by_app_limits_and_processed_by_default(predictor, astronaut, tmp_path):
    frames = [cv2.resize(frame, (3840, 2160)) for frame in fixtures_video.moving_astronaut(astronaut, 2)]
    clip = fixtures_video.write_clip(tmp_path / "uhd.mp4", frames, fps=2)
    with pytest.raises(VideoError, match=r"3840x2160.*2\.1 megapixels"):
        video.analyze_video(predictor, clip, tmp_path / "rows.csv", limits=APP_LIKE_LIMITS)
    result = video.analyze_video(predictor, clip, tmp_path / "rows.csv", tmp_path / "small.webm")
    assert result.frames_sampled == 2 and result.rows == 2
    assert decoded(tmp_path / "small.webm")[0].shape == (360, 640, 3)
    with pytest.raises(VideoError, match="megapixels"):
        video.probe(clip, video.VideoLimits(max_frame_pixels=3840 * 2160 - 1))


def test_a_two_hour_video_is_refused_by_app_limits_and_processed_in_bounded_memory(predictor, tmp_path):
    clip = fixtures_video.write_clip(tmp_path / "long.mp4", fixtures_video.blank_frames(72), fps=0.01)  # 100 s a frame
    info = video.probe(clip)
    assert info.duration_s == pytest.approx(7200) and "2 h 0 min" in info.describe()
    with pytest.raises(VideoError, match="2 h 0 min long, over the limit of 10 min;"):
        video.analyze_video(predictor, clip, tmp_path / "rows.csv", limits=APP_LIKE_LIMITS)
    tracemalloc.start()
    try:
        result = video.analyze_video(predictor, clip, tmp_path / "rows.csv", tmp_path / "long.webm")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.frames_sampled == 72 and result.frames_decoded == 72
    assert peak < 20 * 2**20  # frames are decoded one at a time: no growth with the length
    annotated = cv2.VideoCapture(str(tmp_path / "long.webm"))
    assert annotated.get(cv2.CAP_PROP_FPS) == 1.0  # each 100-second sample shown for 100 frames at 1 frame/s
    assert len(decoded(tmp_path / "long.webm")) == 72 * 100


def test_limits_are_described_and_files_over_the_size_limit_refused(clip):
    assert APP_LIKE_LIMITS.describe() == "at most 15 MB, 10 min long, 2.1 megapixels a frame"
    with pytest.raises(VideoError, match="over the 0 MB limit"):
        video.probe(clip, video.VideoLimits(max_bytes=1000))


def test_annotated_output_with_an_unknown_extension_is_refused_before_any_work(predictor, clip, tmp_path):
    with pytest.raises(VideoError, match=r"\.gif.*\.webm"):
        video.analyze_video(predictor, clip, tmp_path / "rows.csv", tmp_path / "annotated.gif")
    assert list(tmp_path.iterdir()) == []


def test_output_into_a_missing_folder_is_refused(predictor, clip, tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        video.analyze_video(predictor, clip, tmp_path / "nowhere" / "rows.csv")


def test_config_refuses_negative_intervals():
    with pytest.raises(ValueError, match="sampling interval"):
        video.VideoConfig(every_s=-1)
    with pytest.raises(ValueError):
        video.VideoConfig(every_s=math.nan)


# ---- the command line (in process: the model is loaded once per call, TensorFlow once per session) -----------------


def test_cli_writes_csv_video_and_plot_and_prints_a_summary(model_path, clip, tmp_path, capsys):
    status = video.main([str(clip), "--csv", str(tmp_path / "rows.csv"), "--annotated", str(tmp_path / "out.webm"),
                         "--plot", str(tmp_path / "plot.png"), "--every", "200ms", "--model", str(model_path)])
    output = capsys.readouterr()
    assert status == 0, output.err
    assert len(pd.read_csv(tmp_path / "rows.csv")) == 6  # 1.2 s at one sample every 0.2 s
    assert len(decoded(tmp_path / "out.webm")) == 6 and Image.open(tmp_path / "plot.png").format == "PNG"
    assert "6 frames sampled" in output.out and "most often" in output.out and "wrote CSV" in output.out


@pytest.mark.parametrize("arguments, words", [
    (["{bad}", "--csv", "{out}/rows.csv"], "text file"),
    (["{clip}", "--csv", "{out}/rows.csv", "--annotated", "{out}/a.gif"], ".gif"),
])
def test_cli_fails_with_one_error_line(model_path, clip, bad_videos, tmp_path, capsys, arguments, words):
    values = {"bad": bad_videos["notes.mp4"], "clip": clip, "out": tmp_path}
    status = video.main([argument.format(**values) for argument in arguments] + ["--model", str(model_path)])
    output = capsys.readouterr()
    errors = [line for line in output.err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(errors) == 1 and words in errors[0] and output.out == ""
    assert list(tmp_path.iterdir()) == []


def test_cli_wants_an_output(clip, capsys):
    with pytest.raises(SystemExit) as stopped:
        video.main([str(clip)])
    assert stopped.value.code == 2 and "--csv" in capsys.readouterr().err


def test_progress_reports_frames_decoded_up_to_the_end(predictor, clip):
    reports = []
    video.analyze_video(predictor, clip, config=video.VideoConfig(every_s=0.5),
                        progress=lambda done, total: reports.append((done, total)))
    assert reports[0] == (1, 12) and reports[-1] == (12, 12)  # samples at frames 0 and 5, then the end
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
