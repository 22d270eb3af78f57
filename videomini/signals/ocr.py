"""On-screen text → timestamped text with RapidOCR (PP-OCRv4 ONNX models shipped in `rapidocr-onnxruntime`).

Only text a person would search for is kept. Each frame's boxes are read in reading order and grouped into
phrases (boxes on one line with at most a word gap between them); a phrase without a word of two letters —
a timecode ("00:00:26.000 650"), a clock, a frame counter, a lone digit or symbol — is dropped, and so is a phrase
on screen through nearly the whole video (a channel logo, a watermark). A caption usually stays on screen for
many sampled frames, so per-frame readings are merged: consecutive frames whose text is the same or nearly the
same (OCR jitter) become one segment covering [first seen, last seen + frame interval]. Merging works on
per-frame readings, so callers that stream batches can read each batch with `frame_texts` and merge once at the
end with `merge_frame_texts` (that is what `ocr_video` does).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

import numpy as np

from videomini.config import FPS
from videomini.signals import SignalError, TextSegment

_INSTALL_HINT = "pip install 'videomini[ocr]'"
_WORDY = re.compile(r"\w")  # a box with no letter or digit ("■", "|") is a shape, not text
_SEARCHABLE = re.compile(r"[^\W\d_]{2}")  # a phrase with no two letters in a row says nothing to search for
PHRASE_GAP = 1.5  # boxes of one line farther apart than this many line heights are separate phrases
WATERMARK_SHARE = 0.8  # a phrase on screen in at least this share of the frames read is a logo / watermark...
WATERMARK_MIN_FRAMES = 30  # ...when at least this many frames were read (a short clip may show one caption)
_engines: dict[int, Any] = {}
_engines_lock = threading.Lock()


def load_ocr(max_side: int = 960) -> Any:
    """The RapidOCR engine (det + cls + rec ONNX sessions), created once per `max_side` and then shared.

    Frames are scaled to a long side of `max_side` before reading (`frame_texts`). Measured on 640x360 captions:
    read at native size the recogniser drops spaces between words ("PLATFORM9", "WARNING WETFLOOR"); at 1.5x
    (960x540) it keeps them ("WARNING WET FLOOR"); RapidOCR's own default (short side upscaled to 736) drops
    them again and is 4x slower. Large frames are scaled down to the same size.
    """
    with _engines_lock:
        if max_side not in _engines:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError:
                raise SignalError(f"rapidocr-onnxruntime is not installed: {_INSTALL_HINT}") from None
            _engines[max_side] = RapidOCR(det_limit_type="max", det_limit_side_len=max_side)
        return _engines[max_side]


def _reading_lines(boxes: list[tuple[np.ndarray, str, float]]) -> list[list[tuple[np.ndarray, str, float]]]:
    """Top-to-bottom lines, left-to-right within a line; a box joins a line when its vertical centre lies
    inside the line's vertical extent (robust to slightly tilted or differently sized words)."""
    lines: list[dict[str, Any]] = []
    for item in sorted(boxes, key=lambda b: float(b[0][:, 1].mean())):
        ys = item[0][:, 1]
        centre = float(ys.mean())
        for line in lines:
            if line["top"] <= centre <= line["bottom"]:
                line["items"].append(item)
                line["top"], line["bottom"] = min(line["top"], float(ys.min())), max(line["bottom"], float(ys.max()))
                break
        else:
            lines.append({"top": float(ys.min()), "bottom": float(ys.max()), "items": [item]})
    # already top-to-bottom: boxes were visited by centre
    return [sorted(line["items"], key=lambda b: float(b[0][:, 0].min())) for line in lines]


def searchable_phrases(boxes: list[tuple[np.ndarray, str, float]]) -> list[tuple[str, float]]:
    """(text, mean confidence) of each phrase worth searching, in reading order. A phrase is a run of boxes on
    one line no farther apart than `PHRASE_GAP` line heights (a caption split into words stays one phrase, a
    timecode in the corner is another); phrases without two letters in a row are dropped."""
    phrases = []
    for line in _reading_lines(boxes):
        runs: list[list[tuple[np.ndarray, str, float]]] = []
        for item in line:
            if runs:
                previous = runs[-1][-1][0]
                height = float(previous[:, 1].max() - previous[:, 1].min())
                if float(item[0][:, 0].min()) - float(previous[:, 0].max()) <= PHRASE_GAP * height:
                    runs[-1].append(item)
                    continue
            runs.append([item])
        for run in runs:
            text = " ".join(text for _, text, _ in run)
            if _SEARCHABLE.search(text):
                phrases.append((text, float(np.mean([score for _, _, score in run]))))
    return phrases


def frame_texts(frames: np.ndarray, min_score: float = 0.7, max_side: int = 960) -> list[list[tuple[str, float]]]:
    """Per frame: its searchable phrases in reading order, each (text, mean box confidence); [] for a frame
    with none. `frames` is uint8 RGB (B, H, W, 3), read at a long side of `max_side` (see `load_ocr`)."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB of shape (B, H, W, 3), got {frames.dtype} {frames.shape}")
    engine = load_ocr(max_side)
    scale = max_side / max(frames.shape[1:3])
    size = (round(frames.shape[2] * scale), round(frames.shape[1] * scale))
    out = []
    for frame in frames:
        if scale != 1.0:
            frame = np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))
        result, _elapsed = engine(np.ascontiguousarray(frame[..., ::-1]))  # RapidOCR takes arrays as BGR
        boxes = [(np.asarray(box, dtype=np.float32), str(text).strip(), float(score))
                 for box, text, score in (result or []) if float(score) >= min_score and _WORDY.search(str(text))]
        out.append(searchable_phrases(boxes))
    return out


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def similar_text(a: str, b: str, threshold: float = 0.8) -> bool:
    """Same text up to case, punctuation and OCR jitter (character-level similarity ratio)."""
    a, b = _normalise(a), _normalise(b)
    if a == b:
        return True
    return bool(a and b) and SequenceMatcher(None, a, b, autojunk=False).ratio() >= threshold


def watermarks(readings: Sequence[Sequence[tuple[str, float]]], similarity: float = 0.8) -> set[str]:
    """Normalised phrases on screen in at least `WATERMARK_SHARE` of the frames read (with OCR jitter), when
    at least `WATERMARK_MIN_FRAMES` were read: logos and watermarks, which say nothing about a moment."""
    if len(readings) < WATERMARK_MIN_FRAMES:
        return set()
    frames_with: dict[str, int] = {}
    for phrases in readings:
        for text in {_normalise(text) for text, _ in phrases}:
            frames_with[text] = frames_with.get(text, 0) + 1
    out = set()
    for text in frames_with:  # a phrase counts the frames of every reading similar to it
        seen = sum(n for other, n in frames_with.items() if similar_text(text, other, similarity))
        if seen >= WATERMARK_SHARE * len(readings):
            out.add(text)
    return out


def merge_frame_texts(
    readings: Sequence[Sequence[tuple[str, float]]],
    timestamps_s: Sequence[float],
    frame_interval_s: float | None = None,
    similarity: float = 0.8,
) -> list[TextSegment]:
    """Merge runs of consecutive frames showing similar text into segments [first seen, last seen + interval].

    `readings` are `frame_texts` output: each frame's phrases. Watermark phrases are dropped first; a frame's
    text is its remaining phrases joined. A frame without text ends the run. The segment keeps the reading with
    the best confidence (the clearest view of the caption) and the mean confidence of the run.
    `frame_interval_s` defaults to the median spacing of `timestamps_s` (0 for a single frame).
    """
    if len(readings) != len(timestamps_s):
        raise ValueError(f"{len(readings)} frame readings but {len(timestamps_s)} timestamps")
    times = np.asarray(timestamps_s, dtype=np.float64)
    if frame_interval_s is None:
        frame_interval_s = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    logos = watermarks(readings, similarity)
    segments: list[TextSegment] = []
    run_times: list[float] = []
    run_scores: list[float] = []
    best_text, best_score = "", -1.0  # the clearest reading of the current run

    def close() -> None:
        if run_times:
            segments.append(TextSegment(start_s=run_times[0], end_s=run_times[-1] + frame_interval_s,
                                        text=best_text, source="ocr", score=float(np.mean(run_scores))))
            run_times.clear()
            run_scores.clear()

    for t, phrases in zip(times.tolist(), readings):
        kept = [(text, score) for text, score in phrases if _normalise(text) not in logos]
        text = " ".join(text for text, _ in kept)
        score = float(np.mean([score for _, score in kept])) if kept else 0.0
        if not text or (run_times and not similar_text(best_text, text, similarity)):
            close()
        if not text:
            continue
        if not run_times or score > best_score:
            best_text, best_score = text, score
        run_times.append(t)
        run_scores.append(score)
    close()
    return segments


def read_text(
    frames: np.ndarray,
    timestamps_s: Sequence[float],
    min_score: float = 0.7,
    frame_interval_s: float | None = None,
    max_side: int = 960,
) -> list[TextSegment]:
    """OCR a batch of uint8 RGB frames (B, H, W, 3) taken at `timestamps_s` into deduplicated text segments.

    Boxes below `min_score` confidence are dropped (they are mostly texture read as letters).
    """
    frames = np.asarray(frames)
    n = 1 if frames.ndim == 3 else len(frames)
    if n != len(timestamps_s):
        raise ValueError(f"{n} frames but {len(timestamps_s)} timestamps")
    return merge_frame_texts(frame_texts(frames, min_score, max_side), timestamps_s, frame_interval_s)


def ocr_video(
    path: str | os.PathLike,
    fps: float = FPS,
    min_score: float = 0.7,
    batch_size: int = 8,
    max_side: int = 960,
) -> list[TextSegment]:
    """On-screen text of a video file sampled at `fps`, as deduplicated segments with time ranges.

    Frames come from `videomini.video.sample_frames` (streamed, same timeline as the vision path); an unreadable
    file raises its one-line `VideoError`.
    """
    from videomini.video import sample_frames

    readings: list[tuple[str, float]] = []
    times: list[float] = []
    for frames, timestamps_s in sample_frames(path, fps=fps, batch_size=batch_size):
        readings.extend(frame_texts(frames, min_score, max_side))
        times.extend(float(t) for t in timestamps_s)
    return merge_frame_texts(readings, times, frame_interval_s=1.0 / fps)
