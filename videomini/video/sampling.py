"""The public sampling calls: `sample_frames` streams the frames on screen at start + k/fps (or the reference's
frames) as batches from any backend; `read_frames_at` reads the frames at given times. Errors about the file are
raised before the first batch."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videomini.config import BATCH_SIZE, FPS, SAMPLINGS
from videomini.config import DECODES as DECODE_MODES  # exact: every frame | fast: frames nobody samples skipped
from videomini.video.decord_backend import decord_frames
from videomini.video.ffmpeg_backend import ffmpeg_binaries, ffmpeg_frames
from videomini.video.info import VideoInfo, probe
from videomini.video.prefetch import FrameBatches
from videomini.video.pyav_backend import pyav_frames
from videomini.video.reference import REFERENCE_FRAME_SIZE, reference_timestamps
from videomini.video.source import check_path
from videomini.video.timeline import Warn, fps_targets, resize_nearest, scaled_size

BACKENDS = ("pyav", "decord", "ffmpeg")
# Frames `decode_ahead` may hold decoded before the encoder takes them: 12 MiB = 2 batches of 16 frames of
# 336 x 336 x 3 bytes (338,688 B a frame, 5.4 MB a batch). Enough for the first frames to be ready when the model
# is; more bought nothing on 2 cores, where the encoder, not decoding, sets the pace, and slowed the imports it
# ran beside (64 MiB, 12 batches: imports 1.4-2.3 s slower under load, 0.3 s with 2 batches). A caller whose
# encoder outpaces decoding (a GPU) can pass more.
DECODE_AHEAD_BYTES = 12 * 2**20
__all__ = ["BACKENDS", "SAMPLINGS", "DECODE_MODES", "DECODE_AHEAD_BYTES", "sample_frames", "read_frames_at",
           "decode_ahead"]


def _resolve_backend(backend: str, path: Path) -> str:
    if backend == "auto":
        return "pyav"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    return backend


def _frame_items(path: Path, info: VideoInfo, backend: str, wanted: Iterator[float], max_side: int | None,
                 batch_size: int, seek_gap_s: float | None = None, decode: str = "exact",
                 size: tuple[int, int] | None = None, interval_s: float | None = None) -> Iterator[Any]:
    if backend == "pyav":
        return pyav_frames(path, wanted, max_side, info.duration_s, seek_gap_s, decode, size, interval_s)
    if backend == "decord":
        items = decord_frames(path, wanted, max_side, info, batch_size)
    else:
        items = ffmpeg_frames(path, wanted, max_side, info, info.duration_s)
    return items if size is None else _resized(items, size)


def _resized(items: Iterator[Any], size: tuple[int, int]) -> Iterator[Any]:
    """A backend's items with every frame squashed to `size` as the exact mode does (nearest, torch's pixels)."""
    for item in items:
        yield item if isinstance(item, Warn) else (resize_nearest(item[0], size), item[1])


def _check_decode(decode: str, backend: str, size: tuple[int, int] | None) -> None:
    if decode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {decode!r}; choose one of {', '.join(DECODE_MODES)}")
    if decode == "fast" and backend != "pyav":
        raise ValueError(f"decode='fast' skips frames inside PyAV's decoder; backend {backend!r} decodes exactly")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (width, height) with both >= 1, got {size!r}")


def sample_frames(
    path: str | Path,
    fps: float = FPS,
    start_s: float | None = None,
    end_s: float | None = None,
    max_frames: int | None = None,
    batch_size: int = BATCH_SIZE,
    backend: str = "auto",
    max_side: int | None = None,
    prefetch: int = 2,
    sampling: str = "fps",
    decode: str = "exact",
    size: tuple[int, int] | None = None,
) -> FrameBatches:
    """Stream the frames on screen at start + k/fps as batches `(uint8 (B,H,W,3) RGB, float64 (B,) seconds)`.

    See `videomini.video.timeline` for the rule. `sampling="reference"` streams the official evaluation's frames
    instead (`reference_timestamps`: segment centres over the whole video; `start_s`/`end_s` do not apply). Errors
    about the file (missing, not a video, no video stream) are raised here, before the first batch. `prefetch`
    batches are decoded ahead in a thread (0: no thread).

    `decode="fast"` (PyAV) lets the codec skip frames nobody samples (non-reference frames; only keyframes when
    the targets are a keyframe interval apart or more): each target then gets the last *decoded* frame on screen,
    reported with its own time, so times say exactly which frames were used. `size=(width, height)` returns
    frames squashed to that size (the vision tower's input), converted once in the decoder's thread: exact mode
    gives the pixels of torch's nearest resize of the full frame, fast mode one libswscale pass from YUV.
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    p = check_path(path)
    info = probe(p)
    name = _resolve_backend(backend, p)
    _check_decode(decode, name, size)
    if name == "ffmpeg":
        ffmpeg_binaries(p)
    if sampling == "reference":
        if start_s is not None or end_s is not None:
            raise ValueError("sampling='reference' takes the whole video: start_s/end_s do not apply")
        targets = reference_timestamps(p, fps, max_frames)
        make = lambda: _frame_items(p, info, name, iter(targets.tolist()), max_side, batch_size,  # noqa: E731
                                    decode=decode, size=size, interval_s=info.duration_s / max(len(targets), 1))
    else:
        start = float(start_s or 0.0)
        make = lambda: _frame_items(p, info, name, fps_targets(start, fps, end_s, max_frames), max_side,  # noqa: E731
                                    batch_size, decode=decode, size=size, interval_s=1.0 / fps)
    batches = FrameBatches(make, batch_size=batch_size, prefetch=prefetch)
    batches.info = info  # its reader need not probe the file again
    return batches


def decode_ahead(path: str | Path, fps: float = FPS, sampling: str = "fps", decode: str = "exact",
                 batch_size: int = BATCH_SIZE, ahead_bytes: int = DECODE_AHEAD_BYTES) -> FrameBatches:
    """The frames `ask` encodes (squashed to the reference's 336 x 336), decoding started now in its thread.

    Started before the model loads, decoding overlaps the seconds of imports and loading; the queue holds at
    most `ahead_bytes` of frames (at least two batches), whatever the video's length. Errors about the file are
    raised here, before anything heavy is imported. `made_for` records what the stream was made for, so that
    the asker can check it was given the stream it would have made."""
    width, height = REFERENCE_FRAME_SIZE
    batch_bytes = batch_size * width * height * 3
    batches = sample_frames(path, fps=fps, batch_size=batch_size, sampling=sampling, decode=decode,
                            size=REFERENCE_FRAME_SIZE, prefetch=max(2, ahead_bytes // batch_bytes))
    batches.made_for = (str(path), float(fps), sampling, decode)
    return batches.start()


def read_frames_at(path: str | Path, timestamps_s: Sequence[float], max_side: int | None = None,
                   backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The frames on screen at the given times (one sorted pass, seeking across gaps), in the caller's order.

    Returns `(frames (N,H,W,3) uint8, frame_timestamps_s (N,))` where each timestamp is the frame's own time.
    """
    p = check_path(path)
    info = probe(p)
    name = _resolve_backend(backend, p)
    wanted = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    if len(wanted) == 0:
        h, w = scaled_size(info.width, info.height, max_side)[::-1]
        return np.zeros((0, h, w, 3), np.uint8), np.zeros((0,), np.float64)
    if not np.all(np.isfinite(wanted)) or wanted.min() < 0:
        raise ValueError(f"{p}: timestamps must be finite and >= 0")
    order = np.unique(wanted)
    items = _frame_items(p, info, name, iter(order.tolist()), max_side, batch_size=16)
    got: dict[float, tuple[np.ndarray, float]] = {}
    remaining = iter(order.tolist())
    for item in items:
        if isinstance(item, Warn):
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
