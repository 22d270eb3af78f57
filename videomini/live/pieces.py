"""A piece of a live stream as a video file: its sampled frames (1 fps, the encoder's 336 x 336) encoded with
PyAV at their own times, so a library can re-decode any of them later exactly as it does for indexed files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

PIECE_CODEC = "libx264"
PIECE_TIME_BASE = Fraction(1, 1000)  # millisecond timestamps


def write_piece_video(path: str | Path, frames: Sequence[np.ndarray], times_s: Sequence[float]) -> Path:
    """Frames (h, w, 3) uint8 shown at `times_s` (seconds from the piece's start, increasing) -> an MP4 at `path`,
    written to a temporary name, fsynced and renamed (a crash leaves no half-written piece under the name)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".partial")
    height, width = frames[0].shape[:2]
    with av.open(str(temp), mode="w", format="mp4") as container:
        stream = container.add_stream(PIECE_CODEC, rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = PIECE_TIME_BASE
        stream.codec_context.time_base = PIECE_TIME_BASE
        stream.options = {"crf": "20", "preset": "veryfast", "g": "1"}  # every frame a keyframe: exact seeks
        for frame, t in zip(frames, times_s):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = int(round(float(t) / PIECE_TIME_BASE))
            video_frame.time_base = PIECE_TIME_BASE
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temp, path)
    return path
