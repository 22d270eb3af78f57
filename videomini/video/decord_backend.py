"""The decord backend (optional extra): every frame time is known up front, so each batch of targets maps to
frame indices (`timeline.plan`) decoded in one `get_batch`. Refuses rotated videos, which decord 0.6
mis-decodes, and damaged files, which it cannot open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from videomini.errors import first_line
from videomini.video.errors import BackendUnavailable, DecodeError
from videomini.video.info import VideoInfo
from videomini.video.timeline import FALLBACK_FPS, Warn, plan, scaled_size


def _decord_reason(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text.split("Error: ")[-1][:200] if "Error: " in text else text[:200]


def decord_frames(path: Path, wanted: Iterator[float], max_side: int | None, info: VideoInfo,
                  batch_size: int) -> Iterator[tuple[np.ndarray, float] | Warn]:
    """Stream (frame, pts) for each target time, decoding `batch_size` targets per decord call."""
    try:
        import decord
    except ImportError:
        raise BackendUnavailable(path, "backend 'decord' is not installed (pip install 'videomini[decord]')") from None
    if info.rotation:
        # decord 0.6 applies the display matrix itself and returns squeezed or mis-sized frames.
        raise BackendUnavailable(path, f"backend 'decord' mis-decodes rotated videos (rotation {info.rotation}); "
                                       "use backend='pyav' or 'ffmpeg'")
    width, height = scaled_size(info.width, info.height, max_side)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=0)
        stamps = reader.get_frame_timestamp(range(len(reader)))
    except decord.DECORDError as e:
        raise DecodeError(path, f"decord cannot read this file (damaged or truncated? backend='pyav' reads what "
                                f"exists): {_decord_reason(e)}") from None
    pts = stamps[:, 0].astype(np.float64)
    pts = pts - pts.min() if len(pts) else pts
    frame_s = 1.0 / (info.fps or FALLBACK_FPS)
    last_dur = (info.duration_s - pts[-1]) if len(pts) and info.duration_s > pts[-1] else frame_s
    end = float(pts[-1] + last_dur) if len(pts) else 0.0
    planned = plan(pts, end, wanted)
    while True:
        chunk = [ti[1] for _, ti in zip(range(batch_size), planned)]
        if not chunk:
            break
        unique = sorted(set(chunk))
        try:
            decoded = reader.get_batch(unique).asnumpy()
        except decord.DECORDError as e:
            raise DecodeError(path, f"decord failed at {pts[unique[0]]:.2f} s ({first_line(e)[:200]})") from None
        by_index = dict(zip(unique, decoded))
        for i in chunk:
            yield by_index[i], float(pts[i])
    del reader
