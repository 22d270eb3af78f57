"""Answers from speech and on-screen text: what `ask` and `ask --library` say when no LLaVA-Mini model is
available, and the timestamped lines quoted into the LLaVA-Mini prompt when one is.

extract (Whisper tiny.en speech + RapidOCR on-screen text, both offline) -> rank against the question with the
ranking of `videomini.search` (calibrated MiniLM similarity) -> restrict to the times the question names -> the
best moments, quoted with their times. Nothing here generates text: an answer built from signals says so in its
first line and in `Answer.generated_by == "signals"`, so it is never mistaken for a model's answer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videomini.answer import Answer, Evidence
from videomini.config import FPS, SIGNALS
from videomini.search import SearchMoment, rank_segments, search_library
from videomini.signals import TextSegment
from videomini.signals.speech import MIN_SPEECH_SCORE, confident_speech
from videomini.signals.text import MINILM
from videomini.timerefs import format_time

EVIDENCE_ONLY_LABEL = "[evidence only — no LLaVA-Mini model was available]"
NOT_CONFIDENT_NOTE = ("No speech or on-screen text stands out from the rest for this question: the moments below "
                      "are the closest, not a match.")


def extract_signals(
    path: str | os.PathLike,
    signals: Sequence[str] = SIGNALS,
    ocr_fps: float = FPS,
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


def _source_label(source: str) -> str:
    return "on screen" if source == "ocr" else source


def _quote(match: dict, video: str | None = None) -> str:
    """`0:15–0:17.6 (speech): “...”`, led by the file name when the answer spans a library."""
    span = format_time(match["start_s"], match["end_s"])
    return f"{Path(video).name + ' ' if video else ''}{span} ({_source_label(match['signal'])}): “{match['text']}”"


def _evidence_answer(question: str, found: list[SearchMoment], notes: list[str], model: str,
                     timings_s: dict[str, float], video_names: bool, empty_line: str) -> Answer:
    """The answer text and evidence for ranked text moments: each moment's strongest text, quoted with its
    times (one line per moment)."""
    lines, evidence = [EVIDENCE_ONLY_LABEL], []
    for moment in found:
        match = moment.matches[0]
        lines.append(_quote(match, moment.video if video_names else None))
        evidence.append(Evidence(start_s=round(match["start_s"], 3), end_s=round(match["end_s"], 3),
                                 time_s=round(match["start_s"], 3), score=moment.relevance,
                                 method=match["signal"], video=moment.video))
    if not found:
        lines.append(empty_line)
    elif not found[0].confident:
        notes.append(NOT_CONFIDENT_NOTE)
    return Answer(question=question, text="\n".join(lines), evidence=evidence, frames_used=0, frames_total=0,
                  frame_times_s=[], model=model, timings_s=timings_s, notes=notes, generated_by="signals")


def _embedder_label(embedder: Any) -> str:
    """A short model name for `Answer.model` (the bundled MiniLM lives in a folder called "model")."""
    name = Path(str(getattr(embedder, "name", "") or "")).name
    return name if name and name != "model" else MINILM


def _overlaps(seg: TextSegment, windows: Sequence[tuple[float, float]]) -> bool:
    """True when the segment shares time with a window (merely touching its edge does not count)."""
    return any((seg.start_s < end and seg.end_s > start) or (start == end and seg.start_s <= start <= seg.end_s)
               for start, end in windows)


def _video_duration_s(path: str | os.PathLike, segments: Sequence[TextSegment]) -> float:
    """The file's duration for time references; when it cannot be probed, the end of the last segment."""
    from videomini.video import VideoError, probe

    try:
        return float(probe(path).duration_s)
    except VideoError:
        return max((seg.end_s for seg in segments), default=0.0)


def _named_times(question: str, path: str | os.PathLike, segments: list[TextSegment],
                 notes: list[str]) -> list[TextSegment]:
    """The segments within the times the question names ("in the last 5 seconds"), or all when none are."""
    from videomini.timerefs import parse_time_references

    windows = parse_time_references(question, _video_duration_s(path, segments)) if segments else []
    if not windows:
        return segments
    inside = [seg for seg in segments if _overlaps(seg, windows)]
    named = ", ".join(format_time(a, b) for a, b in windows)
    if inside:
        notes.append(f"Only text within {named} (named in the question) was considered.")
        return inside
    notes.append(f"No speech or on-screen text within {named} (named in the question); the whole video was "
                 "considered.")
    return segments


def answer_from_signals(
    path: str | os.PathLike,
    question: str,
    segments: Sequence[TextSegment] | None = None,
    top_k: int = 3,
    embedder: Any = None,
    signals: Sequence[str] = SIGNALS,
    ocr_fps: float = FPS,
    whisper_model: str | os.PathLike = "tiny.en",
) -> Answer:
    """An evidence-only answer: the moments whose speech or on-screen text best match `question`, quoted with
    their times. No generative model is involved, and the answer's text and fields say so.

    `segments` (e.g. from a library) skips extraction. When the question names times ("in the last 5 seconds",
    "at 0:12") and some segment overlaps them, only those segments are candidates.
    """
    from videomini.signals.text import default_embedder

    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes = ["No generative model answered: these are the speech and on-screen text that best match the "
             "question (calibrated MiniLM similarity), quoted with their times."]
    if segments is None:
        segments = extract_signals(path, signals=signals, ocr_fps=ocr_fps, whisper_model=whisper_model)
        timings["signals"] = round(time.perf_counter() - started, 3)
    candidates = _named_times(question, path, list(segments), notes)
    ranked_at = time.perf_counter()
    embedder = embedder or (default_embedder() if candidates else None)
    found = rank_segments(question, candidates, embedder, top_k=top_k, video=str(path)) if candidates else []
    timings["rank"] = round(time.perf_counter() - ranked_at, 3)
    parts = [_embedder_label(embedder)]
    if "speech" in signals:
        parts.append(f"whisper {Path(str(whisper_model)).name}")
    if "ocr" in signals:
        parts.append("rapidocr")
    used = " or ".join("speech" if name == "speech" else "on-screen text" for name in signals)
    timings["total"] = round(time.perf_counter() - started, 3)
    return _evidence_answer(question, found, notes, " + ".join(parts), timings, video_names=False,
                            empty_line=f"No {used} was found in {Path(path).name}.")


def answer_library_from_signals(library_dir: str | os.PathLike, question: str, top_k: int = 3,
                                text_embedder: Any = None) -> Answer:
    """An evidence-only answer over a library: the stored speech / on-screen text moments that best match the
    question (the ranking of `search`), quoted with (video, time). No generative model is involved."""
    from videomini.storage import LibraryError, LibraryStore

    started = time.perf_counter()
    with LibraryStore(library_dir) as library:
        if not (library.manifest() or {}).get("text_n_vectors"):
            raise LibraryError(f"{library.root}: no speech or on-screen text indexed to answer from without a model "
                               f"(index with `videomini index ... --library {library.root} --signals speech,ocr`)")
    found = search_library(library_dir, question, top_k=top_k, signals=SIGNALS, text_embedder=text_embedder)
    notes = ["No generative model answered: these are the stored speech and on-screen text moments that best match "
             "the question (calibrated MiniLM similarity), quoted with their times."]
    return _evidence_answer(question, found, notes, MINILM,
                            {"total": round(time.perf_counter() - started, 3)}, video_names=True,
                            empty_line="No speech or on-screen text was found.")


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
        distance = float(np.maximum(0.0, np.maximum(seg.start_s - times, times - seg.end_s)).min())
        if distance <= window_s:
            near.append((distance, seg))
    kept = sorted((seg for _, seg in sorted(near, key=lambda item: item[0])[:max_lines]),
                  key=lambda seg: (seg.start_s, seg.end_s))
    return "\n".join(f"[{format_time(seg.start_s) if seg.source == 'speech' else format_time(seg.start_s, seg.end_s)}"
                     f" {_source_label(seg.source)}] {seg.text}" for seg in kept)
