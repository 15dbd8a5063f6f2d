"""Recorded videos: faces tracked across frames and classified over time, one CSV row per sampled frame and face.

    python -m fer.video session.mp4 --csv faces.csv                      # every frame, at most 10 a second
    python -m fer.video session.mp4 --csv faces.csv --every 0.5s --plot timeline.png --annotated annotated.webm

Frames are decoded by OpenCV (FFmpeg) one at a time, so memory stays bounded whatever the length. Faces are
followed by the Live tab's tracker (`fer.live.track_faces`): one id per person while they stay in view, probabilities
smoothed over `--smoothing` seconds of video time. The CSV's columns are

    time_s, frame, face_id, x, y, w, h, happy, sad, neutral, surprise, label

(boxes in the video's pixels; smoothed probabilities in the model's class order; label = the most probable class).
A summary per face (share of samples per top expression) goes to stdout, a progress bar to stderr.

The annotated copy holds one frame per sample. Its codec follows its extension: `.webm` is VP8, which browsers play
(the OpenCV wheels here cannot write H.264); `.mp4` is MPEG-4 Part 2, which desktop players read but browsers do not;
`.avi` is Motion JPEG.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import logging
import math
import os
import queue
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from fer import live
from fer.errors import FerError, VideoError
from fer.faces import DETECT_MAX_SIDE
from fer.images import describe_content
from fer.timeline import Timeline

logger = logging.getLogger(__name__)

DEFAULT_MAX_RATE = 10.0  # samples per second when --every is not given: every frame of a video up to 10 frames/s
FORMATS = "MP4, MOV, M4V, AVI, WebM or MKV"
SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv")  # what an upload box offers; the content decides
# Annotated copies: extension -> OpenCV fourcc. VP8 in WebM is the one browsers play that this OpenCV can encode.
WRITERS = {".webm": "VP80", ".mkv": "VP80", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
BROWSER_FORMAT = ".webm"
MIN_ANNOTATED_FPS = 1.0  # the annotated copy's lowest frame rate
ENCODE_QUEUE = 8  # annotated frames waiting for the encoder thread (640x480: under 8 MB); a full queue makes analysis wait
_PHOTO_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


@dataclasses.dataclass(frozen=True)
class VideoLimits:
    """What a video may be; None means no limit. The command line only refuses frames larger than 8K; the app sets
    its own (app.py)."""

    max_bytes: int | None = None
    max_duration_s: float | None = None
    max_frame_pixels: int | None = 7680 * 4320

    def describe(self) -> str:
        parts = []
        if self.max_bytes:
            parts.append(f"{self.max_bytes / 2**20:.0f} MB")
        if self.max_duration_s:
            parts.append(f"{_duration(self.max_duration_s)} long")
        if self.max_frame_pixels:
            parts.append(f"{self.max_frame_pixels / 1e6:.1f} megapixels a frame")
        return "at most " + ", ".join(parts) if parts else "no limits"


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    """How a video is sampled and tracked. Tracking follows the Live tab (fer.live), in video time."""

    every_s: float | None = None     # seconds between samples; None: every frame up to DEFAULT_MAX_RATE; 0: every frame
    smoothing_s: float = live.LiveConfig.smoothing_s
    max_faces: int = 10              # faces tracked per frame, largest first
    detect_every_s: float = 0.2      # the detector runs this often (the Live tab: every 3rd frame at 15 frames/s)
    keep_missed_s: float = 1.0       # a face the detector misses keeps its id this long (recorded faces turn away)
    detect_max_side: int = DETECT_MAX_SIDE  # detection at the photos' size: faces in recordings can be small
    annotated_max_side: int = 640    # the annotated copy is at most this large (VP8 encoding costs per pixel)

    def __post_init__(self):
        if self.every_s is not None and not (math.isfinite(self.every_s) and self.every_s >= 0):
            raise ValueError(f"The sampling interval must be 0 (every frame) or a positive number of seconds; "
                             f"got {self.every_s}.")
        if self.smoothing_s < 0 or self.max_faces < 1:
            raise ValueError("smoothing_s must be >= 0 and max_faces >= 1.")

    def step_s(self, fps: float) -> float:
        """Seconds between samples for a video of `fps` frames a second (never less than one frame)."""
        every = 1.0 / DEFAULT_MAX_RATE if self.every_s is None else self.every_s
        return max(every, 1.0 / fps)

    def tracker(self, step_s: float) -> live.LiveConfig:
        detect_every = max(1, round(self.detect_every_s / step_s))
        return live.LiveConfig(
            detect_every=detect_every,
            detect_max_side=self.detect_max_side,
            max_faces=self.max_faces,
            keep_missed=max(1, round(self.keep_missed_s / (detect_every * step_s))),
            redetect_after_s=math.inf,  # gaps between samples are the sampling, not a paused stream
            smoothing_s=self.smoothing_s,
            display_max_side=self.annotated_max_side,
        )


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: Path
    container: str     # what the file's first bytes say, e.g. "a video (MP4/MOV)"
    codec: str         # the FourCC OpenCV reports, e.g. "FMP4", "VP80", "avc1"
    width: int
    height: int
    fps: float
    frame_count: int   # from the header: an estimate for some containers, 0 when unknown

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps

    def describe(self) -> str:
        length = f"{_duration(self.duration_s)}, " if self.frame_count else ""
        return f"{self.width}x{self.height}, {length}{self.fps:.4g} frames/s, codec {self.codec}"


@dataclasses.dataclass
class VideoResult:
    info: VideoInfo
    step_s: float               # seconds between samples
    timeline: Timeline          # each face's smoothed probabilities over time
    frames_decoded: int = 0
    frames_sampled: int = 0
    rows: int = 0               # CSV rows: sampled frames x faces in them
    warnings: list[str] = dataclasses.field(default_factory=list)


Progress = Callable[[int, int], None]  # (frames decoded so far, frames in the video or 0 when unknown)


def parse_interval(text: str) -> float:
    """"0.5s", "0.5", "500ms" -> 0.5 seconds; "0" means every frame. ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*", str(text))
    if not match:
        raise ValueError(f"Cannot read {text!r} as a sampling interval; write e.g. 0.5s, 500ms or 0 (every frame).")
    value = float(match.group(1))
    return value / 1000.0 if match.group(2) == "ms" else value


def probe(path: str | os.PathLike, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Check that `path` is a video OpenCV can decode and within `limits`; raise VideoError saying why not."""
    path = Path(path)
    container = _sniff(path, limits)
    with _opened(path, container) as capture:
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> shift) & 0xFF) for shift in (0, 8, 16, 24)).strip("\x00 ") or "unknown"
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        if width < 1 or height < 1:
            raise VideoError(f"{path} has no picture size in its header ({container}); it may be truncated.")
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise VideoError(f"{path} states no usable frame rate ({fps:g}); re-encode it, e.g. "
                             "`ffmpeg -i IN -r 25 OUT.mp4`.")
        frame_count = int(frames) if math.isfinite(frames) and frames > 0 else 0
        info = VideoInfo(path, container, codec, width, height, float(fps), frame_count)
        _check_limits(info, limits)
        if not capture.grab() or capture.retrieve()[1] is None:
            raise VideoError(f"{path} holds no frame OpenCV can decode ({container}, codec {codec}): it may be "
                             "empty or truncated, or use a codec this OpenCV build cannot decode; "
                             "re-encoding it as VP8, H.264 or MPEG-4 helps.")
    return info


def analyze_video(predictor, path: str | os.PathLike, csv_path: str | os.PathLike | None = None,
                  annotated_path: str | os.PathLike | None = None, config: VideoConfig = VideoConfig(),
                  limits: VideoLimits = VideoLimits(), progress: Progress | None = None) -> VideoResult:
    """Track and classify the faces in a video file; write the CSV and the annotated copy if paths are given.

    `predictor` is a fer.predict.Predictor (or the app's ServedModel). Raises VideoError for a file that is not a
    readable video or is outside `limits`; the output files are then left as they were (they are written under
    temporary names and moved into place at the end).
    """
    info = probe(path, limits)
    step = config.step_s(info.fps)
    tracker_config = config.tracker(step)
    classes = tuple(predictor.classes)
    result = VideoResult(info, step, Timeline(classes, step))
    session = live.LiveSession()
    with contextlib.ExitStack() as stack:
        table = stack.enter_context(_CsvOutput(csv_path, classes)) if csv_path else None
        writer = stack.enter_context(_AnnotatedOutput(annotated_path, step)) if annotated_path else None
        for index, seconds, slot, bgr in _samples(info, step, limits, result):
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8, as fer.live and fer.preprocess take it
            live.track_faces(predictor, rgb, session, tracker_config, now=seconds)
            visible = live.visible_tracks(session)
            for track in visible:
                result.timeline.add(track.track_id, seconds, track.probabilities)
                if table is not None:
                    table.write(seconds, index, track, classes)
            result.rows += len(visible)
            result.frames_sampled += 1
            if writer is not None:
                writer.write(live.draw_tracks(rgb, visible, classes, config.annotated_max_side, numbered=True), slot)
            if progress is not None:
                progress(index + 1, info.frame_count)
        if progress is not None:
            progress(result.frames_decoded, info.frame_count)  # the frames after the last sample
        if result.frames_sampled == 0:
            raise VideoError(f"{path} holds no frame OpenCV can decode (codec {info.codec}); it may be truncated.")
    _check_ending(result)
    return result


# ------------------------------------------------------------------------------------------------ reading


def _sniff(path: Path, limits: VideoLimits) -> str:
    """The container the file's first bytes name; only formats we promise reach FFmpeg (no playlists, no images)."""
    try:
        if not path.is_file():
            raise VideoError(f"No such file: {path}" if not path.exists() else f"{path} is not a file; choose a video.")
        size = path.stat().st_size
        with path.open("rb") as stream:
            head = stream.read(1024)
    except OSError as error:
        raise VideoError(f"Cannot read {path}: {error.strerror or error}") from None
    if size == 0:
        raise VideoError(f"{path} is empty (0 bytes); choose a {FORMATS} video.")
    if limits.max_bytes and size > limits.max_bytes:
        raise VideoError(f"{path} is {size / 2**20:.0f} MB, over the {limits.max_bytes / 2**20:.0f} MB limit; "
                         "cut it shorter or compress it.")
    what = describe_content(head)
    if what and what.startswith("a video"):
        return what
    if head.startswith(_PHOTO_MAGIC) or (head.startswith(b"RIFF") and head[8:12] == b"WEBP"):
        raise VideoError(f"{path} is a photo, not a video; `python -m fer.predict` reads photos.")
    seems = f" (it looks like {what})" if what else ""
    raise VideoError(f"{path} is not a video this tool can read{seems}; use {FORMATS}.")


@contextlib.contextmanager
def _opened(path: Path, container: str) -> Iterator[cv2.VideoCapture]:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise VideoError(f"{path} looks like {container} but OpenCV cannot open it: it may be truncated, hold no "
                             "frames, or use a codec this OpenCV build cannot decode.")
        yield capture
    finally:
        capture.release()


def _check_limits(info: VideoInfo, limits: VideoLimits) -> None:
    if limits.max_frame_pixels and info.width * info.height > limits.max_frame_pixels:
        raise VideoError(f"{info.path} is {info.width}x{info.height} a frame, over the limit of "
                         f"{limits.max_frame_pixels / 1e6:.1f} megapixels; scale it down first, e.g. "
                         "`ffmpeg -i IN -vf scale=-2:1080 OUT.mp4`.")
    if limits.max_duration_s and info.frame_count and info.duration_s > limits.max_duration_s:
        raise VideoError(f"{info.path} is {_duration(info.duration_s)} long, over the limit of "
                         f"{_duration(limits.max_duration_s)}; cut it into shorter parts.")


def _samples(info: VideoInfo, step: float, limits: VideoLimits,
             result: VideoResult) -> Iterator[tuple[int, float, int, np.ndarray]]:
    """(frame index, seconds, sample slot, BGR frame) for the first frame in each `step`-second slot.

    Frame times are index / fps (the header's rate). Frames between samples are only grabbed, not converted.
    """
    with _opened(info.path, info.container) as capture:
        index, last_slot = -1, -1
        while capture.grab():
            index += 1
            seconds = index / info.fps
            if limits.max_duration_s and seconds > limits.max_duration_s:
                raise VideoError(f"{info.path} runs past the limit of {_duration(limits.max_duration_s)} (its header "
                                 "said less); cut it into shorter parts.")
            slot = math.floor(seconds / step + 1e-6)
            if slot <= last_slot:
                continue
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                result.warnings.append(f"frame {index} could not be decoded and was skipped")
                continue
            last_slot = slot
            yield index, seconds, slot, frame
        result.frames_decoded = index + 1


def _check_ending(result: VideoResult) -> None:
    """A stream that ends well before its header's frame count was probably cut off: say so, keep what was read."""
    expected, decoded = result.info.frame_count, result.frames_decoded
    if expected and decoded < expected - max(2, expected // 100):
        covered = _duration(decoded / result.info.fps)
        result.warnings.append(f"the video ended after {decoded} of the {expected} frames its header announces; the "
                               f"file may be truncated, and the results cover its first {covered}")
    skipped = [warning for warning in result.warnings if warning.startswith("frame ")]
    if len(skipped) > 3:  # one line, not thousands, for a badly damaged file
        result.warnings = [warning for warning in result.warnings if warning not in skipped]
        result.warnings.append(f"{len(skipped)} sampled frames could not be decoded and were skipped")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


# ------------------------------------------------------------------------------------------------ writing


class _CsvOutput:
    """The CSV, written under a temporary name beside its destination and moved into place only on success."""

    def __init__(self, path: str | os.PathLike, classes: tuple[str, ...]):
        self.path = Path(path)
        self.header = ["time_s", "frame", "face_id", "x", "y", "w", "h", *classes, "label"]

    def __enter__(self) -> "_CsvOutput":
        self.temporary = _temporary_beside(self.path)
        self.stream = self.temporary.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.stream)
        self.writer.writerow(self.header)
        return self

    def write(self, seconds: float, index: int, track: live.Track, classes: tuple[str, ...]) -> None:
        probabilities = track.probabilities  # (C,) smoothed
        self.writer.writerow([f"{seconds:.3f}", index, track.track_id, *(int(v) for v in track.box),
                              *(f"{p:.4f}" for p in probabilities), classes[int(np.argmax(probabilities))]])

    def __exit__(self, kind, error, trace) -> None:
        self.stream.close()
        _finish(self.temporary, self.path, keep=kind is None)


class _AnnotatedOutput:
    """The annotated copy: one frame per sample slot, repeated over slots with no decodable frame, so its timing
    matches the video's. Samples further apart than a second are each repeated at MIN_ANNOTATED_FPS or a little more:
    OpenCV writes unplayable WebM below 0.1 frames/s, and players handle such rates badly.

    Frames are encoded on a thread of their own (OpenCV lets go of the GIL while it encodes), so encoding (VP8 costs
    more than finding and classifying the faces) overlaps the analysis of the next frames; at most ENCODE_QUEUE frames
    wait, so memory stays bounded whatever the video's length."""

    def __init__(self, path: str | os.PathLike, step_s: float):
        self.path = Path(path)
        self.copies = max(1, math.ceil(step_s * MIN_ANNOTATED_FPS - 1e-9))  # frames written per sample slot
        self.fps = self.copies / step_s
        suffix = self.path.suffix.lower()
        if suffix not in WRITERS:
            raise VideoError(f"Cannot write an annotated video as {suffix or 'a file without an extension'}; use "
                             f"{', '.join(sorted(WRITERS))} ({BROWSER_FORMAT} plays in browsers).")
        self.fourcc = WRITERS[suffix]

    def __enter__(self) -> "_AnnotatedOutput":
        self.temporary = _temporary_beside(self.path)
        self.writer, self.size, self.last_slot = None, None, -1
        self.pending: queue.Queue = queue.Queue(maxsize=ENCODE_QUEUE)
        self.encoder: threading.Thread | None = None
        self.failure: BaseException | None = None
        return self

    def write(self, rgb: np.ndarray, slot: int) -> None:
        if self.writer is None:
            self._open(rgb.shape[1], rgb.shape[0])
        if self.failure is not None:
            raise VideoError(f"Writing {self.path.name} failed: {self.failure}") from self.failure
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # a new array: the caller may reuse `rgb`
        self.pending.put((bgr, max(1, slot - self.last_slot) * self.copies))  # waits while the queue is full
        self.last_slot = slot

    def _encode(self) -> None:
        """The encoder thread: write queued frames until the None that __exit__ sends; after a failure, keep taking
        frames (so the analysis never waits on a dead thread) and let write() report it."""
        while (item := self.pending.get()) is not None:
            if self.failure is not None:
                continue
            bgr, copies = item
            try:
                for _ in range(copies):
                    self.writer.write(bgr)
            except BaseException as error:  # noqa: BLE001 - handed to the analysing thread, which raises it
                self.failure = error

    def _open(self, width: int, height: int) -> None:
        self.size = (width - width % 2, height - height % 2)  # encoders want even sides
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # FFmpeg's note that WebM has no FourCCs
        try:
            self.writer = cv2.VideoWriter(str(self.temporary), cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                                          self.size)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not self.writer.isOpened():
            raise VideoError(f"OpenCV cannot write {self.fourcc} video to {self.path}; try another extension "
                             f"({', '.join(sorted(WRITERS))}).")
        self.encoder = threading.Thread(target=self._encode, name=f"encode {self.path.name}", daemon=True)
        self.encoder.start()

    def __exit__(self, kind, error, trace) -> None:
        if self.encoder is not None:
            self.pending.put(None)  # after the frames already queued
            self.encoder.join()
        if self.writer is not None:
            self.writer.release()
        failed = self.failure is not None
        _finish(self.temporary, self.path, keep=kind is None and self.writer is not None and not failed)
        if failed and kind is None:
            raise VideoError(f"Writing {self.path.name} failed: {self.failure}") from self.failure


def _temporary_beside(path: Path) -> Path:
    if not path.parent.is_dir():
        raise VideoError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    return Path(name)


def _finish(temporary: Path, path: Path, keep: bool) -> None:
    if keep:
        os.replace(temporary, path)
    else:
        temporary.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.video", description=__doc__.split("\n\n")[0])
    parser.add_argument("video", help=f"a video file ({FORMATS})")
    parser.add_argument("--csv", help="write one row per sampled frame and face here")
    parser.add_argument("--annotated", help=f"write a copy with boxes and labels here ({', '.join(sorted(WRITERS))}; "
                                            f"{BROWSER_FORMAT} plays in browsers)")
    parser.add_argument("--plot", help="draw each face's expressions over time into this PNG")
    parser.add_argument("--every", type=_interval_argument, default=None, metavar="SECONDS",
                        help="time between samples, e.g. 0.5s or 200ms; 0 = every frame "
                             f"(default: every frame, at most {DEFAULT_MAX_RATE:g} a second)")
    parser.add_argument("--smoothing", type=float, default=VideoConfig.smoothing_s, metavar="SECONDS",
                        help="time constant of the probabilities' smoothing; 0 turns it off (default %(default)s)")
    parser.add_argument("--max-faces", type=int, default=VideoConfig.max_faces, help="faces tracked per frame")
    parser.add_argument("--model", help="a .keras file (default: the one models/current.json names)")
    args = parser.parse_args(argv)
    if not (args.csv or args.annotated or args.plot):
        parser.error("say what to write: --csv, --annotated and/or --plot")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = VideoConfig(every_s=args.every, smoothing_s=args.smoothing, max_faces=args.max_faces)
        if args.annotated:
            _AnnotatedOutput(args.annotated, 1.0)  # a bad extension fails now, not after the whole video
        info = probe(args.video)
        from fer.predict import load_predictor

        predictor = load_predictor(args.model)
        with _progress_bar(info) as progress:
            result = analyze_video(predictor, args.video, args.csv, args.annotated, config, progress=progress)
        if args.plot:
            result.timeline.save_plot(args.plot, title=Path(args.video).name)
    except (FerError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.video}: {info.describe()}; {result.frames_sampled} frames sampled, one every "
          f"{result.step_s:.3g} s; {len(result.timeline.faces)} face(s) tracked, {result.rows} rows")
    if result.timeline.faces:
        print(result.timeline.summary_table().to_string(index=False))
    for label, path in (("CSV", args.csv), ("annotated video", args.annotated), ("plot", args.plot)):
        if path:
            print(f"wrote {label}: {path}")
    return 0


def _interval_argument(text: str) -> float:
    try:
        return parse_interval(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@contextlib.contextmanager
def _progress_bar(info: VideoInfo) -> Iterator[Progress]:
    """A tqdm bar on stderr in frames of the video (tqdm comes with gradio, through huggingface_hub). It starts with
    the first analysed frame, after OpenCV's own notes on opening the annotated copy, so they do not cut into it."""
    from tqdm import tqdm

    bars = []

    def update(done: int, total: int) -> None:
        if not bars:  # disable=None: no bar when stderr is not a terminal
            bars.append(tqdm(total=info.frame_count or None, unit="frame", file=sys.stderr, dynamic_ncols=True,
                             disable=None))
        bars[0].update(done - bars[0].n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
