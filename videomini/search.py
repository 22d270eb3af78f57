"""Ranking moments for a query: one implementation for `search`, `ask --library` retrieval and the
evidence-only answers.

Each signal gives a ranked list: frames (the query's CLIP text embedding against the frames' CLIP image
embeddings), speech and on-screen text (the query's sentence embedding against the segments'). Raw similarities
do not compare across models, across queries of one model, nor across items: a frame unlike the rest of its video
(a drawn caption, a title card) lies far from the library's median for *any* query. So each is calibrated twice.
Per item: a frame's similarity to the query as a z against its similarities to a fixed bank of generic queries
(`QueryBank`), so a frame that stands out for every query does not stand out for this one; a text's cosine less
half its hubness (`Hubness`, CSLS), which measured better on text. Per query (`measured_background`): the list's
values over a random sample of the same index give the query's centre; the generic queries' values over the same
items give the spread and the noise ceiling (what the best item reaches for a query about none of them, grown to
all N items by sqrt(2 ln N)); a hit's *evidence* is how far it stands above that ceiling. A list whose hits are
all near background (a random or weak CLIP tower, a query that names nothing in the library) so gives zero
evidence and cannot move the ranking. A moment joins the hits of different signals that overlap in one video and
scores the sum of their evidence: a strong hit of one signal outranks a weak coincidence of two, and two strong
signals that agree rank above either alone. Its span is that of the hits that carry evidence (the strongest
alone when none does), at most `MAX_MOMENT_S` around its best evidence, `best_s`. It is confident when its
evidence reaches its strongest list's margin, measured from the same generic queries (how far above their median
best item all but `FALSE_CONFIDENT_RATE` of them reach); `relevance` puts the evidence on a 0-1 scale, 0.5 at
the margin.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videomini.config import TOP_K
from videomini.errors import VideominiError
from videomini.moments import moment_gap, runs

SIGNALS = ("visual", "speech", "ocr")
NOTHING_MATCHES = "nothing in the library matches this query: no moment stands out (the closest are shown)"
CANDIDATES_PER_RESULT = 8  # hits fetched from each index per moment returned
BACKGROUND_SAMPLE = 1024  # stored vectors a query is compared with to find its background
MIN_SCALE = 0.02  # floor of a background's spread (cosine units): a handful of similar values is not a scale
MAX_MOMENT_S = 10.0  # longest span a moment reports (see README: one sentence or one shot, a place to watch)
NEAR_PEAK_Z = 1.0  # frames within this many background spreads of a visual moment's peak frame share its span
CONFIDENT_EVIDENCE = 1.0  # least evidence a moment needs to be confident (in background spreads)
FALSE_CONFIDENT_RATE = 0.05  # share of queries about nothing in an index allowed a confident moment (measured margin)
ITEM_MIN_SCALE = 0.01  # floor of one item's spread over the generic queries (cosine units)
NULL_MIN_SCALE = 0.25  # floor of the generic queries' spread over items' z (a tower that embeds all text alike)
HUB_NEIGHBOURS = 10  # k of CSLS (Conneau et al., 2018), its published value: a text's k nearest stored texts
MIN_CEILING = 1.0  # the best of several unrelated items lies at least one spread above their median

# Queries about nothing in particular, in the forms users type (a thing, a scene, a question, a sentence heard):
# what a stored item scores for these is what it scores for a query that is not about it. Fixed text, so its
# embedding depends only on the model (cached per model); never tuned on a benchmark corpus.
GENERIC_QUERIES = (
    "a person", "people talking", "a man speaking", "a woman speaking", "a group of people", "a child",
    "an animal", "a dog", "a bird", "a car", "a bicycle", "a building", "a street", "a room", "a kitchen",
    "an office", "a shop", "outdoors", "indoors", "the sky", "water", "trees", "a city", "the countryside",
    "night", "daytime", "text on the screen", "a sign", "a logo", "a title", "numbers", "a picture",
    "something moving", "close up", "a wide shot", "the camera", "music", "a noise", "silence", "a voice",
    "what is happening", "what is this about", "where is this", "when does it start", "how much does it cost",
    "how long does it take", "who is speaking", "what did they say", "what time is it", "how many are there",
    "is it open", "where do I go", "what should I do", "why did it happen", "what comes next", "how does it work",
    "can I do that", "what is the name", "which one", "how far is it", "the beginning", "the end",
    "an announcement", "an instruction", "a warning", "a question", "an answer", "a description",
    "the news", "the weather", "food", "money", "time", "travel", "work", "health", "sport", "learning",
    "a place", "an event", "a thing", "a plan", "a problem", "a rule", "a list", "a story",
    "it is important", "please remember this", "thank you", "welcome", "look at this", "here it is",
    "something happened", "nothing special", "a moment", "today", "tomorrow", "yesterday",
)


@dataclass(frozen=True)
class Background:
    """Where a query's similarities lie when nothing matches: centre and spread over a sample of the index it
    searched, and the index's size (the more vectors, the higher pure noise can reach)."""

    center: float
    scale: float
    n_total: int
    ceiling: float | None = None  # measured: what the best item reaches for queries not about it (QueryBank)
    margin: float = CONFIDENT_EVIDENCE  # evidence a confident hit needs: measured by `measured_background`

    @classmethod
    def of(cls, similarities: Sequence[float] | np.ndarray, n_total: int | None = None,
           min_scale: float = MIN_SCALE) -> Background:
        """Median and 1.4826 x MAD (robust: the few true matches in the sample do not move them), the spread at
        least `min_scale`."""
        values = np.asarray(similarities, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return cls(0.0, 1.0, max(1, n_total or 1))
        center = float(np.median(values))
        scale = max(min_scale, 1.4826 * float(np.median(np.abs(values - center))))
        return cls(center, scale, max(1, int(n_total or values.size)))

    @property
    def noise_ceiling(self) -> float:
        """The z that the best of `n_total` unrelated similarities reaches: measured when `ceiling` is given, else
        the expected maximum of N Gaussians."""
        return self.ceiling if self.ceiling is not None else gaussian_max(self.n_total)

    def z(self, similarity: float) -> float:
        return (float(similarity) - self.center) / self.scale

    def evidence(self, similarity: float) -> float:
        """How far a similarity stands above what noise reaches in this index; 0 when it does not."""
        return max(0.0, self.z(similarity) - self.noise_ceiling)


@dataclass(frozen=True)
class Hubness:
    """Cross-domain similarity local scaling (CSLS) for text: a stored text that lies close to many others (a short
    caption, "GIFT SHOP") lies close to many queries too and wins on proximity, not meaning. Its hubness r is the
    mean cosine to its k nearest stored texts (in the background sample), and a query's similarity to it counts
    as cos - r/2 — CSLS's 2cos - r_query - r_text halved, with r_query constant within one query."""

    sample: np.ndarray  # (S, D) unit vectors: the index's background sample
    sample_r: np.ndarray  # (S,) hubness of each sample vector (its own match excluded)

    @classmethod
    def of_sample(cls, sample: np.ndarray) -> Hubness:
        sample = np.asarray(sample, dtype=np.float32)
        return cls(sample, cls._mean_top(sample @ sample.T))

    def of(self, vectors: np.ndarray) -> np.ndarray:
        """Hubness of stored texts (N, D) -> (N,); a vector that is itself in the sample does not count itself."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.sample.shape[1])
        return self._mean_top(vectors @ self.sample.T)

    @staticmethod
    def _mean_top(cosines: np.ndarray) -> np.ndarray:
        """Mean of each row's `HUB_NEIGHBOURS` largest cosines, leaving out the text itself (or an exact copy)."""
        if cosines.size == 0 or cosines.shape[1] < 2:
            return np.zeros(cosines.shape[0])
        others = np.where(cosines > 1.0 - 1e-5, -np.inf, cosines)
        k = min(HUB_NEIGHBOURS, cosines.shape[1] - 1)
        top = -np.partition(-others, k - 1, axis=1)[:, :k]  # the k largest, in any order: only their mean counts
        finite = np.isfinite(top)
        return np.where(finite, top, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)

    @staticmethod
    def corrected(cosines: np.ndarray, r: np.ndarray) -> np.ndarray:
        return np.asarray(cosines, dtype=np.float64) - 0.5 * np.asarray(r, dtype=np.float64)


def gaussian_max(n: int) -> float:
    """sqrt(2 ln n): about where the largest of n standard Gaussians lies."""
    return math.sqrt(2.0 * math.log(n)) if n > 1 else 0.0


@dataclass(frozen=True)
class QueryBank:
    """The item side of the calibration: `GENERIC_QUERIES` embedded by one model (B, D). An item whose
    similarity is high for every query (a frame unlike the rest of its video, a caption close to everything) has
    a high centre here, so it stands out for a query only by how far it rises above its own centre, in its own
    spread (median and 1.4826 x MAD over the bank)."""

    vectors: np.ndarray  # (B, D) unit rows

    def standardized(self, similarities: Sequence[float] | np.ndarray, items: np.ndarray) -> np.ndarray:
        """Each item's similarity to the query as a z against its similarities to the generic queries."""
        center, scale, _ = self._item_stats(items)
        return (np.asarray(similarities, dtype=np.float64).reshape(-1) - center) / scale

    def _item_stats(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per item: median and 1.4826 x MAD of its similarities to the generic queries, and those (N, B)."""
        items = np.asarray(items, dtype=np.float32).reshape(-1, self.vectors.shape[1])
        bank = (items @ self.vectors.T).astype(np.float64)  # (N, B)
        center = np.median(bank, axis=1)
        scale = np.maximum(ITEM_MIN_SCALE, 1.4826 * np.median(np.abs(bank - center[:, None]), axis=1))
        return center, scale, bank

    def generic_z(self, sample: np.ndarray) -> np.ndarray:
        """(S, B): each generic query's per-item z over the sample items (what `standardized` gives a query)."""
        center, scale, bank = self._item_stats(sample)
        return (bank - center[:, None]) / scale[:, None]


def measured_background(query_values: np.ndarray, generic_values: np.ndarray, n_total: int,
                        min_scale: float = MIN_SCALE) -> Background:
    """A query's background over a sample of the index, measured against queries not about it: centred on the
    median of this query's values over the sample items, in the spread that the generic queries' values
    (`generic_values`, (S, B), calibrated as the query's are) show across the same items, with the noise ceiling
    they reach there -- the median over generic queries of their best item, plus the expected maximum's growth
    from the S sampled items to all N -- and the confident margin: how far above that median the best item of
    all but `FALSE_CONFIDENT_RATE` of the generic queries lies (their best items scatter with a long upper tail,
    so one fixed margin let a query about nothing that shares a word with one item pass as a match)."""
    query_values = np.asarray(query_values, dtype=np.float64).reshape(-1)
    if query_values.size == 0:
        return Background(0.0, 1.0, max(1, n_total))
    shifted = generic_values - np.median(generic_values, axis=0)
    spread = max(min_scale, float(np.median(1.4826 * np.median(np.abs(shifted), axis=0))))
    bests = shifted.max(axis=0) / spread  # (B,) what each query about none of them reaches
    best = float(np.median(bests))
    ceiling = max(MIN_CEILING, best + gaussian_max(max(n_total, query_values.size)) - gaussian_max(query_values.size))
    # e.g. bests' median 2.5 and 95th percentile 4.1 spreads: confident from 1.6 spreads above the ceiling
    margin = max(CONFIDENT_EVIDENCE, float(np.quantile(bests, 1.0 - FALSE_CONFIDENT_RATE)) - best)
    return Background(float(np.median(query_values)), spread, max(1, n_total), ceiling=ceiling, margin=margin)


_banks: dict[tuple[str, int], QueryBank] = {}


def query_bank(embed: Any, model_key: str) -> QueryBank:
    """`GENERIC_QUERIES` embedded with `embed(list[str]) -> (B, D)`, once per model (`model_key` names it)."""
    key = (model_key, id(embed.__self__) if hasattr(embed, "__self__") else id(embed))
    if key not in _banks:
        vectors = np.asarray(embed(list(GENERIC_QUERIES)), dtype=np.float32)
        _banks[key] = QueryBank(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))
    return _banks[key]


@dataclass
class Candidate:
    """One hit of one signal's list: a span of a video and its raw similarity to the query."""

    video: str
    start_s: float
    end_s: float
    best_s: float
    similarity: float
    signal: str  # visual | speech | ocr
    text: str | None = None
    cosine: float | None = None  # the raw cosine, where `similarity` is calibrated per item (QueryBank)


@dataclass
class SearchMoment:
    video: str
    start_s: float
    end_s: float
    score: float  # summed calibrated evidence of its signals (the ranking key)
    best_s: float  # the time of its best evidence (the strongest hit's frame, or the start of its segment)
    confident: bool = False  # score >= the margin of its strongest hit's list (`Background.margin`)
    thumbnail: str | None = None
    matches: list[dict] = field(default_factory=list)  # per signal: signal, rank, similarity, z, evidence, span, text
    relevance: float = 0.0  # `relevance(score, margin)`: 0 = nothing above noise, 0.5 = confident, 1 = far above
    margin: float = CONFIDENT_EVIDENCE  # the evidence this moment needed to be confident (its best hit's list's)

    @property
    def signals(self) -> list[str]:
        return [m["signal"] for m in self.matches]

    @property
    def name(self) -> str:
        """The video's file name (the full path is `video`)."""
        return Path(self.video).name

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


def relevance(score: float, margin: float = CONFIDENT_EVIDENCE) -> float:
    """A moment's evidence on a 0-1 scale a person can read: score / (score + margin). 0 means no signal rises
    above what unrelated content reaches for this query; 0.5 is the confidence threshold (the margin, at least
    one background spread, above that); 0.75 is three margins, 0.9 nine."""
    return round(score / (score + margin), 3) if score > 0 else 0.0


def visual_candidates(times_s: np.ndarray, similarities: np.ndarray, videos: Sequence[str], background: Background,
                      gap_s: float, frame_s: float) -> list[Candidate]:
    """Frame hits -> visual moments. Hits of a video closer than `gap_s` form one run (one moment); its span is
    the peak frame and the frames of the run within `NEAR_PEAK_Z` spreads of it, at most `MAX_MOMENT_S`: frames
    of one shot all look alike to CLIP, so adjacency alone would stretch a moment over the whole shot."""
    out = []
    for run in runs(times_s, gap_s, videos):
        peak = max(run, key=lambda i: similarities[i])
        floor = similarities[peak] - NEAR_PEAK_Z * background.scale
        near = [times_s[i] for i in run
                if similarities[i] >= floor and abs(times_s[i] - times_s[peak]) <= MAX_MOMENT_S / 2]
        out.append(Candidate(videos[peak], float(min(near)), float(max(near)) + frame_s, float(times_s[peak]),
                             float(similarities[peak]), "visual"))
    return out


def fuse(lists: dict[str, list[Candidate]], backgrounds: dict[str, Background], gap_s: float = 1.5,
         max_span_s: float = MAX_MOMENT_S) -> list[SearchMoment]:
    """Moments from ranked lists ({signal: candidates}), best first.

    Taking candidates by evidence (then z), a candidate joins the first moment of its video that has no hit of
    its signal yet and whose span it overlaps or comes within `gap_s` of; otherwise it starts a moment. A moment
    scores the sum of its hits' evidence; its span covers the hits with evidence (the strongest alone when none
    has any), cut to `max_span_s` around `best_s`."""
    scored = []
    for signal, candidates in lists.items():
        background = backgrounds[signal]
        ranked = sorted(candidates, key=lambda c: -c.similarity)
        scored += [(background.evidence(c.similarity), background.z(c.similarity), rank, c)
                   for rank, c in enumerate(ranked, 1)]
    scored.sort(key=lambda s: (-s[0], -s[1], s[3].video, s[3].start_s))
    groups: list[list[tuple]] = []
    for item in scored:
        c = item[3]
        for group in groups:
            head = group[0][3]
            start, end = _span([g[3] for g in group if g[0] > 0] or [head])
            if (head.video == c.video and all(g[3].signal != c.signal for g in group)
                    and c.start_s <= end + gap_s and c.end_s >= start - gap_s):
                group.append(item)
                break
        else:
            groups.append([item])
    moments = [_moment(group, max_span_s, backgrounds[group[0][3].signal].margin) for group in groups]
    moments.sort(key=lambda m: (-m.score, -max(x["z"] for x in m.matches), m.video, m.start_s))
    return moments


def _span(candidates: list[Candidate]) -> tuple[float, float]:
    return min(c.start_s for c in candidates), max(c.end_s for c in candidates)


def _moment(group: list[tuple], max_span_s: float, margin: float = CONFIDENT_EVIDENCE) -> SearchMoment:
    """One moment from its hits (the first is the strongest; `margin`: the evidence its list needs to be
    confident)."""
    best = group[0][3]
    start, end = _span([g[3] for g in group if g[0] > 0] or [best])
    if end - start > max_span_s:  # keep the part around the best evidence
        start = max(start, min(best.best_s - max_span_s / 2, end - max_span_s))
        end = start + max_span_s
    score = sum(g[0] for g in group)
    matches = [{"signal": c.signal, "rank": rank, "similarity": round(c.similarity, 4), "z": round(z, 2),
                "evidence": round(evidence, 3), "start_s": round(c.start_s, 3), "end_s": round(c.end_s, 3),
                **({"cosine": round(c.cosine, 4)} if c.cosine is not None else {}),
                **({"text": c.text} if c.text is not None else {})} for evidence, z, rank, c in group]
    return SearchMoment(best.video, round(start, 3), round(end, 3), round(score, 4), round(best.best_s, 3),
                        confident=score >= margin, matches=matches, relevance=relevance(score, margin),
                        margin=round(margin, 3))


def text_tower_for(model_id: str, device: str = "cpu") -> Any:
    """The query encoder of the frames: the CLIP text tower beside the checkpoint's vision tower — search needs
    only that, not the LLM. Its ONNX export when one is cached (no torch, no transformers: `query_encoder`), else
    the tower loaded with transformers and exported for the next search."""
    from videomini.query_encoder import cached

    exported = cached("clip", model_id)
    if exported is not None:
        return exported
    text_tower = _load_text_tower(model_id, device)
    text_tower.export_query_encoder(model_id)
    return text_tower


def _load_text_tower(model_id: str, device: str) -> Any:
    from videomini.loading import CheckpointError, read_config, resolve_checkpoint, resolve_vision_tower
    from videomini.retrieval import load_text_tower

    folder = resolve_checkpoint(model_id)
    tower = resolve_vision_tower(read_config(folder)["mm_vision_tower"], folder)
    text_tower = load_text_tower(tower, device)
    if text_tower is None:
        raise CheckpointError(f"{tower}: the vision tower has no CLIP text tower, so text search is not possible")
    return text_tower


def prepare_query_encoders(model_id: str | None, text_embedder: Any = None) -> None:
    """Export the query encoders a library's search will need (called by `index`), so that the first search is
    as quick as the next: the CLIP text tower of `model_id`'s frames, the sentence embedder of its text. Best
    effort: what cannot be exported is loaded the usual way by the search."""
    from videomini.query_encoder import cached

    if model_id and cached("clip", model_id) is None:
        with contextlib.suppress(VideominiError, OSError):
            text_tower_for(model_id)
    if text_embedder is not None and hasattr(text_embedder, "export_query_encoder"):
        text_embedder.export_query_encoder()


def search_library(library_dir: str | os.PathLike, query: str, top_k: int = TOP_K, text_tower: Any = None,
                   thumbnails_dir: str | os.PathLike | None = None, gap_s: float | None = None,
                   text_embedder: Any = None, signals: Sequence[str] = SIGNALS,
                   notes: list[str] | None = None) -> list[SearchMoment]:
    """The `top_k` best moments for `query`, best first, fused over frames and stored speech / on-screen text
    (each moment's best frame written to `thumbnails_dir` when one is given).

    `signals` limits the lists fused. When the library holds text but the CLIP text tower cannot be loaded (no
    checkpoint on this machine), the search runs on text alone and says so in `notes`."""
    from videomini.errors import CheckpointError
    from videomini.storage import LibraryError, LibraryStore

    notes = notes if notes is not None else []
    lists: dict[str, list[Candidate]] = {}
    backgrounds: dict[str, Background] = {}
    with LibraryStore(library_dir) as library:
        index = library.manifest() or {}
        has_frames, has_text = bool(index.get("n_vectors")), bool(index.get("text_n_vectors"))
        if not has_frames and not has_text:
            raise LibraryError(f"{library.root}: nothing indexed to search yet")
        fps = max([(v.get("fps") or 1.0) for v in library.videos("done")] or [1.0])
        gap_s = gap_s if gap_s is not None else moment_gap(1.0 / fps)
        depth = max(1, top_k) * CANDIDATES_PER_RESULT
        if has_frames and "visual" in signals:
            try:
                text_tower = text_tower or text_tower_for(library.indexed_model_id())
            except CheckpointError as e:
                if not has_text:
                    raise
                notes.append(f"frames not searched ({e}); searched speech and on-screen text only")
            else:
                _visual_list(library, query, text_tower, depth, gap_s, 1.0 / fps, lists, backgrounds)
        if has_text and {"speech", "ocr"} & set(signals):
            text_embedder = text_embedder or library_text_embedder(library)
            _text_lists(library, query, text_embedder, depth, signals, lists, backgrounds)
    results = fuse(lists, backgrounds, gap_s)[:top_k]
    if not any(m.confident for m in results):
        notes.append(NOTHING_MATCHES)
    if thumbnails_dir is not None:
        write_thumbnails(results, Path(thumbnails_dir))
    return results


def library_text_embedder(library: Any) -> Any:
    """The sentence embedder the library's text was indexed with (its `text_model`; the bundled MiniLM when none
    is recorded): a query must be embedded by the model that embedded what it is compared with. Its ONNX export
    when one is cached, else the model loaded with sentence-transformers and exported for the next search."""
    from videomini.query_encoder import cached
    from videomini.signals.text import MINILM, TextEmbedder, default_embedder

    name = str(library.meta().get("text_model") or "") or MINILM
    exported = cached("sentence", name)
    if exported is not None:
        return exported
    embedder = default_embedder() if name == MINILM else TextEmbedder.shared(name)
    embedder.export_query_encoder()
    return embedder


def _visual_list(library: Any, query: str, text_tower: Any, depth: int, gap_s: float, frame_s: float,
                 lists: dict, backgrounds: dict) -> None:
    """The frame list: CLIP text embedding of the query against the frames', calibrated per item and per query."""
    query_vector = text_tower.encode([query])[0]
    bank = query_bank(text_tower.encode, f"clip:{getattr(text_tower, 'name', '')}")
    sample = library.sample_vectors("frames", BACKGROUND_SAMPLE)
    background = measured_background(bank.standardized(sample @ _unit(query_vector), sample),
                                     bank.generic_z(sample), library.manifest()["n_vectors"], NULL_MIN_SCALE)
    hits = library.search_vectors(query_vector, top_k=depth)
    if not hits:
        lists["visual"], backgrounds["visual"] = [], background
        return
    cosines = np.array([h.score for h in hits])
    z = bank.standardized(cosines, np.stack([h.vector for h in hits]))
    candidates = visual_candidates(np.array([h.timestamp_s for h in hits]), z, [h.path for h in hits], background,
                                   gap_s, frame_s)
    peak_cosine = {(h.path, h.timestamp_s): c for h, c in zip(hits, cosines)}
    for c in candidates:
        c.cosine = float(peak_cosine.get((c.video, c.best_s), float("nan")))
    lists["visual"], backgrounds["visual"] = candidates, background


def _text_lists(library: Any, query: str, text_embedder: Any, depth: int, signals: Sequence[str],
                lists: dict, backgrounds: dict) -> None:
    """The speech and on-screen text lists: sentence embeddings, hubness-corrected per item (CSLS) and calibrated
    per query against the generic queries (`measured_background`)."""
    query_vector = text_embedder.encode([query])[0]
    bank = query_bank(text_embedder.encode, f"text:{getattr(text_embedder, 'name', '')}")
    hubness = Hubness.of_sample(library.sample_vectors("text", BACKGROUND_SAMPLE))
    sample, half_r = hubness.sample, 0.5 * hubness.sample_r[:, None]
    background = measured_background(Hubness.corrected(sample @ _unit(query_vector), hubness.sample_r),
                                     sample.astype(np.float64) @ bank.vectors.T - half_r,
                                     library.manifest()["text_n_vectors"])
    hits = [hit for hit in library.search_text(query_vector, top_k=depth) if hit.source in signals]
    corrected = Hubness.corrected([h.score for h in hits], hubness.of(np.stack([h.vector for h in hits]))
                                  ) if hits else []
    for hit, similarity in zip(hits, corrected):
        lists.setdefault(hit.source, []).append(Candidate(
            hit.path, hit.start_s, hit.end_s, hit.start_s, float(similarity), hit.source, hit.text, cosine=hit.score))
        backgrounds[hit.source] = background


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def write_thumbnails(results: list[SearchMoment], folder: Path, max_side: int = 320) -> None:
    """Each moment's best frame as `NN-<video>-<time>s.jpg`; a file that moved since indexing gets none."""
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


def rank_segments(query: str, segments: Sequence[Any], embedder: Any, top_k: int = 5,
                  video: str = "") -> list[SearchMoment]:
    """The same ranking over text segments held in memory (one video's speech and on-screen text, extracted
    for `ask` without a library): calibrated against the query's similarities to all of them."""
    if not segments or top_k <= 0:
        return []
    vectors = embedder.encode([query] + [seg.text for seg in segments])
    cosines = (vectors[1:] @ vectors[0]).astype(np.float64)
    bank = query_bank(embedder.encode, f"text:{getattr(embedder, 'name', '')}")
    hubness = Hubness.of_sample(vectors[1:])
    similarities = Hubness.corrected(cosines, hubness.sample_r)
    background = measured_background(similarities, vectors[1:].astype(np.float64) @ bank.vectors.T
                                     - 0.5 * hubness.sample_r[:, None], len(segments))
    lists: dict[str, list[Candidate]] = {}
    for seg, cosine, similarity in zip(segments, cosines, similarities):
        lists.setdefault(seg.source, []).append(Candidate(video, seg.start_s, seg.end_s, seg.start_s,
                                                          float(similarity), seg.source, seg.text, float(cosine)))
    return fuse(lists, {signal: background for signal in lists}, gap_s=0.0)[:top_k]
