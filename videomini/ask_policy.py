"""The ask policy: which model answers, and when speech / on-screen text answer instead.

One place for the policy that the CLI, the Python `Library` facade and the server share (it composes only the
library's own mechanisms, so it lives in the library, where the facade may reach it):

- `ask_video`: load LLaVA-Mini (or use the one given); extract the signals asked for and quote them into the
  prompt; when no model can be loaded and `fallback` holds, answer from the video's speech and on-screen text
  (labelled as such) instead of failing.
- `ask_library`: the model the library was indexed with (or the one given); a library indexed without frames,
  an unloadable model (with `fallback`) or moments without stored frames -> the stored speech and on-screen
  text answer, quoting `SIGNAL_ANSWER_MOMENTS` moments.

The mechanisms (decode, encode, select, generate, evidence) are the library's: `videomini.ask`.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from videomini.answer import Answer
from videomini.config import AskConfig, configured
from videomini.errors import CheckpointError
from videomini.video import IMAGE_EXTENSIONS, FrameBatches, decode_ahead

if TYPE_CHECKING:  # videomini.ask (the model stack) is imported where a model answers, not by the text-only paths
    from videomini.ask import ProgressFn, TokenFn, VideoMini

SIGNAL_ANSWER_MOMENTS = 3  # moments quoted when speech / on-screen text answer without a generative model
FALLBACK_SIGNALS = ("speech", "ocr")
_SIGNAL_PACKAGES = ("faster_whisper", "rapidocr_onnxruntime", "sentence_transformers")
NoticeFn = Callable[[str], None]  # one-line warnings and notes for the user (the CLI prints them on stderr)
Loader = Callable[[str], "VideoMini"]

__all__ = ["ask_video", "ask_library", "SIGNAL_ANSWER_MOMENTS"]


def signals_available() -> bool:
    """Whether speech and on-screen text can be extracted here (the `signals` extra is installed)."""
    return all(importlib.util.find_spec(name) is not None for name in _SIGNAL_PACKAGES)


def _notice(on_notice: NoticeFn | None, message: str) -> None:
    if on_notice is not None:
        on_notice(message)


def _load(model_id: str, load: Loader | None, on_progress: ProgressFn | None, config: AskConfig) -> VideoMini:
    """The model `load` gives (default: VideoMini.from_pretrained on the config's device, dtype, quantize and
    kv_cache); raises CheckpointError when it cannot be loaded."""
    if on_progress:
        on_progress(f"loading {model_id}", 0, None)
    if load is None:
        from videomini.ask import VideoMini

        return VideoMini.from_pretrained(model_id, device=config.device, dtype=config.dtype,
                                         quantize=config.quantize, kv_cache=config.kv_cache)
    return load(model_id)


def _signal_context(path: str | os.PathLike, signals: tuple[str, ...], fps: float) -> str | None:
    """Speech / on-screen text of the whole video as timestamped prompt lines, one window per sampled frame."""
    from videomini.signal_answer import extract_signals, signal_context
    from videomini.video import probe

    duration_s = probe(path).duration_s
    segments = extract_signals(path, signals=signals, ocr_fps=fps)
    grid = np.arange(0.0, max(duration_s, 1e-3), 1.0 / fps)
    return signal_context(segments, grid, window_s=1.0 / fps) or None


def ask_video(path: str | os.PathLike, question: str, config: AskConfig | None = None, *,
              model: VideoMini | None = None, load: Loader | None = None, on_progress: ProgressFn | None = None,
              on_token: TokenFn | None = None, on_notice: NoticeFn | None = None, frames: FrameBatches | None = None,
              **overrides: Any) -> Answer:
    """Answer `question` about one video or image as `config` (and keyword `overrides` of its fields) says.
    `model` is a loaded VideoMini, else `config.model_id` is loaded with `load` (default: from_pretrained on the
    config's device, dtype, quantize, kv_cache) while the video's frames are decoded ahead (`frames`, when the
    caller started them even earlier: `video.decode_ahead`). With no loadable model and `config.fallback`, the
    speech and on-screen text answer (Answer.generated_by == "signals")."""
    config = configured(config, AskConfig, overrides)
    if frames is None and model is None and Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        frames = decode_ahead(path, config.fps, config.sampling, config.decode)  # overlaps the model's loading
    try:
        return _ask_video(path, question, config, model, load, on_progress, on_token, on_notice, frames)
    finally:
        if frames is not None:
            frames.close()  # a no-op once the answer has used them; stops the decoder on a failure or fallback


def _ask_video(path: str | os.PathLike, question: str, config: AskConfig, vm: VideoMini | None,
               load: Loader | None, on_progress: ProgressFn | None, on_token: TokenFn | None,
               on_notice: NoticeFn | None, frames: FrameBatches | None) -> Answer:
    signals, fps = config.signals, config.fps
    if vm is None:
        from videomini.loading import default_model_id

        try:
            vm = _load(config.model_id or default_model_id(), load, on_progress, config)
        except CheckpointError as e:
            if not config.fallback or not signals_available():
                raise
            _notice(on_notice, f"warning: {e}")
            _notice(on_notice, "warning: answering from speech and on-screen text instead (no generative model)")
            from videomini.signal_answer import answer_from_signals

            if on_progress:
                on_progress("transcribing speech and reading on-screen text", 0, None)
            return answer_from_signals(path, question, signals=signals or FALLBACK_SIGNALS, ocr_fps=fps)
    context, signals_s = None, 0.0
    if signals and Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        if on_progress:
            on_progress("signals", 0, None)
        started = time.perf_counter()
        context = _signal_context(path, signals, fps)
        signals_s = time.perf_counter() - started
    answer = vm.ask(path, question, config, on_progress=on_progress, on_token=on_token, context=context,
                    frames=frames)
    if signals_s:  # the whole answer's time: extracting speech / on-screen text included (frames decoded ahead:
        # the answer's clock began with decoding, before the signals, so they are counted already)
        total = answer.timings_s.get("total", 0.0) + (signals_s if frames is None else 0.0)
        answer.timings_s = {"signals": round(signals_s, 3), **answer.timings_s, "total": round(total, 3)}
    return answer


def _library_model(library_dir: str | os.PathLike, model: str | None) -> tuple[str | None, bool]:
    """(the model to answer with, or None when the library holds text but no frames; whether it holds text)."""
    from videomini.storage import LibraryStore

    with LibraryStore(library_dir) as store:
        manifest = store.manifest() or {}
        has_text, has_frames = bool(manifest.get("text_n_vectors")), bool(manifest.get("n_vectors"))
        if model is None and (has_frames or not has_text):
            model = store.indexed_model_id()
    return model, has_text


def _from_signals(library_dir: str | os.PathLike, question: str, top_k: int) -> Answer:
    from videomini.signal_answer import answer_library_from_signals

    return answer_library_from_signals(library_dir, question, top_k=min(top_k, SIGNAL_ANSWER_MOMENTS))


def _answer_from_moments(vm: VideoMini, library_dir: str | os.PathLike, question: str, config: AskConfig,
                         on_token: TokenFn | None) -> Answer:
    """The library search (CLIP over frames, MiniLM over stored speech / on-screen text, fused by rank) with
    the model's text tower, then LLaVA-Mini over the moments found, stored text near them quoted."""
    from videomini.ask import ask_library as ask_library_frames
    from videomini.search import search_library
    from videomini.signal_answer import signal_context
    from videomini.storage import LibraryError

    if vm.text_tower is None:
        raise LibraryError(f"{library_dir}: the model has no CLIP text tower to retrieve moments with")
    notes: list[str] = []
    found = search_library(library_dir, question, top_k=config.top_k, text_tower=vm.text_tower, notes=notes)
    return ask_library_frames(vm, library_dir, question, found, config, on_token=on_token, quote=signal_context,
                              notes=notes)


def ask_library(library_dir: str | os.PathLike, question: str, config: AskConfig | None = None, *,
                model: VideoMini | None = None, load: Loader | None = None, on_token: TokenFn | None = None,
                on_progress: ProgressFn | None = None, on_notice: NoticeFn | None = None,
                **overrides: Any) -> Answer:
    """Answer over an indexed library's best moments as `config` (and keyword `overrides`) says. The model is
    `model` (loaded), else `config.model_id`, else the one the library was indexed with; the stored speech /
    on-screen text answer when the library holds no frames, when no model loads (and `config.fallback`), or
    when the moments found have no stored frames."""
    config = configured(config, AskConfig, overrides)
    top_k = config.top_k
    vm = model
    if vm is None:
        model_id, has_text = _library_model(library_dir, config.model_id)
        if model_id is None:
            _notice(on_notice, "note: the library holds no frames (indexed with --no-visual); answering from its "
                               "speech and on-screen text")
            return _from_signals(library_dir, question, top_k)
        try:
            vm = _load(model_id, load, on_progress, config)
        except CheckpointError as e:
            if not (config.fallback and has_text):
                raise
            _notice(on_notice, f"warning: {e}")
            _notice(on_notice, "warning: answering from the library's speech and on-screen text instead (no "
                               "generative model)")
            return _from_signals(library_dir, question, top_k)
    from videomini.ask import NoStoredFrames

    try:
        return _answer_from_moments(vm, library_dir, question, config, on_token)
    except NoStoredFrames:  # every moment found is in videos indexed without frames: their text is the evidence
        answer = _from_signals(library_dir, question, top_k)
        answer.notes.insert(0, "The moments found have no stored frames (indexed with --no-visual).")
        return answer
