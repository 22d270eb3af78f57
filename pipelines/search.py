"""`search` and `ask --library`: natural-language queries over an indexed library.

search: the query's CLIP text embedding against every stored frame embedding (FAISS), adjacent hits of a video
merged into moments; when the library holds speech / on-screen text, the query's MiniLM embedding against those
segments too. The two ranked lists (frames by CLIP, speech and on-screen text together by MiniLM) are fused by
reciprocal rank fusion: a frame moment and a text segment of the same video that overlap (or lie within `gap_s`)
become one moment, scored sum over lists of 1 / (RRF_K + rank). Ranks, not raw cosines, are fused because CLIP
and MiniLM similarities live on different scales; speech and on-screen text share one list because one model
embeds both, so their cosines compare.
ask: retrieve the best moments across the library, re-decode their frames, fuse the question with them and
answer with LLaVA-Mini (stored speech / on-screen text near those frames quoted into the prompt); the evidence
(the LLM's attention to each frame token) cites (video, time). With no LLaVA-Mini model, the stored signals
answer: the best text moments, quoted with their times.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from videomini.answer import Answer, Evidence
from videomini.storage import LibraryError, LibraryStore, moments

RRF_K = 60  # the constant of Cormack et al. (2009): damps the head of each list so that agreement counts
CANDIDATES_PER_RESULT = 8  # hits fetched from each index per moment returned


@dataclass
class SearchMoment:
    video: str
    start_s: float
    end_s: float
    score: float  # fused RRF score (the ranking key); each list's own similarity is in `matches`
    best_s: float  # best frame (or, for text-only moments, the start of the best segment)
    thumbnail: str | None = None
    matches: list[dict] = field(default_factory=list)  # per signal: signal, rank, similarity, start_s, end_s, text

    @property
    def signals(self) -> list[str]:
        return [m["signal"] for m in self.matches]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def library_model_id(library: LibraryStore) -> str:
    """The model the library was indexed with (one model per library)."""
    return library.indexed_model_id()


def text_tower_for(model_id: str, device: str | torch.device = "cpu") -> Any:
    """The CLIP text tower beside the checkpoint's vision tower — search needs only that, not the LLM."""
    from videomini.loading import CheckpointError, read_config, resolve_checkpoint, resolve_vision_tower
    from videomini.retrieval import load_text_tower

    folder = resolve_checkpoint(model_id)
    tower = resolve_vision_tower(read_config(folder)["mm_vision_tower"], folder)
    text_tower = load_text_tower(tower, device)
    if text_tower is None:
        raise CheckpointError(f"{tower}: the vision tower has no CLIP text tower, so text search is not possible")
    return text_tower


def search_library(library_dir: str | os.PathLike, query: str, top_k: int = 10, text_tower: Any = None,
                   thumbnails_dir: str | os.PathLike | None = None, gap_s: float | None = None,
                   text_embedder: Any = None, signals: tuple[str, ...] = ("visual", "speech", "ocr"),
                   notes: list[str] | None = None) -> list[SearchMoment]:
    """The `top_k` best moments for `query`, best first, fused over frames and stored speech / on-screen text.

    `signals` limits the lists fused. When the library holds text but the CLIP text tower cannot be loaded (no
    checkpoint on this machine), the search runs on text alone and says so in `notes`."""
    from videomini.loading import CheckpointError

    notes = notes if notes is not None else []
    with LibraryStore(library_dir) as library:
        index = library.manifest() or {}
        has_frames, has_text = bool(index.get("n_vectors")), bool(index.get("text_n_vectors"))
        fps = max([(v.get("fps") or 1.0) for v in library.videos("done")] or [1.0])
        gap_s = gap_s if gap_s is not None else 1.5 / fps
        ranked: dict[str, list[dict]] = {}
        if has_frames and "visual" in signals:
            try:
                text_tower = text_tower or text_tower_for(library_model_id(library))
            except CheckpointError as e:
                if not has_text:
                    raise
                notes.append(f"frames not searched ({e}); searched speech and on-screen text only")
            else:
                hits = library.search_vectors(text_tower.embed(query)[0].numpy(), top_k=top_k * CANDIDATES_PER_RESULT)
                ranked["visual"] = [{"video": m.path, "start_s": float(m.start_s), "end_s": float(m.end_s + 1.0 / fps),
                                     "best_s": float(m.best_s), "similarity": float(m.score)}
                                    for m in moments(hits, gap_s=gap_s)]
        if has_text and {"speech", "ocr"} & set(signals):
            if text_embedder is None:
                from videomini.pipelines.signals_answer import default_embedder

                text_embedder = default_embedder()
            for hit in library.search_text(text_embedder.encode([query])[0], top_k=top_k * CANDIDATES_PER_RESULT):
                if hit.source in signals:
                    ranked.setdefault("text", []).append(
                        {"video": hit.path, "start_s": hit.start_s, "end_s": hit.end_s, "best_s": hit.start_s,
                         "similarity": hit.score, "text": hit.text, "signal": hit.source})
        if not ranked and not has_frames and not has_text:
            raise LibraryError(f"{library.root}: nothing indexed to search yet")
    results = fuse_rankings(ranked, gap_s)[:top_k]
    if thumbnails_dir is not None:
        write_thumbnails(results, Path(thumbnails_dir))
    return results


def fuse_rankings(ranked: dict[str, list[dict]], gap_s: float = 1.5, k: int = RRF_K) -> list[SearchMoment]:
    """Reciprocal rank fusion of ranked lists ({list name: [{"video", "start_s", "end_s", "best_s", "similarity",
    "text"?, "signal"?}] best first}). Taking entries best rank first, an entry joins the first moment of its
    video that has nothing from its list yet and whose span it overlaps or comes within `gap_s` of; otherwise it
    starts a moment. A moment scores sum over its entries of 1 / (k + rank)."""
    entries = sorted(((rank, name, item) for name, items in ranked.items() for rank, item in enumerate(items, 1)),
                     key=lambda e: (e[0], e[1]))
    groups: list[dict] = []  # {"video", "start_s", "end_s", "members": {list name: (rank, item)}}
    for rank, name, item in entries:
        for group in groups:
            if (group["video"] == item["video"] and name not in group["members"]
                    and item["start_s"] <= group["end_s"] + gap_s and item["end_s"] >= group["start_s"] - gap_s):
                group["members"][name] = (rank, item)
                group["start_s"], group["end_s"] = min(group["start_s"], item["start_s"]), max(group["end_s"],
                                                                                               item["end_s"])
                break
        else:
            groups.append({"video": item["video"], "start_s": item["start_s"], "end_s": item["end_s"],
                           "members": {name: (rank, item)}})
    fused = []
    for group in groups:
        members = sorted(group["members"].items(), key=lambda kv: kv[1][0])
        matches = [{"signal": item.get("signal", name), "rank": rank, "similarity": round(float(item["similarity"]), 4),
                    "start_s": float(item["start_s"]), "end_s": float(item["end_s"]),
                    **({"text": item["text"]} if "text" in item else {})} for name, (rank, item) in members]
        anchor = group["members"]["visual"][1] if "visual" in group["members"] else members[0][1][1]
        fused.append(SearchMoment(group["video"], float(group["start_s"]), float(group["end_s"]),
                                  round(sum(1.0 / (k + rank) for _, (rank, _) in members), 6), float(anchor["best_s"]),
                                  matches=matches))
    fused.sort(key=lambda m: (-m.score, -max(x["similarity"] for x in m.matches), m.video, m.start_s))
    return fused


def write_thumbnails(results: list[SearchMoment], folder: Path, max_side: int = 320) -> None:
    from PIL import Image

    from videomini.video import VideoError, read_frames_at

    folder.mkdir(parents=True, exist_ok=True)
    for rank, moment in enumerate(results, 1):
        try:
            frames, _ = read_frames_at(moment.video, [moment.best_s], max_side=max_side)
        except (VideoError, ValueError):
            continue  # the file moved or changed since indexing: the moment is still reported
        target = folder / f"{rank:02d}-{Path(moment.video).stem}-{moment.best_s:08.2f}s.jpg"
        Image.fromarray(frames[0]).save(target, quality=90)
        moment.thumbnail = str(target)


def answer_library_from_signals(library_dir: str | os.PathLike, question: str, top_k: int = 3,
                                text_embedder: Any = None) -> Answer:
    """An evidence-only answer over a library: the stored speech / on-screen text moments that best match the
    question, quoted with (video, time). No generative model is involved, and the answer says so."""
    from videomini.pipelines.signals_answer import EVIDENCE_ONLY_LABEL, _clock

    started = time.perf_counter()
    with LibraryStore(library_dir) as library:
        if not (library.manifest() or {}).get("text_n_vectors"):
            raise LibraryError(f"{library.root}: no speech or on-screen text indexed to answer from without a model "
                               f"(index with `videomini index ... --library {library.root} --signals speech,ocr`)")
    found = search_library(library_dir, question, top_k=top_k, signals=("speech", "ocr"), text_embedder=text_embedder)
    lines, evidence = [EVIDENCE_ONLY_LABEL], []
    for moment in found:
        match = moment.matches[0]
        start, end = _clock(match["start_s"]), _clock(match["end_s"])
        span = start if start == end or match["signal"] == "speech" else f"{start}–{end}"
        where = "on screen" if match["signal"] == "ocr" else match["signal"]
        lines.append(f"{Path(moment.video).name} {span} ({where}): “{match['text']}”")
        evidence.append(Evidence(start_s=round(match["start_s"], 3), end_s=round(match["end_s"], 3),
                                 time_s=round(match["start_s"], 3), score=match["similarity"], method=match["signal"],
                                 video=moment.video))
    return Answer(question=question, text="\n".join(lines), evidence=evidence, frames_used=0, frames_total=0,
                  frame_times_s=[], model="all-MiniLM-L6-v2", generated_by="signals",
                  notes=["No generative model answered: these are the stored speech and on-screen text moments that "
                         "best match the question (MiniLM similarity, fused by rank), quoted with their times."],
                  timings_s={"total": round(time.perf_counter() - started, 3)})
