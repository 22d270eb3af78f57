"""Which frames reach the LLM: at most `budget` of them, chosen for the question (explicit time references first,
then retrieval relevance, then uniform coverage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _spread(candidates: np.ndarray, k: int) -> np.ndarray:
    """k of the sorted candidates, evenly spaced: the midpoints of k equal segments (as the reference samples)."""
    if k >= len(candidates):
        return candidates
    positions = ((np.arange(k) + 0.5) * len(candidates) / k).astype(np.int64)
    return candidates[positions]


def select_frames(
    timestamps_s: np.ndarray,
    budget: int,
    windows: Sequence[tuple[float, float]] = (),
    relevance: np.ndarray | None = None,
    uniform_fraction: float = 0.25,
    nms_radius_s: float | None = None,
) -> np.ndarray:
    """Sorted indices of at most `budget` frames to show the LLM; every frame when they fit.

    Order of claims on the budget:
    1. frames inside the question's explicit time `windows` (seconds, from `timerefs.parse_time_references`,
       parsed once by the caller), evenly spread within the windows when they alone exceed the budget;
    2. the most question-relevant frames by `relevance` (e.g. CLIP image·text similarity), with a temporal
       non-maximum suppression (`nms_radius_s`, default a quarter of the average spacing the budget allows,
       at least one frame gap) so that picks spread over distinct moments instead of neighbouring frames;
       they take (1 − `uniform_fraction`) of what is left;
    3. uniform coverage of the rest of the video with the remainder (all of it without `relevance`).
    The result is deterministic (ties go to the earlier frame).
    """
    timestamps = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    n = len(timestamps)
    if int(budget) != budget or budget < 1:
        raise ValueError(f"frame budget must be a positive integer, got {budget!r}")
    budget = int(budget)
    if not 0.0 <= uniform_fraction <= 1.0:
        raise ValueError(f"uniform_fraction must be in [0, 1], got {uniform_fraction}")
    if relevance is not None:
        relevance = np.asarray(relevance, dtype=np.float64).reshape(-1)
        if len(relevance) != n:
            raise ValueError(f"relevance has {len(relevance)} scores for {n} frames")
    if n <= budget:
        return np.arange(n, dtype=np.int64)

    taken = np.zeros(n, dtype=bool)
    if windows:
        _take_time_windows(timestamps, windows, budget, taken)
    left = budget - int(taken.sum())
    if relevance is not None and left > 0:
        _take_relevant(timestamps, relevance, left - int(round(left * uniform_fraction)), budget, nms_radius_s,
                       taken)
    left = budget - int(taken.sum())
    if left > 0:  # uniform coverage of what is left
        rest = np.flatnonzero(~taken)
        rest = rest[np.argsort(timestamps[rest], kind="stable")]
        taken[_spread(rest, left)] = True
    return np.flatnonzero(taken).astype(np.int64)


def _take_time_windows(timestamps: np.ndarray, windows: Sequence[tuple[float, float]], budget: int,
                       taken: np.ndarray) -> None:
    """Mark the frames inside the question's explicit time windows (spread evenly when they exceed the budget)."""
    inside = np.zeros(len(timestamps), dtype=bool)
    for lo, hi in windows:
        inside |= (timestamps >= lo) & (timestamps <= hi)
    in_window = np.flatnonzero(inside)
    if len(in_window) > budget:
        in_window = _spread(in_window[np.argsort(timestamps[in_window], kind="stable")], budget)
    taken[in_window] = True


def _take_relevant(timestamps: np.ndarray, relevance: np.ndarray, want: int, budget: int,
                   nms_radius_s: float | None, taken: np.ndarray) -> None:
    """Mark the `want` most relevant frames, best first, each suppressing the frames strictly closer than
    `nms_radius_s` to it (default: max(one frame gap, a quarter of the spacing the budget allows))."""
    n = len(timestamps)
    if nms_radius_s is None:
        gaps = np.diff(np.sort(timestamps))
        frame_gap = float(np.median(gaps)) if len(gaps) else 0.0
        span = float(timestamps.max() - timestamps.min())
        nms_radius_s = max(frame_gap, 0.25 * span / budget)
    scores = np.where(np.isnan(relevance), -np.inf, relevance)
    order = np.lexsort((np.arange(n), -scores))  # best first, ties to the earlier frame
    by_time = np.argsort(timestamps, kind="stable")
    sorted_times = timestamps[by_time]
    suppressed = taken.copy()
    for i in order:
        if want <= 0:
            break
        if suppressed[i]:
            continue
        taken[i] = suppressed[i] = True
        want -= 1
        if nms_radius_s > 0:
            lo = np.searchsorted(sorted_times, timestamps[i] - nms_radius_s, side="right")
            hi = np.searchsorted(sorted_times, timestamps[i] + nms_radius_s, side="left")
            suppressed[by_time[lo:hi]] = True
