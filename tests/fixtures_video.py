"""Short video clips written in code with OpenCV's VideoWriter, for tests/test_video.py, test_app.py and test_browser.py.

    frames = moving_astronaut(astronaut, count=12)      # RGB frames: the astronaut sliding across a 480x360 canvas
    write_clip(tmp_path / "clip.mp4", frames, fps=10)   # mp4v; ".webm" gives VP8, ".avi" Motion JPEG
    bad = write_bad_videos(tmp_path, astronaut)         # {name: path} of the files BAD_VIDEOS lists

Clips are tiny (a few hundred kB at most) so the tests stay fast.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CANVAS = (480, 360)  # width, height
PERSON = 360         # the astronaut photo is shrunk to this square: her face is then about 65 px
FOURCC = {".mp4": "mp4v", ".webm": "VP80", ".avi": "MJPG"}

# Files fer.video must refuse, and words its error must contain.
BAD_VIDEOS = {
    "empty.mp4": "empty",
    "notes.mp4": "text file",
    "playlist.m3u8": "text file",     # an HLS playlist would make FFmpeg open what it names: it must never get there
    "photo.jpg": "photo, not a video",
    "document.mp4": "PDF",
    "truncated.mp4": "truncated",     # mp4v keeps its index at the end: half a file does not open
    "zero_frames.mp4": "hold no frames",
    "unknown_codec.avi": "codec",     # a Motion JPEG AVI whose header names a codec nobody has
    "missing.mp4": "No such file",
    "folder.mp4": "not a file",
}


def moving_astronaut(astronaut: np.ndarray, count: int, travel: int = CANVAS[0] - PERSON) -> list[np.ndarray]:
    """`count` RGB (360, 480, 3) frames: the astronaut on a gray canvas, moving `travel` px to the right in all."""
    person = cv2.resize(astronaut, (PERSON, PERSON), interpolation=cv2.INTER_AREA)
    frames = []
    for index in range(count):
        frame = np.full((CANVAS[1], CANVAS[0], 3), 110, np.uint8)
        left = round(index * travel / max(1, count - 1))
        frame[:, left:left + PERSON] = person
        frames.append(frame)
    return frames


def two_people(astronaut: np.ndarray, count: int) -> list[np.ndarray]:
    """`count` RGB (360, 800, 3) frames: the astronaut moving right on the left, her mirror image still on the right."""
    person = cv2.resize(astronaut, (PERSON, PERSON), interpolation=cv2.INTER_AREA)
    frames = []
    for index in range(count):
        frame = np.full((PERSON, 800, 3), 110, np.uint8)
        left = round(index * 40 / max(1, count - 1))
        frame[:, left:left + PERSON] = person
        frame[:, 800 - PERSON:] = person[:, ::-1]
        frames.append(frame)
    return frames


def blank_frames(count: int, size: tuple[int, int] = (64, 48)) -> list[np.ndarray]:
    return [np.full((size[1], size[0], 3), 20 * index % 255, np.uint8) for index in range(count)]


def write_clip(path: str | Path, frames: list[np.ndarray], fps: float, fourcc: str | None = None) -> Path:
    """Write RGB frames as a video; the codec follows the extension (FOURCC) unless `fourcc` is given."""
    path = Path(path)
    height, width = frames[0].shape[:2] if frames else (48, 64)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*(fourcc or FOURCC[path.suffix])), fps,
                             (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_bad_videos(folder: Path, astronaut: np.ndarray) -> dict[str, Path]:
    paths = {name: folder / name for name in BAD_VIDEOS}
    paths["empty.mp4"].write_bytes(b"")
    paths["notes.mp4"].write_text("Session notes: nothing to see here.\n" * 20)
    paths["playlist.m3u8"].write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    paths["photo.jpg"].write_bytes(jpeg.tobytes())
    paths["document.mp4"].write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    whole = write_clip(folder / "whole.mp4", blank_frames(10), fps=10).read_bytes()
    paths["truncated.mp4"].write_bytes(whole[: len(whole) // 2])
    write_clip(paths["zero_frames.mp4"], [], fps=10)
    motion_jpeg = write_clip(folder / "motion_jpeg.avi", blank_frames(10), fps=10).read_bytes()
    paths["unknown_codec.avi"].write_bytes(motion_jpeg.replace(b"MJPG", b"QQQQ"))
    paths["folder.mp4"].mkdir()
    return paths
