"""The sampling rule, shared by every file backend: which decoded frame answers which target time.

For each target time t_k = start + k / fps (t_k < `end_s`), the answer is the frame on screen at t_k: the last
frame whose presentation time is <= t_k, reported with its own time (not t_k). A frame that stays on screen over
several targets is returned once per target; targets before the first frame are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

FALLBACK_FPS = 25.0  # a stream that declares no frame rate: frames last 1/25 s (PAL), as FFmpeg assumes
END_SLACK_FRAMES, END_SLACK_MIN_S = 2, 0.05  # decoding that stops earlier than this before the end "ends early"
EPS_S = 1e-6  # a frame at pts is on screen at t when pts <= t + EPS_S (absorbs float time-base rounding)


class Warn(str):
    """A warning produced inside a backend (maybe in the prefetch thread), re-issued by the consumer's thread."""


def fps_targets(start_s: float, fps: float, end_s: float | None = None,
            max_frames: int | None = None) -> Iterator[float]:
    """start + k / fps for k = 0, 1, ... while < `end_s` and k < `max_frames` (either None: no bound)."""
    k = 0
    while max_frames is None or k < max_frames:
        t = start_s + k / fps
        if end_s is not None and t >= end_s:
            return
        yield t
        k += 1


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so the longer side is at most `max_side` (unchanged when it already is)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def rotate(frame: np.ndarray, rotation_cw: int) -> np.ndarray:
    """The (H, W, 3) image turned upright: rotated `rotation_cw` degrees clockwise."""
    if rotation_cw % 360 == 0:
        return frame
    return np.ascontiguousarray(np.rot90(frame, k=-(rotation_cw // 90)))


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """The source row (or column) that nearest-neighbour resizing reads for each output one, computed as torch's
    `F.interpolate(mode="nearest")` does (float32 scale = in / out, index = floor(out_index * scale)), so that a
    uint8 gather gives its pixels bit for bit without a float copy of the frame."""
    scale = np.float32(size_in) / np.float32(size_out)
    index = np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, size_in - 1)


def resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) -> (size[1], size[0], 3) by nearest neighbour, the same pixels as torch's nearest interpolate
    (the reference squashes video frames that way)."""
    height, width = image.shape[:2]
    if (width, height) == tuple(size):
        return image
    # rows, then columns: two contiguous gathers, 5x cheaper than one 2-D fancy index (0.4 vs 2.0 ms at 640x360)
    return image.take(nearest_indices(height, size[1]), axis=0).take(nearest_indices(width, size[0]), axis=1)


def plan(pts_s: np.ndarray, end_s: float, wanted: Iterable[float]) -> Iterator[tuple[float, int]]:
    """(target, index of the frame on screen at target) for targets before `end_s`, when every frame time is
    known up front (decord, ffprobe); `pts_s` sorted ascending."""
    for t in wanted:
        if t + EPS_S >= end_s:
            return
        i = int(np.searchsorted(pts_s, t + EPS_S, side="right")) - 1
        if i >= 0:
            yield t, i


class OnScreen:
    """The rule applied one decoded frame at a time, for readers that learn frame times as they decode (PyAV
    files; live streams keep their own rule in videomini/live/sources.py).

    `offer(pts_s, frame, duration_s)` each decoded frame in presentation order; it returns the samples the new
    frame completes: the previously held frame, once per target it covered, as (image, its own time). The image
    is made by `convert(frame)` at most once per frame, and only for frames that are sampled. `finish()` returns
    the last frame for the targets before its end.
    """

    def __init__(self, wanted: Iterator[float], convert: Callable[[Any], np.ndarray]) -> None:
        self._wanted = wanted
        self._convert = convert
        self.next_t: float | None = next(wanted, None)
        self._held: list | None = None  # [pts_s, frame, duration_s, image or None]

    @property
    def done(self) -> bool:
        """No targets left: the caller can stop decoding."""
        return self.next_t is None

    @property
    def held_s(self) -> float | None:
        """The time of the frame on screen now (the last one offered), None before the first."""
        return None if self._held is None else self._held[0]

    @property
    def held_end_s(self) -> float | None:
        """Where the held frame stops being on screen, if no later frame comes."""
        return None if self._held is None else self._held[0] + self._held[2]

    def offer(self, pts_s: float, frame: Any, duration_s: float) -> list[tuple[np.ndarray, float]]:
        """The samples completed by a frame at `pts_s`; the frame is held for the targets still ahead."""
        if self._held is not None and pts_s <= self._held[0]:
            return []  # a frame from before a point already passed (decoding restarts at a keyframe after a seek)
        out = []
        while self.next_t is not None and self.next_t + EPS_S < pts_s:
            if self._held is not None:  # else: a target before the first frame, skipped
                out.append(self._sample())
            self.next_t = next(self._wanted, None)
        if self.next_t is not None:
            self._held = [pts_s, frame, duration_s, None]
        return out

    def extend_to(self, end_s: float) -> None:
        """Keep the held frame on screen up to `end_s` (frames after it were skipped, not missing)."""
        if self._held is not None and end_s > self.held_end_s:
            self._held[2] = end_s - self._held[0]

    def finish(self) -> list[tuple[np.ndarray, float]]:
        """The held (last) frame for every remaining target before it leaves the screen."""
        out = []
        while self.next_t is not None and self._held is not None and self.next_t + EPS_S < self.held_end_s:
            out.append(self._sample())
            self.next_t = next(self._wanted, None)
        return out

    def _sample(self) -> tuple[np.ndarray, float]:
        held = self._held
        if held[3] is None:
            held[3], held[1] = self._convert(held[1]), None  # converted once however often it is sampled
        return held[3], held[0]
