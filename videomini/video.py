"""Video probing and streaming frame sampling (PyAV by default; decord and the ffmpeg CLI as alternatives).

The official LLaVA-Mini code decodes every sampled frame of a video into RAM at once; here frames stream out
in fixed-size batches, so memory is bounded by the batch whatever the video's length.

Sampling rule (the same for every backend):
    For each target time t_k = start + k / fps (start = `start_s` or 0; t_k < `end_s` and < the end of the
    video), return the frame that is on screen at t_k: the last frame whose presentation time is <= t_k.
    Report that frame's own presentation time (not t_k). A frame that stays on screen over several targets
    (variable frame rate, slide shows) is returned once per target, with its own (repeated) time. Targets
    before the first frame are skipped. Times are seconds from the video stream's first presentation time.
    Rotation metadata is applied (frames come out upright) and `max_side` scales frames down early, in the
    decoder's converter, before they are copied into the batch.

Dense sampling decodes straight through (faster than seeking every second); a gap longer than twice the
keyframe interval between consecutive targets (sparse sampling, a late `start_s`, `read_frames_at`) seeks.
A truncated file yields the frames that exist and a `warnings.warn` that says how far decoding got.
Every expected failure raises a `VideoError` subclass whose one-line message names the file and the reason.

Backends: "pyav" (default; "auto" picks it), "decord" (optional extra; refuses rotated videos, which decord
0.6 mis-decodes, and damaged files, which it cannot open) and "ffmpeg" (ffmpeg-python builds the command; the
frame list comes from ffprobe, the frames from the fps filter with round=up, which implements the rule; the
plain fps filter picks frames about half a period late).

`uniform_frame_indices` / `reference_video_frames` reproduce the official evaluation's sampling (N frames at
segment midpoints, N = total_frames // (avg_fps / fps)), for bit-exact comparison with the reference.
"""

from __future__ import annotations

import math
import queue
from array import array
import shutil
import subprocess
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from videomini.errors import VideominiError, first_line

__all__ = [
    "VideoError", "VideoNotFound", "NotAVideo", "NoVideoStream", "DecodeError", "BackendUnavailable",
    "VideoInfo", "FrameBatches", "probe", "sample_frames", "read_frames_at", "uniform_frame_indices",
    "sample_uniform", "reference_video_frames", "reference_timestamps", "BACKENDS", "SAMPLINGS",
]

BACKENDS = ("pyav", "decord", "ffmpeg")
SAMPLINGS = ("fps", "reference")  # frames on screen at k/fps (default) | the official evaluation's segment centres
DEFAULT_SEEK_GAP_S = 10.0  # used when the keyframe interval is unknown
MIN_SEEK_GAP_S = 2.0  # never seek for a target closer than this: decoding through is cheaper
FALLBACK_FPS = 25.0  # a stream that declares no frame rate: frames last 1/25 s (PAL), as FFmpeg assumes
END_SLACK_FRAMES, END_SLACK_MIN_S = 2, 0.05  # decoding that stops earlier than this before the end "ends early"
HEADER_SLACK_FRAMES, HEADER_SLACK_FRACTION = 3, 0.05  # a header duration off by more than this is not believed
TAIL_WINDOW_S = 30.0  # without a keyframe index, the true end is measured from the packets of the last 30 s
EPS_S = 1e-6  # a frame at pts is on screen at t when pts <= t + EPS_S (absorbs float time-base rounding)


# ----------------------------------------------------------------------------------------------- errors


class VideoError(VideominiError):  # exit 1, HTTP 400
    """A video could not be read. The message is one line: `<file>: <reason>`."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the library said
        super().__init__(f"{self.path}: {self.reason}")


class VideoNotFound(VideoError, FileNotFoundError):
    """The path does not exist."""


class NotAVideo(VideoError):
    """The file is empty, not a media container, or unreadable."""


class NoVideoStream(VideoError):
    """The container holds no video stream (e.g. audio only)."""


class DecodeError(VideoError):
    """The container opened but no frame could be decoded (or the decoder failed)."""


class BackendUnavailable(VideoError):
    """The requested backend is not installed or cannot read this file."""


# ----------------------------------------------------------------------------------------------- probe


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


def _check_path(path: str | Path) -> Path:
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


def _open_av(path: Path):
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        if "moov atom not found" in str(e) or path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            reason = f"not a readable video (truncated or not a media file: {reason})"
        raise NotAVideo(path, reason) from None
    except (OSError, UnicodeDecodeError) as e:
        raise NotAVideo(path, f"cannot open ({e})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise NoVideoStream(path, f"no video stream (contains: {', '.join(kinds)})")
    return container


def _rotation_cw(container, stream) -> int:
    """Clockwise display rotation in degrees (0/90/180/270): the legacy `rotate` tag, else the display
    matrix (PyAV exposes it on decoded frames, counter-clockwise)."""
    tag = stream.metadata.get("rotate")
    if tag is not None:
        try:
            return int(float(tag)) % 360
        except ValueError:
            pass
    return _cw_from_ccw(_rotation_from_first_frame(container, stream))


def _cw_from_ccw(ccw: float) -> int:
    return int(round(-float(ccw or 0.0) / 90.0)) * 90 % 360


def _rotation_from_first_frame(container, stream) -> float:
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


def _stream_origin(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _keyframe_interval_s(stream) -> float | None:
    try:
        entries = stream.index_entries
        stamps = [e.timestamp for e in entries if e.is_keyframe]
    except Exception:
        return None
    if len(stamps) < 2:
        return None
    return float((stamps[-1] - stamps[0]) / (len(stamps) - 1) * stream.time_base)


def probe(path: str | Path) -> VideoInfo:
    """Read a video's header (no full decode): duration, average fps, frame count, size, rotation, codecs."""
    p = _check_path(path)
    container = _open_av(p)
    try:
        stream = container.streams.video[0]
        tb = stream.time_base
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0.0)
        frame_count = int(stream.frames) if stream.frames else None
        if frame_count is None:
            try:
                frame_count = len(stream.index_entries) or None
            except Exception:
                frame_count = None
        if stream.duration is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = float(container.duration / 1_000_000) - max(_stream_origin(stream), 0.0)
        elif frame_count and fps:
            duration = frame_count / fps
        else:
            duration = 0.0
        # A header can lie about the duration; the sample index (when there is one) cannot.
        rotation = _rotation_cw(container, stream)  # decodes the first frame: before seeking to the end
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


def _measured_end(container, stream, header_duration: float, fps: float) -> float | None:
    """Where the video really ends: the largest packet end time in the last keyframe interval.

    Reads packets only (no decoding) after one seek; None when the tail cannot be read (e.g. truncated).
    """
    tb = stream.time_base
    origin = _stream_origin(stream)
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


# ---------------------------------------------------------------------------------------------- helpers


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _rotate(frame: np.ndarray, rotation_cw: int) -> np.ndarray:
    if rotation_cw % 360 == 0:
        return frame
    return np.ascontiguousarray(np.rot90(frame, k=-(rotation_cw // 90)))


def _targets(start_s: float, fps: float, end_s: float | None, max_frames: int | None) -> Iterator[float]:
    k = 0
    while max_frames is None or k < max_frames:
        t = start_s + k / fps
        if end_s is not None and t >= end_s:
            return
        yield t
        k += 1


class _Warn(str):
    """A warning produced inside a backend, re-issued by the consumer's thread."""


# ------------------------------------------------------------------------------------------ PyAV backend


class _Damage:
    """Packets the decoder rejected: how many, the span of video time they cover, and the decoder's reason."""

    def __init__(self) -> None:
        self.count, self.reason = 0, ""
        self.first_s: float | None = None
        self.last_s: float | None = None

    def record(self, error: Exception, at_s: float | None = None) -> None:
        self.count += 1
        self.reason = getattr(error, "strerror", None) or first_line(error)
        if at_s is not None:
            self.first_s = at_s if self.first_s is None else min(self.first_s, at_s)
            self.last_s = at_s if self.last_s is None else max(self.last_s, at_s)

    def warning(self, path: Path, end_s: float, expected_end_s: float, frame_s: float) -> _Warn | None:
        """The one-line warning for a file that ends early or holds damaged data; None for a sound file."""
        what = f"{self.count} packet(s) could not be decoded: {self.reason}"
        if end_s < expected_end_s - max(END_SLACK_FRAMES * frame_s, END_SLACK_MIN_S):
            how = f" ({what})" if self.count else ""
            return _Warn(f"{path}: file ends early: decoded up to {end_s:.2f} s of {expected_end_s:.2f} s{how}")
        if not self.count:
            return None
        where = "" if self.first_s is None else f" between {self.first_s:.2f} s and {self.last_s:.2f} s"
        return _Warn(f"{path}: damaged video data{where} ({what}); the frames there are missing or repeat the "
                     "last good one")


def _decode_packet(packet: Any, damage: _Damage, origin: float) -> list:
    """The frames one packet decodes to; a packet the decoder rejects is recorded in `damage`."""
    import av

    try:
        return packet.decode()
    except (av.error.InvalidDataError, av.error.EOFError) as e:
        pts = packet.pts if packet.pts is not None else packet.dts
        damage.record(e, None if pts is None else float(pts * packet.time_base) - origin)
        return []


def _seek_gap(stream: Any, seek_gap_s: float | None) -> float:
    """How far ahead the next target must be to seek rather than decode through: twice the keyframe interval."""
    if seek_gap_s is not None:
        return seek_gap_s
    gop = _keyframe_interval_s(stream)
    return max(2 * gop if gop else DEFAULT_SEEK_GAP_S, MIN_SEEK_GAP_S)


def _decoding_stream(container: Any, max_side: int | None) -> tuple[Any, int, int]:
    """The container's video stream, set up for threaded decoding, and the size its frames are converted to."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return (stream, *_scaled_size(stream.codec_context.width, stream.codec_context.height, max_side))


def _pyav_frames(path: Path, targets: Iterator[float], max_side: int | None, expected_end_s: float,
                 seek_gap_s: float | None) -> Iterator[tuple[np.ndarray, float] | _Warn]:
    """Stream (frame, pts) for each target time; seeks when the next target is far ahead."""
    import av

    container = _open_av(path)
    try:
        stream, width, height = _decoding_stream(container, max_side)
        tb, origin = stream.time_base, _stream_origin(stream)
        default_dur = 1.0 / float(stream.average_rate or stream.guessed_rate or FALLBACK_FPS)
        seek_gap_s = _seek_gap(stream, seek_gap_s)

        def convert(frame) -> np.ndarray:
            image = frame.to_ndarray(format="rgb24", width=width, height=height,
                                     interpolation="AREA" if max_side else None)
            return _rotate(image, _cw_from_ccw(frame.rotation))

        def converted(shown: tuple) -> tuple:
            """(pts, frame, duration, image): the frame on screen, converted once however often it is sampled."""
            return shown if shown[3] is not None else (shown[0], None, shown[2], convert(shown[1]))

        def seek(t: float) -> None:
            container.seek(int((t + origin) / tb), stream=stream, backward=True, any_frame=False)

        next_t = next(targets, None)
        prev = None  # (pts_s, frame, duration_s, cached array)
        last_pts = None
        damage = _Damage()
        if next_t is not None and next_t > seek_gap_s:
            seek(next_t)
        reached_eof = False
        while next_t is not None and not reached_eof:
            seeked = False
            try:
                for packet in container.demux(stream):
                    for frame in _decode_packet(packet, damage, origin):
                        if frame.pts is None:
                            continue
                        pts = float(frame.pts * tb) - origin
                        dur = float(frame.duration * tb) if frame.duration else default_dur
                        if last_pts is not None and pts <= last_pts and prev is not None and pts <= prev[0]:
                            continue  # frames from before a seek point we already passed
                        last_pts = pts
                        while next_t is not None and prev is not None and next_t + EPS_S < pts:
                            prev = converted(prev)
                            yield prev[3], prev[0]
                            next_t = next(targets, None)
                        while next_t is not None and prev is None and next_t + EPS_S < pts:
                            next_t = next(targets, None)  # targets before the first frame: skipped
                        if next_t is None:
                            return
                        prev = (pts, frame, dur, None)
                        if next_t - pts > seek_gap_s:
                            seek(next_t)
                            seeked = True
                            break
                    if seeked:
                        break
                else:
                    reached_eof = True
            except av.error.FFmpegError as e:  # demuxer failure: treat like the end of the data
                damage.record(e)
                reached_eof = True
        if next_t is None:
            return
        # End of stream: the last frame stays on screen for its duration.
        if prev is None:
            if damage.count:
                raise DecodeError(path, f"no frame could be decoded ({damage.reason})")
            raise DecodeError(path, "the video stream holds no decodable frame")
        while next_t is not None and next_t + EPS_S < prev[0] + prev[2]:
            prev = converted(prev)
            yield prev[3], prev[0]
            next_t = next(targets, None)
        warning = damage.warning(path, prev[0] + prev[2], expected_end_s, default_dur)
        if warning is not None:
            yield warning
    finally:
        container.close()


# ---------------------------------------------------------------------------------------- decord backend


def _plan(pts_s: np.ndarray, end_s: float, targets: Iterable[float]) -> Iterator[tuple[float, int]]:
    """(target, index of the frame on screen at target) for targets before `end_s`; pts sorted ascending."""
    for t in targets:
        if t + EPS_S >= end_s:
            return
        i = int(np.searchsorted(pts_s, t + EPS_S, side="right")) - 1
        if i >= 0:
            yield t, i


def _decord_reason(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text.split("Error: ")[-1][:200] if "Error: " in text else text[:200]


def _decord_frames(path: Path, targets: Iterator[float], max_side: int | None, info: VideoInfo,
                   batch_size: int) -> Iterator[tuple[np.ndarray, float] | _Warn]:
    try:
        import decord
    except ImportError:
        raise BackendUnavailable(path, "backend 'decord' is not installed (pip install 'videomini[decord]')") from None
    if info.rotation:
        # decord 0.6 applies the display matrix itself and returns squeezed or mis-sized frames.
        raise BackendUnavailable(path, f"backend 'decord' mis-decodes rotated videos (rotation {info.rotation}); "
                                       "use backend='pyav' or 'ffmpeg'")
    width, height = _scaled_size(info.width, info.height, max_side)
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
    plan = _plan(pts, end, targets)
    while True:
        chunk = [ti[1] for _, ti in zip(range(batch_size), plan)]
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


# ---------------------------------------------------------------------------------------- ffmpeg backend


def _ffmpeg_binaries(path: Path) -> tuple[str, str]:
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if not ffmpeg or not ffprobe:
        raise BackendUnavailable(path, "backend 'ffmpeg' needs the ffmpeg and ffprobe binaries (apt-get install ffmpeg)")
    try:
        import ffmpeg as _  # noqa: F401  (ffmpeg-python)
    except ImportError:
        raise BackendUnavailable(path, "backend 'ffmpeg' needs ffmpeg-python (pip install 'videomini[ffmpeg]')") from None
    return ffmpeg, ffprobe


def _ffprobe_packets(path: Path, ffprobe: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Presentation times and durations of the first video stream's packets (demux only, no decode).

    Read as CSV lines straight into arrays: a JSON document for an hour of 30 fps video is tens of MB.
    """
    import ffmpeg as ffmpeg_python

    try:
        streams = ffmpeg_python.probe(str(path), cmd=ffprobe, select_streams="v:0").get("streams") or [{}]
    except ffmpeg_python.Error as e:
        reason = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        raise DecodeError(path, f"ffprobe failed ({reason[-1] if reason else 'unknown error'})") from None
    origin = float(streams[0].get("start_time", "nan"))
    pts_list, dur_list = array("d"), array("d")
    with subprocess.Popen([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            fields = line.strip().split(",")
            try:
                pts_list.append(float(fields[0]))
            except (ValueError, IndexError):
                continue
            try:
                dur_list.append(float(fields[1]))
            except (ValueError, IndexError):
                dur_list.append(float("nan"))
    pts, durs = np.frombuffer(pts_list, np.float64), np.frombuffer(dur_list, np.float64)
    order = np.argsort(pts, kind="stable")
    pts, durs = pts[order], durs[order]
    if not math.isfinite(origin):
        origin = float(pts[0]) if len(pts) else 0.0
    return pts - origin, durs, origin


def _ffmpeg_frames(path: Path, targets: Iterator[float], max_side: int | None, info: VideoInfo,
                   expected_end_s: float) -> Iterator[tuple[np.ndarray, float] | _Warn]:
    ffmpeg, ffprobe = _ffmpeg_binaries(path)
    pts, durs, origin = _ffprobe_packets(path, ffprobe)
    if len(pts) == 0:
        raise DecodeError(path, "the video stream holds no packets")
    last_dur = durs[-1] if math.isfinite(durs[-1]) and durs[-1] > 0 else 1.0 / (info.fps or FALLBACK_FPS)
    end = float(pts[-1] + last_dur)
    plan = list(_plan(pts, end, targets))  # a few floats per target: small even for hours at 1 fps
    if not plan:
        return
    # The fps filter with round=up emits, for each tick, the last frame whose time is <= the tick: exactly
    # our rule. Shift time so ticks fall on the targets (t_0 -> 0, spacing 1/fps) and drop negative ticks.
    t0 = plan[0][0]
    step = (plan[1][0] - t0) if len(plan) > 1 else 1.0
    regular = all(abs((t - t0) - k * step) < 1e-6 for k, (t, _) in enumerate(plan))
    if not regular:  # explicit, irregular times (read_frames_at): one run per target is simplest and exact
        for t, i in plan:
            yield from _ffmpeg_run(path, ffmpeg, info, max_side, [(t, i)], pts, origin, 1.0, expected_end_s, warn=False)
        return
    yield from _ffmpeg_run(path, ffmpeg, info, max_side, plan, pts, origin, step, expected_end_s, warn=True)
    # the packets themselves stop early
    if end < expected_end_s - max(END_SLACK_FRAMES / (info.fps or FALLBACK_FPS), END_SLACK_MIN_S):
        yield _Warn(f"{path}: file ends early: decoded up to {end:.2f} s of {expected_end_s:.2f} s")


def _ffmpeg_run(path: Path, ffmpeg: str, info: VideoInfo, max_side: int | None, plan: list[tuple[float, int]],
                pts: np.ndarray, origin: float, step: float, expected_end_s: float,
                warn: bool) -> Iterator[tuple[np.ndarray, float] | _Warn]:
    import ffmpeg as ffmpeg_python

    width, height = _scaled_size(info.width, info.height, max_side)
    t0 = plan[0][0]
    first_needed = float(pts[plan[0][1]])
    seek_s = max(first_needed - 1.0, 0.0)  # keyframe seek before the first frame needed; ticks < 0 are trimmed
    shift = origin + t0
    filters = f"setpts=PTS-{shift!r}/TB,fps=fps=1/{step!r}:round=up,trim=start=0"
    if (width, height) != (info.width, info.height):
        filters += f",scale={width}:{height}:flags=area"
    input_args = {"ss": f"{seek_s:.6f}", "noaccurate_seek": None} if seek_s > 0 else {}
    args = (ffmpeg_python.input(str(path), **input_args)
            .output("pipe:", format="rawvideo", pix_fmt="rgb24", vf=filters, map="0:v:0", an=None, sn=None)
            .global_args("-nostdin", "-v", "error", "-copyts")
            .compile(cmd=ffmpeg))
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, bufsize=frame_bytes)
        try:
            got = 0
            for _, i in plan:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                got += 1
                yield np.frombuffer(buf, np.uint8).reshape(height, width, 3).copy(), float(pts[i])
            if got < len(plan):
                proc.wait()
                stderr.seek(0)
                lines = stderr.read().decode(errors="replace").strip().splitlines()
                if got == 0 and proc.returncode != 0:
                    raise DecodeError(path, f"ffmpeg failed ({lines[-1] if lines else f'exit {proc.returncode}'})")
                reached = float(pts[plan[got - 1][1]]) if got else 0.0
                if warn:
                    yield _Warn(f"{path}: file ends early: decoded up to {reached:.2f} s of {expected_end_s:.2f} s"
                                + (f" ({lines[-1]})" if lines else ""))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


# --------------------------------------------------------------------------------------- batches + prefetch


class FrameBatches:
    """Iterator of `(frames uint8 (B,H,W,3), timestamps_s float64 (B,))` with a decode thread running ahead.

    Use as a context manager or call `close()` to stop early: the thread stops and the file is released.
    """

    _DONE = object()

    def __init__(self, make_items: Callable[[], Iterator[Any]], batch_size: int, prefetch: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._make_items = make_items
        self._batch_size = batch_size
        self._prefetch = prefetch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._inline: Iterator[Any] | None = None
        self._closed = False

    def _batches(self) -> Iterator[Any]:
        items = self._make_items()
        try:
            frames, times = [], []
            for item in items:
                if isinstance(item, _Warn):
                    yield item
                    continue
                frames.append(item[0])
                times.append(item[1])
                if len(frames) == self._batch_size:
                    yield np.stack(frames), np.asarray(times, dtype=np.float64)
                    frames, times = [], []
                if self._stop.is_set():
                    return
            if frames:
                yield np.stack(frames), np.asarray(times, dtype=np.float64)
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    def _worker(self) -> None:
        assert self._queue is not None
        try:
            for batch in self._batches():
                if not self._put(batch):
                    return
            self._put(self._DONE)
        except BaseException as e:  # handed to the consumer, re-raised in its thread
            self._put(e)

    def _put(self, item: Any) -> bool:
        """Put into the bounded queue, waiting for room; False once the consumer has closed the iterator."""
        assert self._queue is not None
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "FrameBatches":
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        while True:
            if self._closed:
                raise StopIteration
            if self._prefetch <= 0:
                if self._inline is None:
                    self._inline = self._batches()
                try:
                    item = next(self._inline)
                except StopIteration:
                    self.close()
                    raise
                except BaseException:
                    self.close()
                    raise
            else:
                if self._thread is None:
                    self._queue = queue.Queue(maxsize=self._prefetch)
                    self._thread = threading.Thread(target=self._worker, name="videomini-decode", daemon=True)
                    self._thread.start()
                item = self._queue.get()
                if item is self._DONE:
                    self.close()
                    raise StopIteration
                if isinstance(item, BaseException):
                    self.close()
                    raise item
            if isinstance(item, _Warn):
                warnings.warn(str(item), RuntimeWarning, stacklevel=2)
                continue
            return item

    def close(self) -> None:
        """Stop decoding, join the thread and release the file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    assert self._queue is not None
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
        if self._inline is not None:
            self._inline.close()

    def __enter__(self) -> "FrameBatches":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _resolve_backend(backend: str, path: Path) -> str:
    if backend == "auto":
        return "pyav"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    return backend


def _frame_items(path: Path, info: VideoInfo, backend: str, targets: Iterator[float], max_side: int | None,
                 batch_size: int, seek_gap_s: float | None = None) -> Iterator[Any]:
    if backend == "pyav":
        return _pyav_frames(path, targets, max_side, info.duration_s, seek_gap_s)
    if backend == "decord":
        return _decord_frames(path, targets, max_side, info, batch_size)
    return _ffmpeg_frames(path, targets, max_side, info, info.duration_s)


def sample_frames(
    path: str | Path,
    fps: float = 1.0,
    start_s: float | None = None,
    end_s: float | None = None,
    max_frames: int | None = None,
    batch_size: int = 16,
    backend: str = "auto",
    max_side: int | None = None,
    prefetch: int = 2,
    sampling: str = "fps",
) -> FrameBatches:
    """Stream the frames on screen at start + k/fps as batches `(uint8 (B,H,W,3) RGB, float64 (B,) seconds)`.

    See the module docstring for the rule. `sampling="reference"` streams the official evaluation's frames
    instead (`reference_timestamps`: segment centres over the whole video; `start_s`/`end_s` do not apply). Errors
    about the file (missing, not a video, no video stream) are raised here, before the first batch. `prefetch`
    batches are decoded ahead in a thread (0: no thread).
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    p = _check_path(path)
    info = probe(p)
    name = _resolve_backend(backend, p)
    if name == "ffmpeg":
        _ffmpeg_binaries(p)
    if sampling == "reference":
        if start_s is not None or end_s is not None:
            raise ValueError("sampling='reference' takes the whole video: start_s/end_s do not apply")
        targets = reference_timestamps(p, fps, max_frames)
        make = lambda: _frame_items(p, info, name, iter(targets.tolist()), max_side, batch_size)  # noqa: E731
    else:
        start = float(start_s or 0.0)
        make = lambda: _frame_items(p, info, name, _targets(start, fps, end_s, max_frames), max_side, batch_size)  # noqa: E731
    return FrameBatches(make, batch_size=batch_size, prefetch=prefetch)


def read_frames_at(path: str | Path, timestamps_s: Sequence[float], max_side: int | None = None,
                   backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The frames on screen at the given times (one sorted pass, seeking across gaps), in the caller's order.

    Returns `(frames (N,H,W,3) uint8, frame_timestamps_s (N,))` where each timestamp is the frame's own time.
    """
    p = _check_path(path)
    info = probe(p)
    name = _resolve_backend(backend, p)
    wanted = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    if len(wanted) == 0:
        h, w = _scaled_size(info.width, info.height, max_side)[::-1]
        return np.zeros((0, h, w, 3), np.uint8), np.zeros((0,), np.float64)
    if not np.all(np.isfinite(wanted)) or wanted.min() < 0:
        raise ValueError(f"{p}: timestamps must be finite and >= 0")
    order = np.unique(wanted)
    items = _frame_items(p, info, name, iter(order.tolist()), max_side, batch_size=16)
    got: dict[float, tuple[np.ndarray, float]] = {}
    remaining = iter(order.tolist())
    for item in items:
        if isinstance(item, _Warn):
            warnings.warn(str(item), RuntimeWarning, stacklevel=2)
            continue
        # Backends skip targets before the first frame; match results to targets by the rule.
        for t in remaining:
            if item[1] <= t + 1e-9:
                got[t] = item
                break
    missing = [t for t in order.tolist() if t not in got]
    if missing:
        raise ValueError(f"{p}: no frame on screen at {missing[0]:.3f} s (video spans 0-{info.duration_s:.3f} s)")
    frames = np.stack([got[t][0] for t in wanted.tolist()])
    times = np.array([got[t][1] for t in wanted.tolist()], dtype=np.float64)
    return frames, times


# --------------------------------------------------------------------------- reference (official) sampling


def uniform_frame_indices(n_frames_total: int, n: int) -> list[int]:
    """The official evaluation's sampling: `n` segment midpoints over `n_frames_total` frames.

    Segment size (total-1)/n; index = (round(size*i) + round(size*(i+1))) // 2 with numpy's round-half-even.
    """
    if n_frames_total < 1 or n < 1:
        raise ValueError(f"need at least one frame and n >= 1, got total={n_frames_total}, n={n}")
    seg = float(n_frames_total - 1) / n
    return [(int(np.round(seg * i)) + int(np.round(seg * (i + 1)))) // 2 for i in range(n)]


def reference_n_frames(n_frames_total: int, avg_fps: float, fps: float = 1.0) -> int:
    """How many frames the reference takes: total // (avg_fps / fps), at most total, at least 1.

    (The reference computes `int(total // avg_fps)` at 1 fps and fails on videos shorter than 1 s; we take 1.)
    """
    return max(1, min(n_frames_total, int(n_frames_total // (avg_fps / fps))))


def _frame_times_pyav(path: Path) -> tuple[np.ndarray, float]:
    """Every frame's presentation time in display order (seconds on the sampler's clock), from one demux pass
    (no decoding), and the stream's average frame rate."""
    container = _open_av(path)
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
        return np.sort(times) - _stream_origin(stream), avg
    finally:
        container.close()


def _count_frames_pyav(path: Path) -> tuple[int, float]:
    times, avg = _frame_times_pyav(path)
    return len(times), avg


def reference_timestamps(path: str | Path, fps: float = 1.0, max_frames: int | None = None) -> np.ndarray:
    """Target times that make the streaming sampler return exactly the frames the official evaluation takes.

    N = `reference_n_frames` (capped by `max_frames`), frame indices = `uniform_frame_indices` (segment centres:
    frames 15, 45, 74, ... of a 30 fps video at 1 fps); each target lies halfway between its frame and the next,
    so every backend's clock finds that frame. Counting frames is one demux pass, without decoding.
    """
    p = _check_path(path)
    times, avg = _frame_times_pyav(p)
    if len(times) == 0 or not avg:
        raise DecodeError(p, "the video stream holds no frames")
    n = reference_n_frames(len(times), avg, fps)
    indices = np.asarray(uniform_frame_indices(len(times), min(n, max_frames) if max_frames else n))
    following = np.append(times[1:], times[-1] + 1.0 / avg)
    return (times[indices] + following[indices]) / 2


def _pyav_frames_by_index(path: Path, indices: Sequence[int], max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    container = _open_av(path)
    try:
        stream, width, height = _decoding_stream(container, max_side)
        rotation = _rotation_cw(container, stream)
        origin = _stream_origin(stream)
        wanted: dict[int, int] = {}
        for i in indices:
            wanted[i] = wanted.get(i, 0) + 1
        got: dict[int, tuple[np.ndarray, float]] = {}
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                image = frame.to_ndarray(format="rgb24", width=width, height=height)
                got[k] = (_rotate(image, rotation), float(frame.pts * stream.time_base) - origin)
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
    p = _check_path(path)
    total, _ = _count_frames_pyav(p)
    if total == 0:
        raise DecodeError(p, "the video stream holds no frames")
    return _pyav_frames_by_index(p, uniform_frame_indices(total, n), max_side)


def reference_video_frames(path: str | Path, fps: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Frames and frame indices exactly as the reference selects them (decord when installed, as it used).

    Returns `(frames (N,H,W,3) uint8 at the stored size, indices (N,) int64)`.
    """
    p = _check_path(path)
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
    container = _open_av(p)
    try:
        stream = container.streams.video[0]
        keep = set(indices)
        frames = {k: _rotate(f.to_ndarray(format="rgb24"), _cw_from_ccw(f.rotation))
                  for k, f in enumerate(container.decode(stream)) if k in keep}
    finally:
        container.close()
    return np.stack([frames[i] for i in indices]), np.asarray(indices, dtype=np.int64)
