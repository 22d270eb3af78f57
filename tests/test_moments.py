"""The one rule for which hits form a moment (videomini/moments.py), as the three paths that report moments use it."""

from __future__ import annotations

import numpy as np

from videomini.answer import moments_from_scores
from videomini.moments import moment_gap, runs
from videomini.storage.hits import Hit, moments


def test_neighbouring_frames_join_and_a_skipped_frame_splits():
    assert moment_gap(1.0) == 1.5 and moment_gap(0.5) == 0.75
    # at 1 frame/s: 3-4-5 s are neighbours, 7 s follows a skipped frame, 8 s is another video's
    assert runs([5.0, 3.0, 7.0, 4.0, 8.0], moment_gap(1.0), ["a", "a", "a", "a", "b"]) == [[1, 3, 0], [2], [4]]
    assert runs([], 1.5) == []


def test_every_path_draws_the_same_moments_from_the_same_frames():
    times = np.array([10.0, 11.0, 12.0, 14.0, 30.0])
    scores = np.array([0.5, 0.9, 0.6, 0.8, 0.7])
    from_attention = moments_from_scores(times, scores, top_k=5, method="attention", spacing_s=1.0)
    from_hits = moments([Hit("a.mp4", t, i, s, 1) for i, (t, s) in enumerate(zip(times, scores))])
    spans = sorted((e.start_s, e.end_s - 1.0, e.time_s) for e in from_attention)  # evidence ends one frame later
    assert spans == sorted((m.start_s, m.end_s, m.best_s) for m in from_hits) == [
        (10.0, 12.0, 11.0), (14.0, 14.0, 14.0), (30.0, 30.0, 30.0)]
