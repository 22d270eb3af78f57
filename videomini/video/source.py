"""Opening a video file with PyAV and reading its stream's clock: the pieces every PyAV file reader shares (live
sources open their URLs and devices in videomini/live/sources.py).

Times are seconds from the video stream's first presentation time (`stream_origin`); rotation is degrees
clockwise (the legacy `rotate` tag, else the display matrix, which PyAV reports counter-clockwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videomini.video.errors import NotAVideo, NoVideoStream, VideoNotFound

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}  # asked about as stills
DEFAULT_SEEK_GAP_S = 10.0  # used when the keyframe interval is unknown
MIN_SEEK_GAP_S = 2.0  # never seek for a target closer than this: decoding through is cheaper


def check_path(path: str | Path) -> Path:
    """The path as a Path, after the checks that need no decoder: it exists, is a file, is not empty."""
    p = Path(path)
    if not p.exists():
        raise VideoNotFound(p, "no such file")
    if p.is_dir():
        raise NotAVideo(p, "is a directory, not a video file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise NotAVideo(p, f"cannot read file ({e.strerror})") from None
    if size == 0:
        raise NotAVideo(p, "empty file (0 bytes)")
    return p


def open_container(source: str | Path) -> Any:
    """An open PyAV container that holds a video stream, or a one-line `VideoError` naming the file."""
    import av

    name = str(source)
    try:
        container = av.open(name, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        if "moov atom not found" in str(e) or Path(name).suffix.lower() in (".mp4", ".mov", ".m4v"):
            reason = f"not a readable video (truncated or not a media file: {reason})"
        raise NotAVideo(name, reason) from None
    except (OSError, UnicodeDecodeError) as e:
        raise NotAVideo(name, f"cannot open ({e})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise NoVideoStream(name, f"no video stream (contains: {', '.join(kinds)})")
    return container


def stream_origin(stream: Any) -> float:
    """The stream's first presentation time in seconds: time zero of every timestamp we report."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def cw_from_ccw(ccw: float | None) -> int:
    """PyAV's counter-clockwise frame rotation as clockwise degrees in {0, 90, 180, 270}."""
    return int(round(-float(ccw or 0.0) / 90.0)) * 90 % 360


def rotation_cw(container: Any, stream: Any) -> int:
    """Clockwise display rotation in degrees: the legacy `rotate` tag, else the first frame's display matrix
    (decodes one frame, then seeks back to the start)."""
    tag = stream.metadata.get("rotate")
    if tag is not None:
        try:
            return int(float(tag)) % 360
        except ValueError:
            pass
    return cw_from_ccw(_rotation_from_first_frame(container, stream))


def _rotation_from_first_frame(container: Any, stream: Any) -> float:
    try:
        for frame in container.decode(stream):
            return float(frame.rotation or 0.0)
    except Exception:
        return 0.0
    finally:
        try:
            container.seek(0)
        except Exception:
            pass
    return 0.0


def keyframe_interval_s(stream: Any) -> float | None:
    """The mean time between keyframes from the container's index (None without an index)."""
    try:
        stamps = [e.timestamp for e in stream.index_entries if e.is_keyframe]
    except Exception:
        return None
    if len(stamps) < 2:
        return None
    return float((stamps[-1] - stamps[0]) / (len(stamps) - 1) * stream.time_base)


def seek_gap_s(stream: Any, override_s: float | None = None) -> float:
    """How far ahead the next target must be to seek rather than decode through: twice the keyframe interval
    (a seek lands on the keyframe before the target, so a shorter gap would decode the same frames again)."""
    if override_s is not None:
        return override_s
    gop = keyframe_interval_s(stream)
    return max(2 * gop if gop else DEFAULT_SEEK_GAP_S, MIN_SEEK_GAP_S)
