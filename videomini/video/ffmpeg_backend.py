"""The ffmpeg CLI backend (ffmpeg-python builds the command): the frame list comes from ffprobe, the frames from
the fps filter with round=up, which implements the sampling rule (the plain fps filter picks frames about half a
period late)."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from videomini.video.errors import BackendUnavailable, DecodeError
from videomini.video.info import VideoInfo
from videomini.video.timeline import END_SLACK_FRAMES, END_SLACK_MIN_S, FALLBACK_FPS, Warn, plan, scaled_size


def ffmpeg_binaries(path: Path) -> tuple[str, str]:
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if not ffmpeg or not ffprobe:
        raise BackendUnavailable(path, "backend 'ffmpeg' needs the ffmpeg and ffprobe binaries "
                                       "(apt-get install ffmpeg)")
    try:
        import ffmpeg as _  # noqa: F401  (ffmpeg-python)
    except ImportError:
        raise BackendUnavailable(path, "backend 'ffmpeg' needs ffmpeg-python "
                                       "(pip install 'videomini[ffmpeg]')") from None
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


def ffmpeg_frames(path: Path, wanted: Iterator[float], max_side: int | None, info: VideoInfo,
                   expected_end_s: float) -> Iterator[tuple[np.ndarray, float] | Warn]:
    """Stream (frame, pts) for each target time from one ffmpeg process (one per target for irregular times)."""
    ffmpeg, ffprobe = ffmpeg_binaries(path)
    pts, durs, origin = _ffprobe_packets(path, ffprobe)
    if len(pts) == 0:
        raise DecodeError(path, "the video stream holds no packets")
    last_dur = durs[-1] if math.isfinite(durs[-1]) and durs[-1] > 0 else 1.0 / (info.fps or FALLBACK_FPS)
    end = float(pts[-1] + last_dur)
    planned = list(plan(pts, end, wanted))  # a few floats per target: small even for hours at 1 fps
    if not planned:
        return
    # The fps filter with round=up emits, for each tick, the last frame whose time is <= the tick: exactly
    # our rule. Shift time so ticks fall on the targets (t_0 -> 0, spacing 1/fps) and drop negative ticks.
    t0 = planned[0][0]
    step = (planned[1][0] - t0) if len(planned) > 1 else 1.0
    regular = all(abs((t - t0) - k * step) < 1e-6 for k, (t, _) in enumerate(planned))
    if not regular:  # explicit, irregular times (read_frames_at): one run per target is simplest and exact
        for t, i in planned:
            yield from _ffmpeg_run(path, ffmpeg, info, max_side, [(t, i)], pts, origin, 1.0, expected_end_s, warn=False)
        return
    yield from _ffmpeg_run(path, ffmpeg, info, max_side, planned, pts, origin, step, expected_end_s, warn=True)
    # the packets themselves stop early
    if end < expected_end_s - max(END_SLACK_FRAMES / (info.fps or FALLBACK_FPS), END_SLACK_MIN_S):
        yield Warn(f"{path}: file ends early: decoded up to {end:.2f} s of {expected_end_s:.2f} s")


def _ffmpeg_run(path: Path, ffmpeg: str, info: VideoInfo, max_side: int | None, plan: list[tuple[float, int]],
                pts: np.ndarray, origin: float, step: float, expected_end_s: float,
                warn: bool) -> Iterator[tuple[np.ndarray, float] | Warn]:
    import ffmpeg as ffmpeg_python

    width, height = scaled_size(info.width, info.height, max_side)
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
                    yield Warn(f"{path}: file ends early: decoded up to {reached:.2f} s of {expected_end_s:.2f} s"
                                + (f" ({lines[-1]})" if lines else ""))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()
