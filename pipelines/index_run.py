"""`index`: video files -> a library (SQLite catalog, per-video shards, FAISS index), incremental and crash-safe.

This module decides the run (which files, which model, loaded only when a file needs encoding, which engine)
and is the local engine. Decoding runs in worker processes (videomini.pipelines.decoder), one per video: a
decoder that crashes or hangs fails only that file. Up to `workers` videos decode ahead while the device encodes
the current one. A video is recorded `done` only after its shard is durable; the FAISS index is rebuilt from the
done shards at the end and replaced atomically, so a kill at any point leaves the library consistent, and a re-run
skips unchanged files, resumes the rest and rebuilds the same index.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from videomini.library import LazyModel
from videomini.loading import default_model_id
from videomini.pipelines.decoder import DecodeJob
from videomini.pipelines.video_commit import (NO_PROJECTION, SIGNALS, Event, IndexRunError, IndexReport, VideoAssembly,
                                              commit_video, encode_batch, kept_frames_for, text_embedder_for,
                                          no_event)
from videomini.pipelines.messages import FrameBatch

__all__ = ["IndexRunError", "IndexReport", "find_videos", "index_videos", "index_videos_ray"]

ENGINES = ("local", "ray")
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv",
                    ".wmv", ".3gp", ".ogv"}


def find_videos(paths: Iterable[str | os.PathLike], recursive: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files named on the command line are taken as they are (probing decides); folders are scanned for video
    extensions (recursively on request). Returns (candidates in a stable order, missing paths with a reason)."""
    found: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.glob("*")
            found += sorted(p for p in pattern if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        else:
            missing.append((path, "no such file or folder"))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, missing


# -- the run ------------------------------------------------------------------------------------------------------


def index_videos(library_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], model: Any = None,
                 *, model_id: str | None = None, device: str | None = None, dtype: str | None = None,
                 recursive: bool = False, fps: float = 1.0, workers: int = 2, retry_failed: bool = False,
                 timeout_s: float = 120.0, batch_size: int = 16, wait_s: float = 0.0, engine: str = "local",
                 ray_address: str | None = None, signals: Iterable[str] = (), visual: bool = True,
                 on_event: Event | None = None, text_model: str | None = None,
                 asr_model: str | None = None) -> IndexReport:
    """Index `paths` into the library at `library_dir` (created when absent) with `model` (a VideoMini, or a
    LazyModel), else the model `model_id` (default: $VIDEOMINI_MODEL, else the reference checkpoint) loaded on
    `device` in `dtype` when the first file needs encoding. Returns what was indexed, skipped and failed; never
    raises for a bad file; raises IndexRunError (one line) when the run cannot proceed.

    signals ("speech", "ocr"): also store each video's timestamped speech / on-screen text with MiniLM
    embeddings, searchable beside the frames (`text_model`: a sentence-transformers folder or hub id instead of
    the bundled MiniLM; `asr_model`: a Whisper size or CTranslate2 folder instead of the bundled tiny.en; both
    recorded in the library). visual False: no vision model at all, signals only (a machine
    without the LLaVA-Mini weights); frames already stored for an unchanged file are kept.

    engine "local": decoder processes on this machine, the encoder on this process's device. engine "ray": the
    same per-video work on Ray Data (videomini.pipelines.ray_engine); this process stays the only writer.
    Progress goes to `on_event(kind, details)`: plan, loading, video, info, frames, done, failed, index."""
    from videomini.loading import CheckpointError
    from videomini.storage import LibraryStore

    signals = _checked_signals(engine, signals, visual)
    asr_model = checked_asr_model(asr_model) if "speech" in signals else asr_model
    started = time.perf_counter()
    emit = on_event or no_event
    report = IndexReport()
    candidates, missing = find_videos(paths, recursive)
    report.failed += [(str(path), f"{path}: {reason}") for path, reason in missing]
    run_model_id = (model_id or _model_id(model) or default_model_id()) if visual else None
    library = LibraryStore(library_dir, create=True, wait_s=wait_s)
    try:
        todo = _plan(library, candidates, report, emit, retry_failed=retry_failed, model_id=run_model_id,
                     signals=signals)
        text_embedder = (text_embedder_for(text_model) if todo and (signals or any(i.signals for i in todo))
                         else None)
        if todo and "speech" in signals:
            library.record_models(asr_model=asr_model)
        try:
            if todo and engine == "ray":
                from videomini.pipelines.ray_engine import run_ray

                run_ray(library, todo, run_model_id, fps=fps, batch_size=batch_size, timeout_s=timeout_s,
                        address=ray_address, report=report, emit=emit, signals=signals, text_embedder=text_embedder,
                        asr_model=asr_model)
            elif todo:
                if visual and model is None:
                    model = LazyModel(_loader(run_model_id, device, dtype, batch_size, emit))
                _run(library, todo, model if visual else None, fps, workers, timeout_s, batch_size, report, emit,
                     signals, text_embedder, asr_model)
        except CheckpointError as e:  # the run needs the vision model: say how to index without it
            hint = ("or index the signals only: --no-visual" if signals
                    else "or index speech and on-screen text only: --no-visual --signals speech,ocr")
            raise IndexRunError(f"{e} ({hint})") from None
        if report.indexed or library.index_needs_update():
            emit("index", {})
            library.update_index()
    finally:
        library.close()
    report.seconds = time.perf_counter() - started
    return report


def index_videos_ray(library_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], model: Any = None,
                     **options: Any) -> IndexReport:
    """The "ray" entry point of the `videomini.engines` group: `index_videos` on Ray."""
    return index_videos(library_dir, paths, model, engine="ray", **options)


def _checked_signals(engine: str, signals: Iterable[str], visual: bool) -> list[str]:
    """The run's signals, sorted; IndexRunError for an unknown engine or signal, or nothing to index."""
    if engine not in ENGINES:
        raise IndexRunError(f"unknown engine {engine!r}: use 'local' or 'ray'")
    signals = sorted(set(signals))
    unknown = [name for name in signals if name not in SIGNALS]
    if unknown:
        raise IndexRunError(f"unknown signal {unknown[0]!r}: choose from {', '.join(SIGNALS)}")
    if not visual and not signals:
        raise IndexRunError("nothing to index: without the vision model (--no-visual) name --signals speech,ocr")
    return signals


def _plan(library: Any, candidates: list[Path], report: IndexReport, emit: Event, **options: Any) -> list:
    """The plan items to index now; the rest go into the report as skipped."""
    todo = []
    plan = library.plan(candidates, **options)
    for item in plan:
        if item.action == "unchanged":
            report.skipped.append((str(item.path), "unchanged"))
        elif item.action == "skip_failed":
            report.skipped.append((str(item.path), "failed before (use --retry-failed)"))
        else:
            todo.append(item)
    emit("plan", {"todo": len(todo), "skipped": len(report.skipped), "total": len(plan)})
    return todo


def _loader(model_id: str, device: str | None, dtype: str | None, batch_size: int, emit: Event) -> Callable[[], Any]:
    """Loads the model on first call (announcing it: loading takes a while), then returns the same one."""
    loaded: list = []

    def load() -> Any:
        if not loaded:
            from videomini.ask import VideoMini

            emit("loading", {"model_id": model_id})
            loaded.append(VideoMini.from_pretrained(model_id, device=device, dtype=dtype, batch_size=batch_size))
        return loaded[0]

    return load


def check_model(model: Any) -> None:
    """Indexing needs frame embeddings to search: the vision tower must be a full CLIP with its projection."""
    if not hasattr(model.model.vision_tower, "visual_projection"):
        raise IndexRunError(NO_PROJECTION.format(model_id=_model_id(model)))


def _model_id(model: Any) -> str | None:
    return None if model is None else str(model.model_id)


# -- the local engine ---------------------------------------------------------------------------------------------


def _run(library: Any, todo: list, model: Any, fps: float, workers: int, timeout_s: float, batch_size: int,
         report: IndexReport, emit: Event, signals: list[str], text_embedder: Any, asr_model: str | None = None
         ) -> None:
    """Index the `todo` plan items with `model` (None: signals only), decoding up to `workers` videos ahead."""
    if model is not None:
        check_model(model)
    ctx = mp.get_context("spawn")
    jobs: dict[int, DecodeJob] = {}
    try:
        for position, item in enumerate(todo):
            for ahead in range(position, min(position + max(1, workers), len(todo))):
                if ahead not in jobs:
                    jobs[ahead] = DecodeJob(ctx, todo[ahead].path, fps, batch_size, timeout_s,
                                            sorted(set(signals) | set(todo[ahead].signals)), model is not None,
                                            asr_model)
            job = jobs.pop(position)
            try:
                _index_one(library, item, job, model, fps, report, emit, text_embedder)
            finally:
                job.close()
    finally:
        for job in jobs.values():
            job.close()


def _index_one(library: Any, item: Any, job: DecodeJob, model: Any, fps: float, report: IndexReport,
               emit: Event, text_embedder: Any) -> None:
    """Encode one video's batches as they arrive from its decoder, then commit it."""
    kept = kept_frames_for(library, item, model is not None)
    video_id = library.mark_running(item.path, item.fingerprint, model_id=_model_id(model), fps=fps)
    emit("video", {"path": str(item.path), "action": item.action})
    assembly = VideoAssembly(item, video_id, kept)
    started = time.perf_counter()
    for message in job.messages():
        assembly.add(encode_batch(model.encoder, message) if isinstance(message, FrameBatch) else message, fps, emit)
    result = assembly.result(visual=model is not None)
    result.seconds = time.perf_counter() - started  # wall time: decoding overlaps encoding
    commit_video(library, assembly, result, model_id=_model_id(model), fps=fps, report=report, emit=emit,
                 text_embedder=text_embedder)


def checked_asr_model(asr_model: str | None) -> str:
    """The speech model a run records and uses: `asr_model` (a Whisper size or CTranslate2 folder, checked before
    any work starts), else the bundled tiny.en."""
    from videomini.signals import SignalError
    from videomini.signals.speech import DEFAULT_MODEL, resolve_model

    try:
        return str(resolve_model(asr_model)) if asr_model else DEFAULT_MODEL
    except SignalError as e:
        raise IndexRunError(f"--asr-model: {e}") from None
