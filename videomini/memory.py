"""Token memory, frame selection and the memory budget planner.

Three jobs that decide which frames reach the LLM:

- `FrameMemory` holds one video's frame tokens, timestamps and CLIP embeddings and searches the embeddings
  with FAISS;
- `parse_time_references` + `select_frames` choose at most `budget` frames for a question (explicit time
  references first, then retrieval, then uniform coverage);
- `plan_memory` computes the budget itself: how many frames fit in device memory next to the weights, and
  in the LLM's context. It counts parameters on the meta device, so it needs no weights and no GPU.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# =========================================================================================================
# Explicit time references in a question
# =========================================================================================================

_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty": 40, "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90,
}
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_VIDEO_NOUNS = r"(?:the\s+)?(?:video|clip|film|movie|recording|footage|stream|vid)\b"

# A number: digits, or a word ("five", "half an"). Single-letter units (h/m/s) only right after digits,
# so that "a s..." or "one m..." in ordinary prose never reads as a time.
_WORD_NUM = r"(?:half\s+an?|forty-five|" + "|".join(sorted((w for w in _NUMBER_WORDS if w != "forty-five"),
                                                            key=len, reverse=True)) + r")"
_DIGITS = r"\d+(?:\.\d+)?"
_UNITS = r"hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s"


def _amount(long_units: str, short_unit: str) -> str:
    return (rf"(?:{_DIGITS}\s*-?\s*(?:{long_units}|{short_unit})(?![a-z])"
            rf"|\b{_WORD_NUM}\s*-?\s*(?:{long_units})(?![a-z]))")


_H = _amount(r"hours?|hrs?", "h")
_M = _amount(r"minutes?|mins?", "m")
_S = _amount(r"seconds?|secs?", "s")
_SEP = r"\s*(?:,\s*|and\s+)?"
# Units in decreasing order only, so "between 1 minute and 2 minutes" stays two times, not one sum.
_DURATION = rf"(?:{_H}(?:{_SEP}{_M})?(?:{_SEP}{_S})?|{_M}(?:{_SEP}{_S})?|{_S})"
_CLOCK = r"(?<![\d:.])\d{1,3}(?::\d{2}){1,2}(?:\.\d+)?(?![\d:])"
_TIME = rf"(?:{_CLOCK}|{_DURATION})"
_BARE = rf"(?:{_DIGITS}|\b{_WORD_NUM})"
_FUZZY = ("around", "about", "approximately", "approx", "roughly", "near", "circa", "~")


def _number(text: str) -> float:
    text = re.sub(r"\s+", " ", text.strip())
    if text.startswith("half"):
        return 0.5
    return float(_NUMBER_WORDS[text]) if text in _NUMBER_WORDS else float(text)


def _parse_time(text: str) -> tuple[float, float] | None:
    """`"12:30"` → (750, 1); `"2 min"` → (120, 60): seconds, and the size of the finest unit given."""
    text = text.strip()
    if re.fullmatch(_CLOCK, text):
        parts = text.split(":")
        if any(float(p) >= 60 for p in parts[1:]):
            return None  # "1:75" is not a time
        seconds = 0.0
        for p in parts:
            seconds = seconds * 60 + float(p)
        return seconds, 1.0
    seconds, finest = 0.0, None
    for m in re.finditer(rf"({_DIGITS}|\b{_WORD_NUM})\s*-?\s*({_UNITS})(?![a-z])", text):
        unit = _UNIT_SECONDS[m.group(2)[0]]
        seconds += _number(m.group(1)) * unit
        finest = unit if finest is None else min(finest, unit)
    return (seconds, finest) if finest is not None else None


def _leading_unit(text: str) -> float:
    """The unit a bare number borrows from its partner ("between 1 and 2 minutes", "between 1 and 1:30")."""
    if re.fullmatch(_CLOCK, text.strip()):
        return 3600.0 if text.count(":") == 2 else 60.0
    m = re.search(rf"(?:{_DIGITS}|\b{_WORD_NUM})\s*-?\s*({_UNITS})(?![a-z])", text)
    return _UNIT_SECONDS[m.group(1)[0]] if m else 1.0


def _edge_width(duration_s: float) -> float:
    # "at the end" / "at the beginning": the last/first 10 % of the video, at least 10 s, at most 10 min.
    return max(10.0, min(0.10 * duration_s, 600.0))


def _point_half_width(finest_unit_s: float, fuzzy: bool, duration_s: float) -> float:
    # Precision of the reference: to the second ±5 s, whole minutes ±30 s, whole hours ±60 s; never wider
    # than 5 % of the video (but at least 5 s); "around"/"about" doubles it.
    half = 5.0 if finest_unit_s <= 1 else 30.0 if finest_unit_s <= 60 else 60.0
    half = min(half, max(5.0, 0.05 * duration_s))
    return 2 * half if fuzzy else half


def parse_time_references(question: str, duration_s: float) -> list[tuple[float, float]]:
    """Windows (start_s, end_s) of the video that the question names explicitly; [] when it names none.

    Times are written as clocks ("12:30" = 12 min 30 s, "1:02:03" = 1 h 2 min 3 s) or amounts ("90 seconds",
    "2 min", "1h30m", "1 hour and 5 minutes", "five minutes", "half a minute"). Rules, in priority order (the
    text a rule uses is not reused by a later one):

    1. Ranges: "between A and B", "from A to/until B" (also "from the start to B", "from A to the end";
       a bare number borrows B's unit: "between 1 and 2 minutes"), and "A-B" / "A to B" between clocks → [A, B].
    2. "T before the end" / "T from the end" → a point at duration − T.
    3. "first/opening T" → [0, T]; "last/final/closing T" → [duration − T, duration] (no number means one
       unit, "few" or a plural means three: "the last minute", "the last few seconds"); "first/second/last
       half|third|quarter" → that fraction of the video.
    4. "after/since/past T", "from T on(wards)" → [T, duration]; "before/until/till/up to/prior to T" → [0, T].
    5. Points: "at T", "around/about/approximately/roughly/near/~ T", "T in/into (the video)", "the T mark",
       and any bare clock ("12:30") → T ± a half-width set by the precision given: ±5 s to the second,
       ±30 s in whole minutes, ±60 s in hours, capped at 5 % of the video (never below ±5 s); "around"-like
       words double it.
    6. Words: "at/near/towards/by the (very) end", "the ending", "end of the video" → the last 10 % (10 s to
       10 min); the same for "the beginning/start/outset/opening"; "the middle", "midway", "halfway" → the
       centre ± 5 % (5 s to 5 min). "The end of the race" is not a time reference: after "of" only the video
       (clip, film, ...) counts.

    Windows are clipped to [0, duration_s]; one that falls wholly outside the video is dropped ("at 12:30" in a
    10-minute clip), overlapping windows are merged, and the list is sorted by start.
    """
    duration = float(duration_s)
    if not question or not math.isfinite(duration) or duration <= 0:
        return []
    text = question.lower().replace("\u2013", "-").replace("\u2014", "-").replace("\u2019", "'")
    windows: list[tuple[float, float]] = []

    def point(center: float, finest: float, fuzzy: bool) -> tuple[float, float]:
        half = _point_half_width(finest, fuzzy, duration)
        return center - half, center + half

    def rng(m: re.Match) -> tuple[float, float] | None:
        a_text, b_text = m.group("a"), m.group("b")
        if re.fullmatch(r"end|finish", b_text):
            b = duration
        else:
            parsed = _parse_time(b_text)
            if parsed is None:
                return None
            b = parsed[0]
        if re.fullmatch(r"start|beginning", a_text):
            a = 0.0
        elif re.fullmatch(_TIME, a_text):
            parsed = _parse_time(a_text)
            if parsed is None:
                return None
            a = parsed[0]
        else:  # a bare number: "between 1 and 2 minutes"
            a = _number(a_text) * _leading_unit(b_text)
        return (min(a, b), max(a, b))

    def from_end(m: re.Match) -> tuple[float, float] | None:
        parsed = _parse_time(m.group("t"))
        return None if parsed is None else point(duration - parsed[0], parsed[1], False)

    def first_last(m: re.Match) -> tuple[float, float] | None:
        t_text = m.group("t")
        if re.fullmatch(_TIME, t_text):
            parsed = _parse_time(t_text)
            if parsed is None:
                return None
            span = parsed[0]
        else:  # "minute", "few seconds", "minutes"
            unit = _UNIT_SECONDS[t_text.split()[-1][0]]
            span = unit * (3 if (t_text.startswith("few") or t_text.endswith("s")) else 1)
        if m.group("which") in ("first", "opening"):
            return 0.0, span
        return duration - span, duration

    def fraction(m: re.Match) -> tuple[float, float]:
        part = {"half": 2, "third": 3, "quarter": 4}[m.group("frac")]
        size = duration / part
        which = m.group("which")
        if which == "first":
            return 0.0, size
        if which == "second":
            return size, 2 * size
        if which == "third":
            return 2 * size, 3 * size
        return duration - size, duration

    def after(m: re.Match) -> tuple[float, float] | None:
        parsed = _parse_time(m.group("t"))
        return None if parsed is None else (parsed[0], duration)

    def before(m: re.Match) -> tuple[float, float] | None:
        parsed = _parse_time(m.group("t"))
        return None if parsed is None else (0.0, parsed[0])

    def at(m: re.Match) -> tuple[float, float] | None:
        parsed = _parse_time(m.group("t"))
        if parsed is None:
            return None
        prep = (m.groupdict().get("prep") or "")
        fuzzy = any(w in prep for w in _FUZZY)
        return point(parsed[0], parsed[1], fuzzy)

    def end(m: re.Match) -> tuple[float, float]:
        return duration - _edge_width(duration), duration

    def start(m: re.Match) -> tuple[float, float]:
        return 0.0, _edge_width(duration)

    def middle(m: re.Match) -> tuple[float, float]:
        half = max(5.0, min(0.05 * duration, 300.0))
        return duration / 2 - half, duration / 2 + half

    not_other = rf"(?!\s+of\s+(?!{_VIDEO_NOUNS}))"  # "the end of the race" is about the race, not the video
    unit_only = r"(?:few\s+)?(?:hours?|minutes?|seconds?)(?![a-z])"
    rules: list[tuple[str, Any]] = [
        (rf"\b(?:between|from)\s+(?:the\s+)?(?P<a>{_TIME}|{_BARE}|start|beginning)\s*(?:mark\s*)?"
         rf"(?:and|to|until|till|through|-)\s*(?:the\s+)?(?P<b>{_TIME}|end|finish)(?![a-z])", rng),
        (rf"(?P<a>{_CLOCK})\s*(?:-|to|until|till)\s*(?P<b>{_CLOCK})", rng),
        (rf"(?P<t>{_TIME})\s+(?:before|from)\s+the\s+end\b", from_end),
        (rf"\b(?P<which>first|second|third|last|final)\s+(?P<frac>half|third|quarter)\b"
         r"(?!\s+an?\s+(?:hour|minute|second))", fraction),
        (rf"\b(?P<which>first|opening|last|final|closing)\s+(?P<t>{_TIME}|{unit_only})", first_last),
        (rf"\bfrom\s+(?:the\s+)?(?P<t>{_TIME})\s*(?:mark\s+)?on(?:wards?)?\b", after),
        (rf"\b(?:after|since|past|beyond)\s+(?:the\s+)?(?P<t>{_TIME})", after),
        (rf"\b(?:before|until|till|up\s+to|prior\s+to)\s+(?:the\s+)?(?P<t>{_TIME})", before),
        (rf"(?P<prep>\bat\s+(?:(?:around|about|approximately|approx\.?|roughly)\s+)?|\b(?:around|about|"
         rf"approximately|approx\.?|roughly|near|circa)\s+|~\s*|@\s*)(?:the\s+)?(?P<t>{_TIME})", at),
        (rf"(?P<t>{_DURATION})\s+(?:in|into)\b", at),
        (rf"\bthe\s+(?P<t>{_TIME})\s*mark\b", at),
        (rf"(?P<t>{_CLOCK})", at),
        (rf"\b(?:(?:at|near|towards?|by|in)\s+the\s+(?:very\s+)?end(?:ing)?|the\s+ending|the\s+final\s+"
         rf"moments?|end\s+of\s+{_VIDEO_NOUNS})(?![a-z]){not_other}", end),
        (rf"\b(?:(?:at|near|in|from)\s+the\s+(?:very\s+)?(?:beginning|start|outset)|the\s+opening\s+"
         rf"(?:moments?|scene|shot)|(?:beginning|start)\s+of\s+{_VIDEO_NOUNS})(?![a-z]){not_other}", start),
        (rf"\b(?:(?:in|near|around)\s+the\s+(?:very\s+)?middle|midway|halfway|half-way|mid-way|"
         rf"middle\s+of\s+{_VIDEO_NOUNS})(?![a-z]){not_other}", middle),
    ]
    for pattern, handler in rules:
        for m in list(re.finditer(pattern, text)):
            window = handler(m)
            if window is None:
                continue
            windows.append(window)
            # Blank the text this rule used so that later rules do not read it again.
            text = text[: m.start()] + " " * (m.end() - m.start()) + text[m.end():]

    clipped = sorted((max(0.0, lo), min(duration, hi)) for lo, hi in windows)
    merged: list[tuple[float, float]] = []
    for lo, hi in clipped:
        if hi <= lo and not (lo == hi and 0.0 < lo < duration):
            continue  # wholly outside the video
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


# =========================================================================================================
# Frame selection within a budget
# =========================================================================================================


def _spread(candidates: np.ndarray, k: int) -> np.ndarray:
    """k of the sorted candidates, evenly spaced: the midpoints of k equal segments (as the reference samples)."""
    if k >= len(candidates):
        return candidates
    positions = ((np.arange(k) + 0.5) * len(candidates) / k).astype(np.int64)
    return candidates[positions]


def select_frames(
    timestamps_s: np.ndarray,
    budget: int,
    question: str | None = None,
    duration_s: float | None = None,
    relevance: np.ndarray | None = None,
    uniform_fraction: float = 0.25,
    nms_radius_s: float | None = None,
) -> np.ndarray:
    """Sorted indices of at most `budget` frames to show the LLM for `question`; every frame when they fit.

    Order of claims on the budget:
    1. frames inside the question's explicit time windows (`parse_time_references`), evenly spread within the
       windows when they alone exceed the budget;
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

    if duration_s is None:
        duration_s = float(timestamps.max()) if n else 0.0
    taken = np.zeros(n, dtype=bool)

    # 1. Explicit time references.
    if question:
        windows = parse_time_references(question, duration_s)
        if windows:
            inside = np.zeros(n, dtype=bool)
            for lo, hi in windows:
                inside |= (timestamps >= lo) & (timestamps <= hi)
            in_window = np.flatnonzero(inside)
            if len(in_window) > budget:
                in_window = _spread(in_window[np.argsort(timestamps[in_window], kind="stable")], budget)
            taken[in_window] = True

    # 2. Relevance, with temporal non-maximum suppression.
    left = budget - int(taken.sum())
    if relevance is not None and left > 0:
        want = left - int(round(left * uniform_fraction))
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
            if nms_radius_s > 0:  # frames strictly closer than the radius to a pick
                t = timestamps[i]
                lo = np.searchsorted(sorted_times, t - nms_radius_s, side="right")
                hi = np.searchsorted(sorted_times, t + nms_radius_s, side="left")
                suppressed[by_time[lo:hi]] = True

    # 3. Uniform coverage of what is left.
    left = budget - int(taken.sum())
    if left > 0:
        rest = np.flatnonzero(~taken)
        rest = rest[np.argsort(timestamps[rest], kind="stable")]
        taken[_spread(rest, left)] = True
    return np.flatnonzero(taken).astype(np.int64)


# =========================================================================================================
# Per-frame memory of one video
# =========================================================================================================


class FrameMemory:
    """One video's frame tokens, timestamps and (optional) CLIP embeddings, appended batch by batch.

    Tokens stay in host memory in the dtype they arrive in (7,200 frames of an 8B model in bf16:
    7,200 × 4096 × 2 bytes = 59 MB), so hours of video fit; embeddings go into a FAISS inner-product index
    (L2-normalised, so scores are cosine similarities) for `search`.
    """

    def __init__(self) -> None:
        self._token_batches: list[torch.Tensor] = []
        self._timestamp_batches: list[np.ndarray] = []
        self._tokens: torch.Tensor | None = None
        self._timestamps: np.ndarray | None = None
        self._index: Any = None
        self._embeddings: list[np.ndarray] = []
        self._has_embeddings: bool | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, frame_tokens: torch.Tensor | np.ndarray, timestamps_s: np.ndarray | torch.Tensor | list[float],
               embeddings: torch.Tensor | np.ndarray | None = None) -> None:
        """Add a batch: `frame_tokens` (B, T, H), `timestamps_s` (B,), `embeddings` (B, D) or None."""
        tokens = torch.from_numpy(np.asarray(frame_tokens)) if not isinstance(frame_tokens, torch.Tensor) \
            else frame_tokens.detach().to("cpu")
        if tokens.ndim != 3:
            raise ValueError(f"frame_tokens must be (batch, tokens, hidden), got shape {tuple(tokens.shape)}")
        if self._token_batches and tokens.shape[1:] != self._token_batches[0].shape[1:]:
            raise ValueError(f"frame_tokens shape {tuple(tokens.shape[1:])} per frame differs from the memory's "
                             f"{tuple(self._token_batches[0].shape[1:])}")
        if isinstance(timestamps_s, torch.Tensor):
            timestamps_s = timestamps_s.detach().cpu().numpy()
        timestamps = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
        batch = tokens.shape[0]
        if len(timestamps) != batch:
            raise ValueError(f"{len(timestamps)} timestamps for {batch} frames")
        has = embeddings is not None
        if self._has_embeddings is not None and has != self._has_embeddings:
            raise ValueError("embeddings must be given for every batch or for none")
        if has:
            vectors = self._as_float32(embeddings)
            if vectors.ndim != 2 or vectors.shape[0] != batch:
                raise ValueError(f"embeddings must be ({batch}, dim), got shape {vectors.shape}")
            import faiss

            if self._index is None:
                self._index = faiss.index_factory(vectors.shape[1], "Flat", faiss.METRIC_INNER_PRODUCT)
            elif vectors.shape[1] != self._index.d:
                raise ValueError(f"embedding dim {vectors.shape[1]} differs from the memory's {self._index.d}")
            faiss.normalize_L2(vectors)
            self._index.add(vectors)
            self._embeddings.append(vectors)
        self._has_embeddings = has
        self._token_batches.append(tokens)
        self._timestamp_batches.append(timestamps)
        self._tokens = self._timestamps = None
        self._count += batch

    @staticmethod
    def _as_float32(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().to("cpu", torch.float32).numpy()
        return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)).copy()

    @property
    def frame_tokens(self) -> torch.Tensor:
        """All frame tokens, (N, T, H), in append order."""
        if not self._token_batches:
            raise ValueError("the frame memory is empty")
        if self._tokens is None:
            self._token_batches = [torch.cat(self._token_batches)]
            self._tokens = self._token_batches[0]
        return self._tokens

    @property
    def timestamps_s(self) -> np.ndarray:
        if self._timestamps is None:
            self._timestamps = (np.concatenate(self._timestamp_batches) if self._timestamp_batches
                                else np.zeros(0, dtype=np.float64))
        return self._timestamps

    @property
    def embeddings(self) -> np.ndarray | None:
        """All embeddings, (N, D), L2-normalised; None when none were given."""
        if not self._has_embeddings:
            return None
        if len(self._embeddings) > 1:
            self._embeddings = [np.concatenate(self._embeddings)]
        return self._embeddings[0]

    @property
    def nbytes(self) -> int:
        tokens = sum(t.numel() * t.element_size() for t in self._token_batches)
        return tokens + sum(e.nbytes for e in self._embeddings) + sum(t.nbytes for t in self._timestamp_batches)

    def tokens_at(self, indices: np.ndarray | list[int]) -> torch.Tensor:
        """The frame tokens of the selected frames, (k, T, H), in the order given."""
        return self.frame_tokens[torch.as_tensor(np.asarray(indices, dtype=np.int64))]

    def search(self, query_embedding: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k frames most similar to the query: (indices, cosine scores), best first."""
        if self._index is None:
            raise ValueError("this frame memory holds no embeddings to search (the vision tower has no "
                             "projection, or none were appended)")
        query = self._as_float32(query_embedding).reshape(1, -1)
        if query.shape[1] != self._index.d:
            raise ValueError(f"query dim {query.shape[1]} differs from the memory's {self._index.d}")
        import faiss

        faiss.normalize_L2(query)
        k = max(0, min(int(k), self._index.ntotal))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores, indices = self._index.search(query, k)
        return indices[0].astype(np.int64), scores[0]

    def relevance(self, query_embedding: torch.Tensor | np.ndarray) -> np.ndarray:
        """The cosine similarity of every frame to the query, (N,), in frame order (for `select_frames`)."""
        indices, scores = self.search(query_embedding, len(self))
        out = np.full(len(self), -np.inf, dtype=np.float64)
        out[indices] = scores
        return out


# =========================================================================================================
# Memory planner: how many frames fit
# =========================================================================================================

_LLAMA_31_8B = {
    "architectures": ["LlavaMiniLlamaForCausalLM"], "model_type": "llava_mini_llama",
    "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
    "mlp_bias": False, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "compressor_size": 1, "prefusion_layer_num": 4, "resolution_ratio": 1, "mm_hidden_size": 1024,
    "mm_projector_type": "mlp2x_gelu", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": "square",
    "tokenizer_model_max_length": 4096, "torch_dtype": "bfloat16",
}
# Built in so that `plan` works with no files and no network.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {"ICTNLP/llava-mini-llama-3.1-8b": _LLAMA_31_8B}
_CLIP_L_336 = {
    "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05, "num_channels": 3,
}
# The hub checkpoint is a full CLIP: its image projection (1024 → 768) gives the retrieval embedding.
KNOWN_VISION_CONFIGS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": {**_CLIP_L_336, "_with_projection": True},
}
DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14-336"

COMPRESSOR_WIDTH = 1024  # the official compressor hard-codes width 1024 (MultiheadAttention, 8 heads)
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                  "fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "8bit": "int8"}
# Activations beyond the weights and the KV cache: the CUDA context and allocator slack, plus the largest
# transient of one step (a prefill chunk through the MLP, a batch through the vision tower).
DEFAULT_RUNTIME_RESERVE_BYTES = 1 << 30
PREFILL_CHUNK_TOKENS = 4096


@dataclass
class MemoryPlan:
    """How many frames one model can hold in its context on one device (all sizes in bytes)."""

    model: str
    dtype: str  # weights
    kv_dtype: str  # the KV cache
    device_memory_bytes: int
    weights_bytes: dict[str, int]  # llm, prefusion, vision, compressor, projector
    parameters: dict[str, int]
    activation_overhead_bytes: int
    tokens_per_frame: int  # compressor_size²
    kv_bytes_per_token: int
    kv_bytes_per_frame: int
    context_length: int  # the LLM's max_position_embeddings
    prompt_tokens_reserved: int  # prompt + answer
    prompt_kv_bytes: int
    frames_fit_memory: int
    frames_fit_context: int
    max_frames: int
    limited_by: str  # "memory" or "context"
    notes: list[str] = field(default_factory=list)

    @property
    def total_weights_bytes(self) -> int:
        return sum(self.weights_bytes.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_weights_bytes": self.total_weights_bytes}


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes in "24GB" (10⁹), "80GiB" (2³⁰), "512MB", "16G" (a bare letter is binary, as in `free -g`), "1024"."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m or (m.group(3) and not m.group(2)):
        raise ValueError(f"invalid size {text!r}: expected e.g. 24GB, 80GiB, 512MB")
    number, prefix, binary, b = m.groups()
    power = "kmgtp".find(prefix.lower()) + 1 if prefix else 0
    base = 1024 if (binary or (prefix and not b)) else 1000
    return int(float(number) * base ** power)


def device_memory(device: str | torch.device) -> int:
    """Memory a plan may use on `device`: a CUDA device's total memory; for the CPU, the RAM available now."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{device}: no CUDA device on this machine")
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    if device.type == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    raise ValueError(f"{device}: memory planning supports cpu and cuda devices")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _cached_hub_config(repo_id: str) -> Path | None:
    """config.json of a hub id when it is already in the Hugging Face cache (never downloads)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an invalid repo id, an unreadable cache: simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def resolve_config(model: str | os.PathLike | dict[str, Any]) -> tuple[dict[str, Any], str, Path | None]:
    """(config, name, folder): a dict as is; a known id built in; a checkpoint folder or config.json on disk;
    a hub id already in the Hugging Face cache. Never downloads."""
    if isinstance(model, dict):
        return copy.deepcopy(model), str(model.get("_name_or_path", "config")), None
    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ValueError(f"{path}: no config.json (not a LLaVA-Mini checkpoint folder)")
        return _read_json(config_path), name, path
    if path.is_file():
        return _read_json(path), name, path.parent
    if name in KNOWN_CONFIGS:
        return copy.deepcopy(KNOWN_CONFIGS[name]), name, None
    cached = _cached_hub_config(name)
    if cached is not None:
        return _read_json(cached), name, cached.parent
    known = ", ".join(KNOWN_CONFIGS)
    raise ValueError(f"{name}: not a checkpoint folder, a config.json, a model in the Hugging Face cache or a "
                     f"known model id; pass a local checkpoint folder or one of: {known}")


def _vision_config(tower: str | None, folder: Path | None) -> tuple[dict[str, Any], str]:
    """The vision tower's config from `mm_vision_tower`: relative to the checkpoint folder, as a path, a known
    id, a cached hub id; else CLIP ViT-L/14-336 (the official tower), said in the plan's notes."""
    tower = tower or DEFAULT_VISION_TOWER
    candidates = ([folder / tower] if folder is not None else []) + [Path(tower).expanduser()]
    for candidate in candidates:
        config_path = candidate / "config.json" if candidate.is_dir() else candidate
        if config_path.is_file() and config_path.suffix == ".json":
            return _read_json(config_path), str(candidate)
    if tower in KNOWN_VISION_CONFIGS:
        return copy.deepcopy(KNOWN_VISION_CONFIGS[tower]), tower
    cached = _cached_hub_config(tower)
    if cached is not None:
        return _read_json(cached), tower
    return copy.deepcopy(KNOWN_VISION_CONFIGS[DEFAULT_VISION_TOWER]), ""


def _count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _projector_parameters(projector_type: str, mm_hidden: int, hidden: int) -> int:
    """LLaVA's projectors: linear = Linear(mm_hidden, H); mlpNx_gelu = Linear(mm_hidden, H) + (N−1)×Linear(H, H)."""
    if projector_type == "identity":
        return 0
    if projector_type == "linear":
        return mm_hidden * hidden + hidden
    m = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if not m:
        raise ValueError(f"unknown mm_projector_type {projector_type!r} (linear, mlpNx_gelu or identity)")
    return (mm_hidden * hidden + hidden) + (int(m.group(1)) - 1) * (hidden * hidden + hidden)


def _compressor_parameters(compressor_size: int, width: int = COMPRESSOR_WIDTH) -> int:
    """MultiheadAttention(width) (in_proj 3w² + 3w, out_proj w² + w), LayerNorms on q and kv (2 × 2w),
    C² learnable queries and the C² positional table (a parameter in the checkpoint)."""
    attention = 3 * width * width + 3 * width + width * width + width
    return attention + 2 * 2 * width + 2 * compressor_size ** 2 * width


def normalize_dtype(dtype: str | torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.").lower()
    if name not in _DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {dtype!r} (use bf16, fp16, fp32 or int8)")
    return _DTYPE_ALIASES[name]


def plan_memory(
    config: dict[str, Any] | str | os.PathLike,
    device_memory_bytes: int | str,
    dtype: str = "bf16",
    prompt_tokens: int = 1024,
    answer_tokens: int = 512,
    vision_config: dict[str, Any] | None = None,
    activation_overhead: int | str | None = None,
    kv_dtype: str | None = None,
) -> MemoryPlan:
    """How many frames fit: min(what memory leaves after weights, what the LLM's context leaves after the prompt).

    `config` is a LLaVA-Mini config dict, a checkpoint folder, its config.json, a hub id in the cache, or a key
    of `KNOWN_CONFIGS`. Parameters are counted without weights: the LLM (`LlamaForCausalLM`), the
    `prefusion_layer_num` pre-fusion decoder layers and the CLIP vision tower are built on the meta device;
    the compressor and projector follow from their formulas. Weights take `dtype`'s bytes per parameter
    (int8 counts every weight as one byte; bitsandbytes keeps embeddings, norms and lm_head in 16 bit, about
    1 GB more for an 8B). The KV cache stays 16-bit (bf16) for int8 weights unless `kv_dtype` says otherwise;
    it is the weights' dtype for fp32/fp16/bf16. Each frame is `compressor_size`² tokens, each token
    2 × layers × kv_heads × head_dim × bytes of KV.

    The context cap is the LLM's `max_position_embeddings` (131,072 for Llama-3.1) minus the prompt and the
    answer. The official `tokenizer_model_max_length` (4096) truncation is not applied: it would cut the
    question off a long video's prompt; videomini selects frames instead.

    `activation_overhead` (bytes or a size string) defaults to 1 GiB (CUDA context, allocator slack, the
    vision batch) plus one prefill chunk of `PREFILL_CHUNK_TOKENS` tokens through the widest layer.
    """
    from transformers import (CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection, LlamaConfig,
                              LlamaForCausalLM)
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    cfg, name, folder = resolve_config(config)
    dtype = normalize_dtype(dtype)
    kv_dtype = normalize_dtype(kv_dtype) if kv_dtype is not None else ("bf16" if dtype == "int8" else dtype)
    device_memory_bytes = parse_size(device_memory_bytes)
    notes: list[str] = []
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if key not in cfg:
            raise ValueError(f"{name}: config has no {key!r} (not a LLaVA-Mini / Llama config)")
    if "prefusion_layer_num" not in cfg:
        raise ValueError(f"{name}: config has no 'prefusion_layer_num' (not a LLaVA-Mini config)")

    llm_config = LlamaConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    llm_config._attn_implementation = "sdpa"
    prefusion_layers = int(cfg["prefusion_layer_num"])
    if vision_config is None:
        vision_config, vision_source = _vision_config(cfg.get("mm_vision_tower"), folder)
        if not vision_source:
            notes.append(f"vision tower {cfg.get('mm_vision_tower')!r} not found on disk: counted as "
                         f"{DEFAULT_VISION_TOWER}")
    vision_config = dict(vision_config)
    with_projection = bool(vision_config.pop("_with_projection", False))
    if "vision_config" in vision_config:  # a full CLIP config: the image tower plus its projection
        with_projection = True
        projection_dim = vision_config.get("projection_dim")
        vision_config = {**vision_config["vision_config"]}
        if projection_dim is not None:
            vision_config.setdefault("projection_dim", projection_dim)
    vision_config = {k: v for k, v in vision_config.items() if k not in ("model_type", "architectures")}
    clip_config = CLIPVisionConfig(**vision_config)

    with torch.device("meta"):
        llm_parameters = _count_parameters(LlamaForCausalLM(llm_config))
        prefusion_parameters = sum(_count_parameters(LlamaDecoderLayer(llm_config, layer_idx=i))
                                   for i in range(prefusion_layers))
        tower_class = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
        vision_parameters = _count_parameters(tower_class(clip_config))
    hidden = int(llm_config.hidden_size)
    mm_hidden = int(cfg.get("mm_hidden_size", clip_config.hidden_size))
    compressor_size = int(cfg.get("compressor_size", 1))
    parameters = {
        "llm": llm_parameters,
        "prefusion": prefusion_parameters,
        "vision": vision_parameters,
        "compressor": _compressor_parameters(compressor_size),
        "projector": _projector_parameters(str(cfg.get("mm_projector_type", "linear")), mm_hidden, hidden),
    }
    weight_bytes = DTYPE_BYTES[dtype]
    weights = {part: count * weight_bytes for part, count in parameters.items()}

    head_dim = int(getattr(llm_config, "head_dim", None) or hidden // llm_config.num_attention_heads)
    kv_heads = int(llm_config.num_key_value_heads or llm_config.num_attention_heads)
    kv_bytes_per_token = 2 * llm_config.num_hidden_layers * kv_heads * head_dim * DTYPE_BYTES[kv_dtype]
    tokens_per_frame = compressor_size ** 2
    kv_bytes_per_frame = kv_bytes_per_token * tokens_per_frame

    if activation_overhead is None:
        activation_bytes = DTYPE_BYTES["fp32" if kv_dtype == "fp32" else "bf16"]
        widest = 4 * hidden + 3 * int(llm_config.intermediate_size)  # residual, q/k/v/o + gate, up, act
        activation_overhead = DEFAULT_RUNTIME_RESERVE_BYTES + PREFILL_CHUNK_TOKENS * widest * activation_bytes
    activation_overhead = parse_size(activation_overhead)

    context_length = int(llm_config.max_position_embeddings)
    reserved = int(prompt_tokens) + int(answer_tokens)
    prompt_kv_bytes = reserved * kv_bytes_per_token
    free = device_memory_bytes - sum(weights.values()) - activation_overhead - prompt_kv_bytes
    frames_fit_memory = max(0, free // kv_bytes_per_frame)
    frames_fit_context = max(0, (context_length - reserved) // tokens_per_frame)
    if free < 0:
        notes.append("the weights alone do not fit in this device memory")
    tokenizer_max = cfg.get("tokenizer_model_max_length")
    if tokenizer_max and tokenizer_max < context_length:
        notes.append(f"tokenizer_model_max_length {tokenizer_max} is not applied (it would cut the question off "
                     f"long prompts); the cap is max_position_embeddings {context_length}")
    if dtype == "int8":
        notes.append("int8 counts every weight as 1 byte; the KV cache stays " + kv_dtype)
    return MemoryPlan(
        model=name, dtype=dtype, kv_dtype=kv_dtype, device_memory_bytes=device_memory_bytes,
        weights_bytes=weights, parameters=parameters, activation_overhead_bytes=activation_overhead,
        tokens_per_frame=tokens_per_frame, kv_bytes_per_token=kv_bytes_per_token,
        kv_bytes_per_frame=kv_bytes_per_frame, context_length=context_length, prompt_tokens_reserved=reserved,
        prompt_kv_bytes=prompt_kv_bytes, frames_fit_memory=int(frames_fit_memory),
        frames_fit_context=int(frames_fit_context), max_frames=int(min(frames_fit_memory, frames_fit_context)),
        limited_by="memory" if frames_fit_memory < frames_fit_context else "context", notes=notes,
    )
