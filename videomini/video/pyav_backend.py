"""The PyAV backend (the default): decode a file once in presentation order, seeking across long gaps between
targets, and return the frame on screen at each target (`timeline.OnScreen`).

Dense sampling decodes straight through (faster than seeking every second); a gap longer than twice the
keyframe interval (sparse sampling, a late `start_s`, `read_frames_at`) seeks. A truncated or damaged file yields
the frames that exist and one warning that says how far decoding got or where the damage is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from videomini.errors import first_line
from videomini.video import source
from videomini.video.errors import DecodeError
from videomini.video.source import cw_from_ccw, keyframe_interval_s, stream_origin
from videomini.video.source import seek_gap_s as default_seek_gap_s
from videomini.video.timeline import (
    END_SLACK_FRAMES,
    END_SLACK_MIN_S,
    FALLBACK_FPS,
    OnScreen,
    Warn,
    resize_nearest,
    rotate,
    scaled_size,
)


class Damage:
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

    def warning(self, path: Path, end_s: float, expected_end_s: float, frame_s: float) -> Warn | None:
        """The one-line warning for a file that ends early or holds damaged data; None for a sound file."""
        what = f"{self.count} packet(s) could not be decoded: {self.reason}"
        if end_s < expected_end_s - max(END_SLACK_FRAMES * frame_s, END_SLACK_MIN_S):
            how = f" ({what})" if self.count else ""
            return Warn(f"{path}: file ends early: decoded up to {end_s:.2f} s of {expected_end_s:.2f} s{how}")
        if not self.count:
            return None
        where = "" if self.first_s is None else f" between {self.first_s:.2f} s and {self.last_s:.2f} s"
        return Warn(f"{path}: damaged video data{where} ({what}); the frames there are missing or repeat the "
                    "last good one")


def decode_packet(packet: Any, damage: Damage, origin: float) -> list:
    """The frames one packet decodes to; a packet the decoder rejects is recorded in `damage`."""
    import av

    try:
        return packet.decode()
    except (av.error.InvalidDataError, av.error.EOFError) as e:
        pts = packet.pts if packet.pts is not None else packet.dts
        damage.record(e, None if pts is None else float(pts * packet.time_base) - origin)
        return []


def decoder_threads() -> int:
    """Threads for one decoder: the cores this process may run on (its CPU affinity, which containers and
    `taskset` narrow), as `ffmpeg -threads N` would be given for the same decode floor."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def decoding_stream(container: Any, max_side: int | None, decode: str = "exact",
                    interval_s: float | None = None) -> tuple[Any, int, int]:
    """The container's video stream, set up for threaded decoding on every core, and the size its frames are
    converted to. `decode="fast"` lets the codec skip what no target needs: only keyframes when targets are at
    least a keyframe interval apart (sparse sampling of long-GOP files), else the frames no other frame
    references (non-reference B-frames); skipping references would corrupt the frames decoded after them."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame and slice threads
    stream.codec_context.thread_count = decoder_threads()
    if decode == "fast":
        gop = keyframe_interval_s(stream)
        sparse = gop is not None and interval_s is not None and interval_s >= gop
        stream.codec_context.skip_frame = "NONKEY" if sparse else "NONREF"
    return (stream, *scaled_size(stream.codec_context.width, stream.codec_context.height, max_side))


def frame_converter(width: int, height: int, scaled: bool, size: tuple[int, int] | None = None,
                    decode: str = "exact") -> Callable[[Any], np.ndarray]:
    """frame -> upright uint8 RGB (H, W, 3), converted once.

    Without `size`: (width, height), scaled in the same libswscale pass as the colour conversion. With `size`
    (the vision tower's input, aspect not kept, as the reference squashes): in exact mode the full frame in RGB,
    then nearest neighbour as torch computes it (the reference's pixels, bit for bit); in fast mode one
    libswscale pass straight from YUV to `size` (area filter: no full-size RGB copy, smoother pixels, not the
    reference's).
    """

    def convert(frame: Any) -> np.ndarray:
        rotation = cw_from_ccw(frame.rotation)
        if size is None:
            image = frame.to_ndarray(format="rgb24", width=width, height=height,
                                     interpolation="AREA" if scaled else None)
            return rotate(image, rotation)
        if decode == "exact":
            return resize_nearest(rotate(frame.to_ndarray(format="rgb24"), rotation), size)
        w, h = (size[1], size[0]) if rotation in (90, 270) else size  # scaled before it is turned upright
        return rotate(frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA"), rotation)

    return convert


class Reach:
    """How far the demuxer got: the end of the last packet read, decoded or skipped (the fast mode's last decoded
    frame stays on screen until there)."""

    def __init__(self) -> None:
        self.end_s = 0.0


def timed_frames(container: Any, stream: Any, damage: Damage,
                 reach: Reach | None = None) -> Iterator[tuple[float, float, Any]]:
    """(pts_s, duration_s, frame) for every decodable frame from the container's current position, in
    presentation order; times on the stream's clock (`stream_origin` = 0)."""
    tb, origin = stream.time_base, stream_origin(stream)
    default_dur = 1.0 / float(stream.average_rate or stream.guessed_rate or FALLBACK_FPS)
    for packet in container.demux(stream):
        if reach is not None and packet.pts is not None and packet.size:
            dur = float(packet.duration * tb) if packet.duration else default_dur
            reach.end_s = max(reach.end_s, float(packet.pts * tb) - origin + dur)
        for frame in decode_packet(packet, damage, origin):
            if frame.pts is None:
                continue
            yield float(frame.pts * tb) - origin, float(frame.duration * tb) if frame.duration else default_dur, frame


def pyav_frames(path: Path, wanted: Iterator[float], max_side: int | None, expected_end_s: float,
                seek_gap_s: float | None = None, decode: str = "exact", size: tuple[int, int] | None = None,
                interval_s: float | None = None) -> Iterator[tuple[np.ndarray, float] | Warn]:
    """Stream (frame, pts) for each target time; seeks when the next target is far ahead. `interval_s`: the
    spacing of the targets (None: irregular), which tells the fast mode whether keyframes alone will do."""
    import av

    container = source.open_container(path)
    try:
        stream, width, height = decoding_stream(container, max_side, decode, interval_s)
        tb, origin = stream.time_base, stream_origin(stream)
        gap = default_seek_gap_s(stream, seek_gap_s)
        selector = OnScreen(wanted, frame_converter(width, height, bool(max_side), size, decode))
        damage, reach = Damage(), (Reach() if decode == "fast" else None)

        def seek(t: float) -> None:
            container.seek(int((t + origin) / tb), stream=stream, backward=True, any_frame=False)

        sought = None  # the last target sought: seeking again for it would land on the same keyframe
        if selector.next_t is not None and selector.next_t > gap:
            sought = selector.next_t
            seek(sought)
        reached_eof = False
        while not selector.done and not reached_eof:
            reached_eof = True
            frames = timed_frames(container, stream, damage, reach)
            try:
                for pts, dur, frame in frames:
                    if selector.held_s is not None and pts <= selector.held_s:
                        continue  # decoding restarted at a keyframe before a point already passed
                    yield from selector.offer(pts, frame, dur)
                    if selector.done:
                        return
                    if selector.next_t - pts > gap and selector.next_t != sought:  # one seek per target at most
                        sought = selector.next_t
                        seek(sought)
                        reached_eof = False
                        break
            except av.error.FFmpegError as e:  # demuxer failure: treat like the end of the data
                damage.record(e)
                reached_eof = True
            finally:
                frames.close()
        if reach is not None:
            selector.extend_to(reach.end_s)  # skipped frames after the last decoded one were there
        yield from _end_of_stream(path, selector, damage, expected_end_s, stream)
    finally:
        container.close()


def _end_of_stream(path: Path, selector: OnScreen, damage: Damage, expected_end_s: float,
                   stream: Any) -> Iterator[tuple[np.ndarray, float] | Warn]:
    """At the end of the data: the last frame stays on screen for its duration; then the warning, if any."""
    if selector.done:
        return
    if selector.held_s is None:
        if damage.count:
            raise DecodeError(path, f"no frame could be decoded ({damage.reason})")
        raise DecodeError(path, "the video stream holds no decodable frame")
    yield from selector.finish()
    default_dur = 1.0 / float(stream.average_rate or stream.guessed_rate or FALLBACK_FPS)
    warning = damage.warning(path, selector.held_end_s, expected_end_s, default_dur)
    if warning is not None:
        yield warning
