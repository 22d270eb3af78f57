"""What a search returns: frame hits, text hits, and moments (adjacent hits of a video merged)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from videomini.moments import moment_gap, runs

MOMENT_GAP_S = moment_gap(1.0)  # at the default 1 frame/s: hits of one video at most 1.5 s apart form one moment


class Hit(NamedTuple):
    path: str
    timestamp_s: float
    frame_idx: int
    score: float
    video_id: int
    vector: Any = None  # the stored (unit) frame embedding: search calibrates with it (videomini.search.QueryBank)


class TextHit(NamedTuple):
    path: str
    start_s: float
    end_s: float
    source: str  # "speech" | "ocr"
    text: str
    score: float  # cosine between the query's and the segment's text embeddings
    video_id: int
    vector: Any = None  # the stored (unit) text embedding: search calibrates with it (videomini.search.QueryBank)


class Moment(NamedTuple):
    path: str
    start_s: float
    end_s: float
    score: float  # best hit's score
    best_s: float  # timestamp of the best hit
    n_hits: int
    video_id: int


def moments(hits: Iterable[Hit], gap_s: float = MOMENT_GAP_S) -> list[Moment]:
    """Merge hits of the same video at most `gap_s` apart into moments (`videomini.moments.runs`), best first."""
    hits = list(hits)
    out: list[Moment] = []
    for run in runs([h.timestamp_s for h in hits], gap_s, [h.video_id for h in hits]):
        group = [hits[i] for i in run]
        best = max(group, key=lambda h: h.score)
        out.append(Moment(best.path, group[0].timestamp_s, group[-1].timestamp_s, best.score, best.timestamp_s,
                          len(group), best.video_id))
    out.sort(key=lambda m: (-m.score, m.path, m.start_s))
    return out
