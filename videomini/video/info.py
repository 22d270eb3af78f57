"""`probe`: what a video holds, read from its header and packet index without decoding it (one frame at most,
for the rotation), with the duration checked against where the packets really end."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from videomini.video import source
from videomini.video.source import check_path, rotation_cw, stream_origin

HEADER_SLACK_FRAMES, HEADER_SLACK_FRACTION = 3, 0.05  # a header duration off by more than this is not believed
TAIL_WINDOW_S = 30.0  # without a keyframe index, the true end is measured from the packets of the last 30 s


@dataclass
class VideoInfo:
    """What `probe` learns without decoding. Width/height are after rotation; rotation is degrees clockwise."""

    path: str
    duration_s: float
    fps: float
    frame_count: int | None
    width: int
    height: int
    rotation: int
    codec: str
    has_audio: bool
    container: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe(path: str | Path) -> VideoInfo:
    """Read a video's header (no full decode): duration, average fps, frame count, size, rotation, codecs."""
    p = check_path(path)
    container = source.open_container(p)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0.0)
        frame_count = _frame_count(stream)
        duration = _header_duration(container, stream, frame_count, fps)
        # A header can lie about the duration; the sample index (when there is one) cannot.
        rotation = rotation_cw(container, stream)  # decodes the first frame: before seeking to the end
        measured = _measured_end(container, stream, duration, fps)
        tolerance = max(HEADER_SLACK_FRAMES / max(fps, 1.0), HEADER_SLACK_FRACTION * (measured or 0.0))
        if measured is not None and abs(measured - duration) > tolerance:
            duration = measured
        codec_ctx = stream.codec_context
        width, height = codec_ctx.width, codec_ctx.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=str(p), duration_s=round(duration, 6), fps=round(fps, 6), frame_count=frame_count,
            width=width, height=height, rotation=rotation, codec=codec_ctx.name,
            has_audio=bool(container.streams.audio), container=container.format.name,
        )
    finally:
        container.close()


def _frame_count(stream: Any) -> int | None:
    if stream.frames:
        return int(stream.frames)
    try:
        return len(stream.index_entries) or None
    except Exception:
        return None


def _header_duration(container: Any, stream: Any, frame_count: int | None, fps: float) -> float:
    """The duration the header states: the stream's, else the container's less the stream's start, else
    frames / fps."""
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / 1_000_000) - max(stream_origin(stream), 0.0)
    if frame_count and fps:
        return frame_count / fps
    return 0.0


def _measured_end(container: Any, stream: Any, header_duration: float, fps: float) -> float | None:
    """Where the video really ends: the largest packet end time in the last keyframe interval.

    Reads packets only (no decoding) after one seek; None when the tail cannot be read (e.g. truncated).
    """
    tb = stream.time_base
    origin = stream_origin(stream)
    try:
        entries = stream.index_entries
        keys = [e.timestamp for e in entries if e.is_keyframe]
        size = Path(container.name).stat().st_size
        if any(e.pos + e.size > size for e in entries):
            return None  # the index points past the end of the file: truncated, the header is the intent
    except Exception:
        keys = []
    try:
        if keys:
            container.seek(int(keys[-1]), stream=stream, backward=True)
        elif header_duration > TAIL_WINDOW_S:
            container.seek(int((origin + header_duration - TAIL_WINDOW_S) / tb), stream=stream, backward=True)
        end = None
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            dur = packet.duration * tb if packet.duration else (1.0 / fps if fps else 0.0)
            t = float(packet.pts * tb) - origin + float(dur)
            end = t if end is None else max(end, t)
        return end
    except Exception:
        return None
