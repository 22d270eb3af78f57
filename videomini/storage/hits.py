"""What a search returns: frame hits, text hits, and moments (adjacent hits of a video merged)."""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

MOMENT_GAP_S = 2.0  # hits of one video at most this far apart belong to one moment


class Hit(NamedTuple):
    path: str
    timestamp_s: float
    frame_idx: int
    score: float
    video_id: int


class TextHit(NamedTuple):
    path: str
    start_s: float
    end_s: float
    source: str  # "speech" | "ocr"
    text: str
    score: float  # cosine between the query's and the segment's text embeddings
    video_id: int
    vector: Any = None  # the stored (unit) text embedding: search calibrates with it (videomini.search.Hubness)


class Moment(NamedTuple):
    path: str
    start_s: float
    end_s: float
    score: float  # best hit's score
    best_s: float  # timestamp of the best hit
    n_hits: int
    video_id: int


def moments(hits: Iterable[Hit], gap_s: float = MOMENT_GAP_S) -> list[Moment]:
    """Merge hits of the same video whose timestamps are at most `gap_s` apart into moments, best first."""
    by_video: dict[int, list[Hit]] = {}
    for hit in hits:
        by_video.setdefault(hit.video_id, []).append(hit)
    out: list[Moment] = []
    for video_hits in by_video.values():
        video_hits.sort(key=lambda h: h.timestamp_s)
        group = [video_hits[0]]
        for hit in video_hits[1:] + [None]:
            if hit is not None and hit.timestamp_s - group[-1].timestamp_s <= gap_s:
                group.append(hit)
                continue
            best = max(group, key=lambda h: h.score)
            out.append(Moment(best.path, group[0].timestamp_s, group[-1].timestamp_s, best.score,
                              best.timestamp_s, len(group), best.video_id))
            group = [hit] if hit is not None else []
    out.sort(key=lambda m: (-m.score, m.path, m.start_s))
    return out
