"""Reading the published index: its parts open for search, one generation held whole as a Snapshot, and the
searches that merge the parts' results.

A part's rows of a video whose live part (in the manifest) is another one are dead -- a removed video, or the old
version of a changed one -- and a search filters them out (faiss.IDSelectorBitmap), then merges the parts' results
by score."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from videomini.storage.hits import Hit, TextHit
from videomini.storage.vector_index import search_index, vectors_at

IDS_DTYPE = np.dtype([("video_id", "<i8"), ("frame_idx", "<i8"), ("timestamp_s", "<f8")])
TEXT_IDS_DTYPE = np.dtype([("video_id", "<i8"), ("segment_idx", "<i8"), ("start_s", "<f8"), ("end_s", "<f8")])


@dataclass
class OpenPartIndex:
    """One kind (frames or text) of one index part, open for search: immutable, so shared by every snapshot
    that names it."""

    index_file: str
    index: Any
    ids: np.ndarray  # IDS_DTYPE or TEXT_IDS_DTYPE, memory-mapped
    nprobe: int | None
    runs: dict[int, tuple[int, int]]  # video id -> its rows [start, end) in this part

    def live(self, part_id: str, videos: dict[int, dict]) -> LivePartIndex:
        """This part index as one generation sees it: rows of videos whose live part is another one are dead."""
        dead = [(a, b) for video_id, (a, b) in self.runs.items() if videos.get(video_id, {}).get("part") != part_id]
        if not dead:
            return LivePartIndex(self, None, len(self.ids))
        alive = np.ones(len(self.ids), bool)
        for a, b in dead:
            alive[a:b] = False
        return LivePartIndex(self, np.packbits(alive, bitorder="little"), int(alive.sum()))


class LivePartIndex(NamedTuple):
    part: OpenPartIndex
    bitmap: np.ndarray | None  # live rows (faiss.IDSelectorBitmap), None when all are live
    n_live: int

    def alive(self) -> np.ndarray:
        """A boolean mask of the live rows."""
        n = len(self.part.ids)
        return np.ones(n, bool) if self.bitmap is None else np.unpackbits(self.bitmap, bitorder="little")[:n] > 0


class Snapshot(NamedTuple):
    """One published generation, as a reader holds it: whatever the writer does next, it stays whole."""

    generation: int
    manifest: dict
    videos: dict[int, dict]
    frames: list[LivePartIndex]
    text: list[LivePartIndex]
    segment_texts: dict  # video_id -> [(source, text)], filled as text searches need them

    @property
    def n_vectors(self) -> int:
        return sum(p.n_live for p in self.frames)

    @property
    def text_n_vectors(self) -> int:
        return sum(p.n_live for p in self.text)


def video_runs(ids: np.ndarray) -> dict[int, tuple[int, int]]:
    """video id -> [start, end) of its rows (a part adds each video's rows together)."""
    video_ids = np.asarray(ids["video_id"])
    if not len(video_ids):
        return {}
    starts = np.r_[0, np.flatnonzero(np.diff(video_ids)) + 1]
    ends = np.r_[starts[1:], len(video_ids)]
    return {int(video_ids[a]): (int(a), int(b)) for a, b in zip(starts, ends)}


def merged(parts: list[LivePartIndex], queries: np.ndarray, top_k: int,
           nprobe: int | None) -> list[list[tuple[float, OpenPartIndex, int]]]:
    """Each query's top_k (score, part, row) over all parts, best first."""
    scores, rows, owners = [], [], []
    for i, live in enumerate(parts):
        if live.n_live == 0:
            continue
        s, r = search_index(live.part.index, queries, min(top_k, live.n_live), nprobe or live.part.nprobe,
                            live.bitmap)
        scores.append(s)
        rows.append(r)
        owners.append(np.full(r.shape, i))
    if not scores:
        return [[] for _ in queries]
    scores, rows, owners = np.concatenate(scores, 1), np.concatenate(rows, 1), np.concatenate(owners, 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return [[(float(scores[q, j]), parts[owners[q, j]].part, int(rows[q, j])) for j in order[q] if rows[q, j] >= 0]
            for q in range(len(queries))]


def search_frames(snap: Snapshot, queries: np.ndarray, top_k: int, nprobe: int | None = None) -> list[list[Hit]]:
    """Nearest frames of unit-length `queries` (Q, D) over every part of one snapshot, best first."""
    out = []
    for matches in merged(snap.frames, queries, top_k, nprobe):
        vectors = _hit_vectors(matches)  # search calibrates each hit against its own vector
        hits = []
        for (score, part, row), vector in zip(matches, vectors):
            rec = part.ids[row]
            video_id = int(rec["video_id"])
            hits.append(Hit(snap.videos[video_id]["path"], float(rec["timestamp_s"]), int(rec["frame_idx"]),
                            score, video_id, vector))
        out.append(hits)
    return out


def _hit_vectors(matches: list[tuple[float, OpenPartIndex, int]]) -> list[np.ndarray]:
    """The stored vectors of (score, part, row) matches, one reconstruction per part."""
    out: list[Any] = [None] * len(matches)
    by_part: dict[int, list[int]] = {}
    for i, (_, part, _) in enumerate(matches):
        by_part.setdefault(id(part), []).append(i)
    for positions in by_part.values():
        part = matches[positions[0]][1]
        for i, vector in zip(positions, vectors_at(part.index, np.array([matches[i][2] for i in positions]))):
            out[i] = vector
    return out


def sample(snap: Snapshot, kind: str, n: int, seed: int = 0) -> np.ndarray:
    """Up to `n` live vectors of the snapshot's "frames" or "text" parts, drawn at random with a fixed seed
    (each part in proportion to its live rows)."""
    parts = [p for p in (snap.frames if kind == "frames" else snap.text) if p.n_live]
    total = sum(p.n_live for p in parts)
    rng = np.random.default_rng(seed)
    out = [np.zeros((0, 1), np.float32)] if not parts else []
    for live in parts:
        rows = np.flatnonzero(live.alive())
        rows = np.sort(rng.choice(rows, size=min(len(rows), max(1, round(n * live.n_live / total))), replace=False))
        out.append(vectors_at(live.part.index, rows))
    return np.concatenate(out) if len(out) > 1 else out[0]


def search_text(snap: Snapshot, query: np.ndarray, top_k: int, segment_texts: Callable[[str], list]) -> list[TextHit]:
    """Text segments nearest a unit-length query (1, E); `segment_texts(shard)` reads a shard's texts."""
    hits = []
    for score, part, row in merged(snap.text, query, top_k, None)[0]:
        rec = part.ids[row]
        video_id = int(rec["video_id"])
        if video_id not in snap.segment_texts:  # read once per snapshot, from the shard's metadata
            snap.segment_texts[video_id] = [tuple(x) for x in segment_texts(snap.videos[video_id]["shard"])]
        source, text = snap.segment_texts[video_id][int(rec["segment_idx"])]
        hits.append(TextHit(snap.videos[video_id]["path"], float(rec["start_s"]), float(rec["end_s"]), source,
                            text, score, video_id, vectors_at(part.index, np.array([row]))[0]))
    return hits
