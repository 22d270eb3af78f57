"""The official LLaVA-Mini evaluation's frame sampling, reproduced for bit-exact comparison with the reference:
N frames at segment midpoints, N = total_frames // (avg_fps / fps). `reference_timestamps` turns those frames into
target times, so the streaming sampler (`sample_frames(sampling="reference")`) returns exactly them."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from videomini.config import FPS
from videomini.errors import first_line
from videomini.video import source
from videomini.video.errors import DecodeError
from videomini.video.info import probe
from videomini.video.pyav_backend import decoding_stream
from videomini.video.source import check_path, cw_from_ccw, rotation_cw, stream_origin
from videomini.video.timeline import FALLBACK_FPS, rotate

REFERENCE_FRAME_SIZE = (336, 336)  # (width, height): the reference squashes every video frame to this first


def uniform_frame_indices(n_frames_total: int, n: int) -> list[int]:
    """The official evaluation's sampling: `n` segment midpoints over `n_frames_total` frames.

    Segment size (total-1)/n; index = (round(size*i) + round(size*(i+1))) // 2 with numpy's round-half-even.
    """
    if n_frames_total < 1 or n < 1:
        raise ValueError(f"need at least one frame and n >= 1, got total={n_frames_total}, n={n}")
    seg = float(n_frames_total - 1) / n
    return [(int(np.round(seg * i)) + int(np.round(seg * (i + 1)))) // 2 for i in range(n)]


def reference_n_frames(n_frames_total: int, avg_fps: float, fps: float = FPS) -> int:
    """How many frames the reference takes: total // (avg_fps / fps), at most total, at least 1.

    (The reference computes `int(total // avg_fps)` at 1 fps and fails on videos shorter than 1 s; we take 1.)
    """
    return max(1, min(n_frames_total, int(n_frames_total // (avg_fps / fps))))


def _frame_times_pyav(path: Path) -> tuple[np.ndarray, float]:
    """Every frame's presentation time in display order (seconds on the sampler's clock), from one demux pass
    (no decoding), and the stream's average frame rate."""
    container = source.open_container(path)
    try:
        stream = container.streams.video[0]
        avg = float(stream.average_rate or stream.guessed_rate or 0.0)
        stamps = array("d")
        for packet in container.demux(stream):
            if packet.size:
                pts = packet.pts if packet.pts is not None else packet.dts
                stamps.append(math.nan if pts is None else float(pts * stream.time_base))
        times = np.frombuffer(stamps, dtype=np.float64) if len(stamps) else np.zeros(0)
        if np.isnan(times).any():  # no timestamps in the container: frames at the average rate
            return np.arange(len(times)) / (avg or FALLBACK_FPS), avg
        return np.sort(times) - stream_origin(stream), avg
    finally:
        container.close()


def _count_frames_pyav(path: Path) -> tuple[int, float]:
    times, avg = _frame_times_pyav(path)
    return len(times), avg


def reference_timestamps(path: str | Path, fps: float = FPS, max_frames: int | None = None) -> np.ndarray:
    """Target times that make the streaming sampler return exactly the frames the official evaluation takes.

    N = `reference_n_frames` (capped by `max_frames`), frame indices = `uniform_frame_indices` (segment centres:
    frames 15, 45, 74, ... of a 30 fps video at 1 fps); each target lies halfway between its frame and the next,
    so every backend's clock finds that frame. Counting frames is one demux pass, without decoding.
    """
    p = check_path(path)
    times, avg = _frame_times_pyav(p)
    if len(times) == 0 or not avg:
        raise DecodeError(p, "the video stream holds no frames")
    n = reference_n_frames(len(times), avg, fps)
    indices = np.asarray(uniform_frame_indices(len(times), min(n, max_frames) if max_frames else n))
    following = np.append(times[1:], times[-1] + 1.0 / avg)
    return (times[indices] + following[indices]) / 2


def _pyav_frames_by_index(path: Path, indices: Sequence[int], max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    container = source.open_container(path)
    try:
        stream, width, height = decoding_stream(container, max_side)
        rotation = rotation_cw(container, stream)
        origin = stream_origin(stream)
        wanted: dict[int, int] = {}
        for i in indices:
            wanted[i] = wanted.get(i, 0) + 1
        got: dict[int, tuple[np.ndarray, float]] = {}
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                image = frame.to_ndarray(format="rgb24", width=width, height=height)
                got[k] = (rotate(image, rotation), float(frame.pts * stream.time_base) - origin)
                if len(got) == len(wanted):
                    break
    finally:
        container.close()
    missing = [i for i in indices if i not in got]
    if missing:
        raise DecodeError(path, f"frame {missing[0]} could not be decoded")
    return np.stack([got[i][0] for i in indices]), np.array([got[i][1] for i in indices], np.float64)


def sample_uniform(path: str | Path, n: int, max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`n` frames at segment midpoints (the official evaluation's uniform sampling), decoded with PyAV.

    Returns `(frames (n,H,W,3) uint8, timestamps_s (n,))`.
    """
    p = check_path(path)
    total, _ = _count_frames_pyav(p)
    if total == 0:
        raise DecodeError(p, "the video stream holds no frames")
    return _pyav_frames_by_index(p, uniform_frame_indices(total, n), max_side)


def reference_video_frames(path: str | Path, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Frames and frame indices exactly as the reference selects them (decord when installed, as it used).

    Returns `(frames (N,H,W,3) uint8 at the stored size, indices (N,) int64)`.
    """
    p = check_path(path)
    try:
        import decord
    except ImportError:
        decord = None
    if decord is not None and not probe(p).rotation:  # decord mis-decodes rotated videos: PyAV below
        try:
            reader = decord.VideoReader(str(p), ctx=decord.cpu(0))
            total, avg = len(reader), float(reader.get_avg_fps())
            indices = uniform_frame_indices(total, reference_n_frames(total, avg, fps))
            frames = reader.get_batch(indices).asnumpy()
            return frames, np.asarray(indices, dtype=np.int64)
        except decord.DECORDError as e:
            raise DecodeError(p, f"decord cannot read this file ({first_line(e)[:200]})") from None
    total, avg = _count_frames_pyav(p)
    if total == 0 or not avg:
        raise DecodeError(p, "the video stream holds no frames")
    indices = uniform_frame_indices(total, reference_n_frames(total, avg, fps))
    container = source.open_container(p)
    try:
        stream = container.streams.video[0]
        keep = set(indices)
        frames = {k: rotate(f.to_ndarray(format="rgb24"), cw_from_ccw(f.rotation))
                  for k, f in enumerate(container.decode(stream)) if k in keep}
    finally:
        container.close()
    return np.stack([frames[i] for i in indices]), np.asarray(indices, dtype=np.int64)
