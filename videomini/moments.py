"""One rule for which hits form one moment, used by every path that reports moments: the frame hits of a library
search (`storage.hits.moments`), the frames a model attended to (`answer.moments_from_scores`) and the frame list
of the fused search (`search.visual_candidates`).

Hits of one video belong to one moment when each lies within `MOMENT_GAP_SPACINGS` sampling intervals of the
previous one: at 1 frame/s a gap of 1.5 s joins neighbouring frames and splits at the first skipped frame
(2 s apart).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

MOMENT_GAP_SPACINGS = 1.5  # hits closer than 1.5 sampling intervals belong to one moment


def moment_gap(spacing_s: float) -> float:
    """The largest gap (s) between two hits of one moment, for frames sampled every `spacing_s` seconds."""
    return MOMENT_GAP_SPACINGS * spacing_s


def runs(times_s: Sequence[float] | np.ndarray, gap_s: float,
         videos: Sequence[Hashable] | None = None) -> list[list[int]]:
    """Indices of hits grouped into moments: ordered by (video, time), a hit joins the run before it when it is
    of the same video and at most `gap_s` after that run's last hit. Runs come in (video, time) order."""
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    keys = [0] * len(times) if videos is None else list(videos)
    order = sorted(range(len(times)), key=lambda i: (str(keys[i]), times[i]))
    out: list[list[int]] = []
    for i in order:
        last = out[-1][-1] if out else None
        if last is not None and keys[last] == keys[i] and times[i] - times[last] <= gap_s:
            out[-1].append(i)
        else:
            out.append([i])
    return out
