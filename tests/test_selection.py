"""Which frames reach the LLM (videomini.selection): time windows first, then relevance, then coverage."""

from __future__ import annotations

import numpy as np
import pytest

from videomini.selection import select_frames
from videomini.timerefs import parse_time_references

# ---------------------------------------------------------------------------------------------------------
# Frame selection
# ---------------------------------------------------------------------------------------------------------

def _windows(question: str, timestamps: np.ndarray) -> list[tuple[float, float]]:
    """The question's time windows, parsed once as `VideoMini.ask` does (the video ends at its last frame)."""
    return parse_time_references(question, float(timestamps.max()))


def _check(selected: np.ndarray, budget: int, n: int) -> None:
    assert selected.dtype == np.int64
    assert len(selected) <= budget
    assert np.all(np.diff(selected) > 0), "sorted, no duplicates"
    assert selected.min() >= 0 and selected.max() < n


def test_select_all_frames_when_they_fit() -> None:
    timestamps = np.arange(50, dtype=float)
    assert np.array_equal(select_frames(timestamps, 64, windows=_windows("at the end", timestamps)), np.arange(50))
    assert np.array_equal(select_frames(timestamps, 50), np.arange(50))


def test_select_uniform_coverage_without_question() -> None:
    timestamps = np.arange(7200, dtype=float)  # 2 hours at 1 fps
    selected = select_frames(timestamps, 100)
    _check(selected, 100, 7200)
    assert len(selected) == 100
    gaps = np.diff(timestamps[selected])
    assert gaps.min() >= 71 and gaps.max() <= 73
    assert selected[0] < 72 and selected[-1] > 7200 - 72  # both ends covered


def test_select_honours_time_window_and_covers_the_rest() -> None:
    timestamps = np.arange(3600, dtype=float)
    selected = select_frames(timestamps, 100, windows=_windows("What happens at 12:30?", timestamps))
    _check(selected, 100, 3600)
    assert len(selected) == 100
    assert set(range(745, 756)) <= set(selected.tolist())  # every frame of the window
    outside = timestamps[selected][(timestamps[selected] < 745) | (timestamps[selected] > 755)]
    assert len(outside) == 89
    assert np.diff(outside).max() <= 2 * 3600 / 89  # the rest of the video stays covered


def test_select_spreads_within_windows_larger_than_budget() -> None:
    timestamps = np.arange(3600, dtype=float)
    selected = select_frames(timestamps, 30, windows=_windows("what is said in the first 5 minutes?", timestamps))
    _check(selected, 30, 3600)
    assert len(selected) == 30
    assert timestamps[selected].max() <= 300
    assert np.all(np.diff(timestamps[selected]) == 10)  # evenly over the window


def test_select_two_windows_larger_than_budget_share_it() -> None:
    timestamps = np.arange(0, 3600, 0.5)  # 2 fps
    windows = _windows("compare the first minute with the last minute", timestamps)
    selected = select_frames(timestamps, 40, windows=windows)
    times = timestamps[selected]
    assert len(selected) == 40
    assert np.all((times <= 60) | (times >= 3540))
    assert (times <= 60).sum() == 20 and (times >= 3540).sum() == 20


def test_select_by_relevance_with_temporal_suppression() -> None:
    timestamps = np.arange(3600, dtype=float)
    relevance = np.zeros(3600)
    relevance[2000:2005] = [0.90, 0.95, 1.00, 0.97, 0.93]  # one moment, five near-identical frames
    relevance[500] = 0.8
    selected = select_frames(timestamps, 3, relevance=relevance, uniform_fraction=0.0, nms_radius_s=5)
    assert selected.tolist() == [0, 500, 2002]  # the best frame of each moment; ties go to the earlier frame
    without_nms = select_frames(timestamps, 3, relevance=relevance, uniform_fraction=0.0, nms_radius_s=0)
    assert without_nms.tolist() == [2001, 2002, 2003]


def test_select_combines_windows_relevance_and_coverage() -> None:
    timestamps = np.arange(3600, dtype=float)
    relevance = np.zeros(3600)
    relevance[[1000, 2500]] = 1.0
    budget = 60
    selected = select_frames(timestamps, budget, windows=_windows("what happens at the end?", timestamps),
                             relevance=relevance,
                             uniform_fraction=0.5)
    _check(selected, budget, 3600)
    assert len(selected) == budget
    assert timestamps[selected].min() >= 3240  # the window (361 frames) alone fills the budget
    # A smaller window leaves room: relevance and uniform coverage both get their share.
    selected = select_frames(timestamps, budget, windows=_windows("what happens at 30:00?", timestamps),
                             relevance=relevance, uniform_fraction=0.5)
    times = selected.tolist()
    assert set(range(1795, 1806)) <= set(times) and {1000, 2500} <= set(times)
    assert len(times) == budget
    assert min(times) < 200 and max(times) > 3400


def test_select_is_deterministic_and_validates() -> None:
    rng = np.random.default_rng(0)
    timestamps = np.sort(rng.uniform(0, 600, 900))
    relevance = rng.normal(size=900)
    first = select_frames(timestamps, 77, windows=_windows("between 2:00 and 3:00", timestamps), relevance=relevance)
    second = select_frames(timestamps, 77, windows=_windows("between 2:00 and 3:00", timestamps), relevance=relevance)
    assert np.array_equal(first, second)
    _check(first, 77, 900)
    with pytest.raises(ValueError, match="budget"):
        select_frames(timestamps, 0)
    with pytest.raises(ValueError, match="relevance"):
        select_frames(timestamps, 10, relevance=relevance[:5])
