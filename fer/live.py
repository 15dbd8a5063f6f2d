"""The Live tab's per-frame work: track faces across webcam frames, classify them in one batch, smooth the labels.

    session = LiveSession()
    for frame in frames:                                   # RGB uint8 (H, W, 3)
        picture, sampled = process_frame(predictor, frame, session)
    series_table(session)                                  # the session's expressions over time, for a line plot

Detection (the slow part) runs on a downscaled copy every few frames; in between, faces keep their boxes. A fresh
detection is matched to the faces already tracked by box overlap (IoU), so each face keeps its smoothed
probabilities. Smoothing is exponential in time, so labels change at the same pace at 5 or 25 frames/s.

All state lives in the LiveSession the caller passes in (the app keeps one per visitor in gr.State). Recorded
videos (fer.video) use the same tracker through `track_faces`, `visible_tracks` and `draw_tracks`, with the video's
own clock for `now`.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pandas as pd

from fer import annotate
from fer.errors import ImageError
from fer.faces import Box, detect_faces
from fer.preprocess import preprocess_face


@dataclasses.dataclass(frozen=True)
class LiveConfig:
    detect_every: int = 3            # run the detector on every n-th frame; other frames reuse the tracked boxes
    detect_max_side: int = 240       # detection image size: webcam faces are large (>= 53 px of 640 are found), and
                                     # 240 px is 6x cheaper than the 640 px used for photos
    max_faces: int = 5               # faces tracked and classified per frame, largest first
    match_iou: float = 0.3           # a detection continues a tracked face when their boxes overlap at least this much
    keep_missed: int = 1             # detections a tracked face may be missing from before it is dropped
    redetect_after_s: float = 1.0    # a longer gap between frames (stream paused) forces a fresh detection
    smoothing_s: float = 0.5         # time constant of the exponential smoothing of probabilities
    sample_every_s: float = 1.0      # how often the session's emotion-over-time series takes a point
    max_samples: int = 3600          # an hour at one point per second; older points are dropped
    display_max_side: int = 640      # frames are sent back at most this large


@dataclasses.dataclass
class Track:
    """One face followed across frames."""

    track_id: int
    box: Box                         # (x, y, w, h) in the latest frame's pixels
    probabilities: np.ndarray | None = None  # (C,) smoothed, in the predictor's class order
    missed: int = 0


@dataclasses.dataclass
class LiveSession:
    """One visitor's stream: tracked faces and the emotion-over-time series. Mutated by `process_frame`."""

    tracks: list[Track] = dataclasses.field(default_factory=list)
    frame_count: int = 0
    next_track_id: int = 1
    started_at: float | None = None  # time of the first frame
    last_frame_at: float | None = None
    last_sample_at: float | None = None
    classes: tuple[str, ...] = ()
    # Samples of the largest face's smoothed probabilities: seconds since the first frame, and (C,) probabilities.
    sample_times: list[float] = dataclasses.field(default_factory=list)
    sample_probabilities: list[np.ndarray] = dataclasses.field(default_factory=list)


def iou(first: Box, second: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes, in [0, 1]."""
    ax, ay, aw, ah = first
    bx, by, bw, bh = second
    overlap_w = min(ax + aw, bx + bw) - max(ax, bx)
    overlap_h = min(ay + ah, by + bh) - max(ay, by)
    if overlap_w <= 0 or overlap_h <= 0:
        return 0.0
    overlap = overlap_w * overlap_h
    return overlap / float(aw * ah + bw * bh - overlap)


def match_boxes(tracks: list[Track], boxes: list[Box], min_iou: float) -> dict[int, int]:
    """Greedy one-to-one matching, best overlap first: {index in boxes: index in tracks}."""
    pairs = sorted(((iou(track.box, box), box_index, track_index)
                    for track_index, track in enumerate(tracks) for box_index, box in enumerate(boxes)), reverse=True)
    matched: dict[int, int] = {}
    used_tracks: set[int] = set()
    for overlap, box_index, track_index in pairs:
        if overlap < min_iou:
            break
        if box_index in matched or track_index in used_tracks:
            continue
        matched[box_index] = track_index
        used_tracks.add(track_index)
    return matched


def _update_tracks(session: LiveSession, boxes: list[Box], config: LiveConfig) -> None:
    matched = match_boxes(session.tracks, boxes, config.match_iou)
    kept: list[Track] = []
    for box_index, box in enumerate(boxes):
        if box_index in matched:
            track = session.tracks[matched[box_index]]
            track.box, track.missed = box, 0
        else:
            track = Track(session.next_track_id, box)
            session.next_track_id += 1
        kept.append(track)
    matched_tracks = set(matched.values())
    for track_index, track in enumerate(session.tracks):
        if track_index not in matched_tracks and track.missed < config.keep_missed:
            track.missed += 1
            kept.append(track)
    kept.sort(key=lambda track: track.box[2] * track.box[3], reverse=True)
    session.tracks = kept[:config.max_faces]


def smoothing_weight(elapsed_s: float, smoothing_s: float) -> float:
    """Weight of a new measurement after `elapsed_s` seconds: 1 - exp(-elapsed / time constant)."""
    if smoothing_s <= 0:
        return 1.0
    return 1.0 - math.exp(-max(elapsed_s, 0.0) / smoothing_s)


def process_frame(predictor, frame: np.ndarray, session: LiveSession, config: LiveConfig = LiveConfig(),
                  now: float | None = None) -> tuple[np.ndarray, bool]:
    """Track and classify the faces in one webcam frame; update `session`; return the annotated frame.

    `frame` is RGB uint8 (H, W, 3) (or gray (H, W)). Returns the frame shrunk to `config.display_max_side` with each
    tracked face boxed and labelled with its smoothed top class, and whether a point was added to the session's
    series (so the caller knows when to redraw the plot). `now` (seconds, monotonic) is for tests.
    """
    now = time.monotonic() if now is None else now
    frame = _as_rgb(frame)
    track_faces(predictor, frame, session, config, now)
    sampled = _maybe_sample(session, now, config)
    return draw_tracks(frame, session.tracks, session.classes, config.display_max_side), sampled


def track_faces(predictor, frame: np.ndarray, session: LiveSession, config: LiveConfig, now: float) -> None:
    """The tracker's step on one RGB uint8 (H, W, 3) frame taken at `now` seconds: detect (every
    `config.detect_every` frames), match detections to the session's tracks, classify every tracked face in one
    batch and smooth each face's probabilities over time. Updates `session` in place."""
    if session.classes and session.classes != tuple(predictor.classes):
        raise ValueError("This live session was started with a different model; start a new session.")
    session.classes = tuple(predictor.classes)
    gap = None if session.last_frame_at is None else now - session.last_frame_at
    if session.started_at is None:
        session.started_at = now
    if gap is not None and gap > config.redetect_after_s:
        session.tracks = []  # after a pause the old boxes say nothing about where faces are now

    if not session.tracks or session.frame_count % config.detect_every == 0:
        boxes = detect_faces(frame, max_side=config.detect_max_side, max_faces=config.max_faces)
        _update_tracks(session, boxes, config)

    if session.tracks:
        crops = np.stack([preprocess_face(frame, track.box, predictor.preprocess_config) for track in session.tracks])
        probabilities = predictor.predict_faces(crops)  # (N, C), one batch for every face in the frame
        weight = 1.0 if gap is None else smoothing_weight(gap, config.smoothing_s)
        for track, measured in zip(session.tracks, probabilities):
            if track.probabilities is None:
                track.probabilities = measured.astype(np.float32)
            else:
                track.probabilities = ((1.0 - weight) * track.probabilities + weight * measured).astype(np.float32)

    session.frame_count += 1
    session.last_frame_at = now


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ImageError("A webcam frame must be a uint8 NumPy array (RGB (H, W, 3) or gray (H, W)).")
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, :3])
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise ImageError(f"A webcam frame must have shape (H, W), (H, W, 3) or (H, W, 4); got {frame.shape}.")


def _maybe_sample(session: LiveSession, now: float, config: LiveConfig) -> bool:
    if session.last_sample_at is not None and now - session.last_sample_at < config.sample_every_s:
        return False
    tracked = visible_tracks(session)
    if not tracked:
        return False  # no face in view: the series has a gap rather than a made-up value
    session.last_sample_at = now
    session.sample_times.append(round(now - session.started_at, 2))
    session.sample_probabilities.append(tracked[0].probabilities.copy())  # the largest face
    if len(session.sample_times) > config.max_samples:
        del session.sample_times[0], session.sample_probabilities[0]
    return True


def visible_tracks(session: LiveSession) -> list[Track]:
    """The tracks with probabilities whose face was found at the latest detection, largest first."""
    return [track for track in session.tracks if track.probabilities is not None and track.missed == 0]


def draw_tracks(frame: np.ndarray, tracks: list[Track], classes: tuple[str, ...], max_side: int | None,
                numbered: bool = False) -> np.ndarray:
    """`frame` shrunk to `max_side`, each classified track boxed and captioned with its smoothed top class (after its
    id when `numbered`, as in "2: happy 91%")."""
    tracks = [track for track in tracks if track.probabilities is not None]
    named = [dict(zip(classes, track.probabilities.tolist())) for track in tracks]
    return annotate.draw_faces(
        frame,
        [track.box for track in tracks],
        [annotate.caption(probabilities, prefix=f"{track.track_id}: " if numbered else "")
         for track, probabilities in zip(tracks, named)],
        [annotate.colour_for(probabilities) for probabilities in named],
        max_side=max_side,
    )


def current_probabilities(session: LiveSession) -> dict[str, float] | None:
    """The largest tracked face's smoothed probabilities, or None when no face is in view."""
    for track in visible_tracks(session):
        return dict(zip(session.classes, (float(p) for p in track.probabilities)))
    return None


def series_table(session: LiveSession) -> pd.DataFrame:
    """The session's series in long format for a line plot: columns seconds, expression, probability."""
    return long_table(session.sample_times, session.sample_probabilities, session.classes)


def long_table(seconds, probabilities, classes) -> pd.DataFrame:
    """T times and (T, C) probabilities -> the Live chart's long format: columns seconds, expression, probability."""
    if not len(seconds):
        return pd.DataFrame({"seconds": pd.Series(dtype=float), "expression": pd.Series(dtype=str),
                             "probability": pd.Series(dtype=float)})
    probabilities = np.stack(probabilities)  # (T, C)
    count, class_count = probabilities.shape
    return pd.DataFrame({
        "seconds": np.repeat(np.asarray(seconds, dtype=float), class_count),
        "expression": np.tile(np.asarray(classes, dtype=object), count),
        "probability": probabilities.reshape(-1).astype(float),
    })


def top_share(probabilities, classes) -> dict[str, float]:
    """(T, C) probabilities -> the fraction of the T samples in which each class was the most probable."""
    winners = np.argmax(np.stack(probabilities), axis=1)
    counts = np.bincount(winners, minlength=len(classes))
    return {name: float(count) / len(winners) for name, count in zip(classes, counts)}


def recent_share(session: LiveSession, window_s: float = 60.0) -> dict[str, float]:
    """Over the last `window_s` seconds of samples, the fraction of samples each class was the top one.

    A sustained high share of sad plus neutral is what the study's early-warning use looks for; single frames mean
    little. Empty when there are no samples yet.
    """
    if not session.sample_times:
        return {}
    latest = session.sample_times[-1]
    recent = [probabilities for seconds, probabilities in zip(session.sample_times, session.sample_probabilities)
              if seconds >= latest - window_s]
    return top_share(recent, session.classes)
