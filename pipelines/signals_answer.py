"""Answers from speech and on-screen text: what `ask` says when no LLaVA-Mini model is available, and the
timestamped lines it quotes into the LLaVA-Mini prompt when one is.

extract (Whisper tiny.en speech + RapidOCR on-screen text, both offline) -> rank against the question (MiniLM
cosine + a small bonus for words the question shares with the text) -> restrict to the times the question names
-> the best moments, quoted with their times. Nothing here generates text: an answer built from signals says so
in its first line and in `Answer.generated_by == "signals"`, so it is never mistaken for a model's answer.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from videomini.answer import Answer, Evidence
from videomini.timerefs import parse_time_references
from videomini.signals import TextSegment
from videomini.signals.speech import MIN_SPEECH_SCORE, confident_speech

SIGNALS = ("speech", "ocr")
EVIDENCE_ONLY_LABEL = "[evidence only — no LLaVA-Mini model was available]"
LEXICAL_BONUS = 0.1  # at most this much is added to a cosine in [-1, 1] when all of a text's words are asked about

# Words that carry no topic: sharing them with the question says nothing about relevance.
_STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being am do does did doing
have has had it its this that these those there here what which who whom whose when where why how i you he she
we they me him her us them my your his our their not no yes so than then too very can could will would shall
should may might must just about into over under again all any some each other such only own same up down out
off s t say says said tell show video clip film moment time happen happens happened
""".split())
_WORD = re.compile(r"[a-z0-9]+")


def _content_words(text: str) -> set[str]:
    """Lower-cased words minus stopwords, with a plural 's' dropped ("hours" matches "hour")."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.add(word)
    return words


def extract_signals(
    path: str | os.PathLike,
    signals: Sequence[str] = SIGNALS,
    ocr_fps: float = 1.0,
    whisper_model: str | os.PathLike = "tiny.en",
    min_speech_score: float = MIN_SPEECH_SCORE,
) -> list[TextSegment]:
    """Speech and on-screen text of a video as timestamped segments, sorted by start time.

    A file without an audio track gives no speech (not an error). Speech segments whose mean word probability is
    below `min_speech_score` are dropped: on music or noise Whisper invents fluent text ("Thank you for
    watching.") with low word probabilities, and such text would otherwise be quoted as evidence.
    """
    unknown = [name for name in signals if name not in SIGNALS]
    if unknown:
        raise ValueError(f"unknown signal {unknown[0]!r}: choose from {', '.join(SIGNALS)}")
    segments: list[TextSegment] = []
    if "speech" in signals:
        from videomini.signals.speech import transcribe

        segments.extend(confident_speech(transcribe(path, model=whisper_model), min_speech_score))
    if "ocr" in signals:
        from videomini.signals.ocr import ocr_video

        segments.extend(ocr_video(path, fps=ocr_fps))
    return sorted(segments, key=lambda seg: (seg.start_s, seg.end_s))


@lru_cache(maxsize=1)
def default_embedder():
    """The bundled all-MiniLM-L6-v2, loaded once per process (loading takes seconds, encoding milliseconds)."""
    from videomini.signals.text import TextEmbedder

    return TextEmbedder()


def rank_segments(question: str, segments: Sequence[TextSegment], embedder=None,
                  top_k: int = 5) -> list[tuple[TextSegment, float]]:
    """The `top_k` segments most relevant to `question`, best first, with their ranking score.

    The score is the MiniLM cosine between question and segment text plus up to `LEXICAL_BONUS` for the share of
    the segment's content words that the question repeats: a short caption ("OPEN 24 HOURS") embeds far from a
    full question that names its words, and an exact word match is strong evidence the cosine underrates.
    """
    if not segments or top_k <= 0:
        return []
    _cosines, scores = _score(question, segments, embedder or default_embedder())
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(segments[i], float(scores[i])) for i in order]


def _score(question: str, segments: Sequence[TextSegment], embedder) -> tuple[np.ndarray, np.ndarray]:
    """(MiniLM cosines, ranking scores = cosine + lexical bonus), one per segment."""
    vectors = embedder.encode([question] + [seg.text for seg in segments])
    cosines = (vectors[1:] @ vectors[0]).astype(np.float64)
    asked = _content_words(question)
    bonus = np.zeros_like(cosines)
    for i, seg in enumerate(segments):
        said = _content_words(seg.text)
        if said:
            bonus[i] = LEXICAL_BONUS * len(said & asked) / len(said)
    return cosines, cosines + bonus


def _clock(seconds: float) -> str:
    """Whole seconds as m:ss (h:mm:ss past an hour): the resolution a reader checks a moment at."""
    total = int(math.floor(max(0.0, float(seconds)) + 1e-6))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _span(seg: TextSegment) -> str:
    start, end = _clock(seg.start_s), _clock(seg.end_s)
    return start if start == end else f"{start}–{end}"


def _source_label(seg: TextSegment) -> str:
    return "on screen" if seg.source == "ocr" else seg.source


def _overlaps(seg: TextSegment, windows: Sequence[tuple[float, float]]) -> bool:
    """True when the segment shares time with a window (merely touching its edge does not count)."""
    return any((seg.start_s < end and seg.end_s > start) or (start == end and seg.start_s <= start <= seg.end_s)
               for start, end in windows)


def _embedder_label(embedder) -> str:
    """A short model name for `Answer.model` (the bundled MiniLM lives in a folder called "model")."""
    name = Path(str(getattr(embedder, "name", "") or "")).name
    return name if name and name != "model" else "all-MiniLM-L6-v2"


def _video_duration_s(path: str | os.PathLike, segments: Sequence[TextSegment]) -> float:
    """The file's duration for time references; when it cannot be probed, the end of the last segment."""
    from videomini.video import VideoError, probe

    try:
        return float(probe(path).duration_s)
    except VideoError:
        return max((seg.end_s for seg in segments), default=0.0)


def answer_from_signals(
    path: str | os.PathLike,
    question: str,
    segments: Sequence[TextSegment] | None = None,
    top_k: int = 3,
    embedder=None,
    signals: Sequence[str] = SIGNALS,
    ocr_fps: float = 1.0,
    whisper_model: str | os.PathLike = "tiny.en",
) -> Answer:
    """An evidence-only answer: the moments whose speech or on-screen text best match `question`, quoted with
    their times. No generative model is involved, and the answer's text and fields say so.

    `segments` (e.g. from a library) skips extraction. When the question names times ("in the last 5 seconds",
    "at 0:12") and some segment overlaps them, only those segments are candidates.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes = ["No generative model answered: these are the speech and on-screen text that best match the "
             "question (MiniLM similarity), quoted with their times."]
    if segments is None:
        segments = extract_signals(path, signals=signals, ocr_fps=ocr_fps, whisper_model=whisper_model)
        timings["signals"] = round(time.perf_counter() - started, 3)
    segments = list(segments)

    candidates = segments
    windows = parse_time_references(question, _video_duration_s(path, segments)) if segments else []
    if windows:
        inside = [seg for seg in segments if _overlaps(seg, windows)]
        named = ", ".join(f"{_clock(a)}–{_clock(b)}" for a, b in windows)
        if inside:
            candidates = inside
            notes.append(f"Only text within {named} (named in the question) was considered.")
        else:
            notes.append(f"No speech or on-screen text within {named} (named in the question); "
                         "the whole video was considered.")

    ranked_at = time.perf_counter()
    ranked: list[tuple[TextSegment, float]] = []  # (segment, MiniLM cosine), best first by ranking score
    if candidates:
        embedder = embedder or default_embedder()
        cosines, scores = _score(question, candidates, embedder)
        ranked = [(candidates[i], float(cosines[i])) for i in np.argsort(-scores, kind="stable")[:max(0, top_k)]]
    timings["rank"] = round(time.perf_counter() - ranked_at, 3)

    evidence = []
    lines = [EVIDENCE_ONLY_LABEL]
    for seg, cosine in ranked:
        lines.append(f"{_span(seg)} ({_source_label(seg)}): “{seg.text}”")
        evidence.append(Evidence(start_s=round(seg.start_s, 3), end_s=round(seg.end_s, 3),
                                 time_s=round(seg.start_s, 3), score=round(float(cosine), 4),
                                 method="speech" if seg.source == "speech" else "ocr", video=str(path)))
    if not ranked:
        used = " or ".join("speech" if name == "speech" else "on-screen text" for name in signals)
        lines.append(f"No {used} was found in {Path(path).name}.")

    parts = [_embedder_label(embedder)]
    if "speech" in signals:
        parts.append(f"whisper {Path(str(whisper_model)).name}")
    if "ocr" in signals:
        parts.append("rapidocr")
    timings["total"] = round(time.perf_counter() - started, 3)
    return Answer(question=question, text="\n".join(lines), evidence=evidence, frames_used=0, frames_total=0,
                  frame_times_s=[], model=" + ".join(parts), timings_s=timings, notes=notes,
                  generated_by="signals")


def signal_context(segments: Sequence[TextSegment], times_s: Sequence[float], window_s: float = 2.0,
                   max_lines: int = 20) -> str:
    """Speech and on-screen text within `window_s` of the given frame times, as timestamped lines for the
    LLaVA-Mini prompt ("[0:09 speech] ...", "[0:05–0:08 on screen] ..."), in time order; "" when none.

    When more than `max_lines` qualify, the ones closest to a frame time are kept, so the prompt stays short.
    """
    times = np.asarray(list(times_s), dtype=np.float64)
    if times.size == 0 or max_lines <= 0:
        return ""
    near: list[tuple[float, TextSegment]] = []
    for seg in segments:
        # Distance from the nearest frame time to the segment's interval (0 when a frame falls inside it).
        gaps = np.maximum(0.0, np.maximum(seg.start_s - times, times - seg.end_s))
        distance = float(gaps.min())
        if distance <= window_s:
            near.append((distance, seg))
    kept = sorted(near, key=lambda item: item[0])[:max_lines]
    kept_segments = sorted((seg for _, seg in kept), key=lambda seg: (seg.start_s, seg.end_s))
    out = []
    for seg in kept_segments:
        when = _clock(seg.start_s) if seg.source == "speech" else _span(seg)
        out.append(f"[{when} {_source_label(seg)}] {seg.text}")
    return "\n".join(out)
