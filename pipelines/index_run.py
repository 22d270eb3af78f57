"""`index`: video files -> a library (SQLite catalog, per-video shards, FAISS index), incremental and crash-safe.

The run every engine shares: which files (new, changed, resumed, retried; the rest skipped), which model
(loaded only when some file needs encoding), and the FAISS index rebuilt from the done shards at the end and
replaced atomically. Where the per-video work runs is the engine's job (`Engine.run`): `LocalEngine` (decoder
processes on this machine, videomini.pipelines.local_engine) or `RayEngine` (Ray Data). A video is recorded
`done` only after its shard is durable, so a kill at any point leaves the library consistent, and a re-run skips
unchanged files, resumes the rest and rebuilds the same index.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videomini.config import Event, IndexConfig
from videomini.loading import LazyModel, default_model_id
from videomini.pipelines.video_commit import IndexReport, IndexRunError, no_event, text_embedder_for
from videomini.search_encoders import prepare_query_encoders

__all__ = ["Engine", "IndexJob", "IndexRunError", "IndexReport", "find_videos"]

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv",
                    ".wmv", ".3gp", ".ogv"}


def find_videos(paths: Iterable[str | os.PathLike],
                recursive: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
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


@dataclass
class IndexJob:
    """What an engine is handed: the plan items to index now and everything needed to commit them."""

    library: Any  # the LibraryStore, open for writing; engines commit through video_commit.commit_video only
    todo: list  # plan items (path, fingerprint, action, signals), in order
    model: Any  # a VideoMini or LazyModel in this process (None: signals only); Ray loads its own instead
    model_id: str | None  # the model's id, recorded in the catalog; engines that load elsewhere load it by this
    config: IndexConfig
    report: IndexReport
    emit: Event
    text_embedder: Any  # MiniLM for speech / on-screen text (None: no signals in this run)


class Engine:
    """Where an index run's per-video work runs; subclasses implement `run`. Implements the `IndexEngine`
    contract of `Library.index(engine=...)` (videomini.config)."""

    def index(self, library_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], model: Any = None,
              config: IndexConfig | None = None, on_event: Event | None = None) -> IndexReport:
        """Index `paths` into the library at `library_dir` (created when absent) with `model` (a VideoMini, or a
        LazyModel), else the model `config.model_id` (default: $VIDEOMINI_MODEL, else the reference checkpoint)
        loaded when the first file needs encoding. Returns what was indexed, skipped and failed; never raises for
        a bad file; raises IndexRunError (one line) when the run cannot proceed. Progress goes to
        `on_event(kind, details)`: plan, loading, video, info, frames, done, failed, index."""
        return run_index(self, library_dir, paths, model, config or IndexConfig(), on_event or no_event)

    def run(self, job: IndexJob) -> None:
        """Index every item of `job.todo`, each committed with `video_commit.commit_video`."""
        raise NotImplementedError


def run_index(engine: Engine, library_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], model: Any,
              config: IndexConfig, emit: Event) -> IndexReport:
    """The run around the engine: plan, the engine's work, the index update."""
    from videomini.loading import CheckpointError
    from videomini.storage import LibraryStore

    started = time.perf_counter()
    if "speech" in config.signals:  # checked before any work
        config = dataclasses.replace(config, asr_model=checked_asr_model(config.asr_model))
    report = IndexReport()
    candidates, missing = find_videos(paths, config.recursive)
    report.failed += [(str(path), f"{path}: {reason}") for path, reason in missing]
    model_id = (config.model_id or _model_id(model) or _indexed_model_id(library_dir) or default_model_id()
                if config.visual else None)
    if (config.visual and model is None and config.model_id is None and config.signals
            and not _vision_model_here(model_id, config.signals, report)):
        config, model_id = dataclasses.replace(config, visual=False), None
    if config.visual and model is None:
        model = LazyModel(_loader(model_id, config, emit), model_id)
    created = not Path(library_dir).expanduser().exists()
    library = LibraryStore(library_dir, create=True, wait_s=config.wait_s)
    try:
        todo = _plan(library, candidates, report, emit, retry_failed=config.retry_failed, model_id=model_id,
                     signals=list(config.signals))
        wants_text = todo and (config.signals or any(item.signals for item in todo))
        model = model if config.visual else None
        job = IndexJob(library, todo, model, _model_id(model), config, report, emit,
                       text_embedder_for(config.text_model) if wants_text else None)
        if todo and "speech" in config.signals:
            library.record_models(asr_model=config.asr_model)
        try:
            if todo:
                engine.run(job)
        except CheckpointError as e:  # the run needs the vision model: say how to index without it
            hint = ("or index the signals only: --no-visual" if config.signals
                    else "or index speech and on-screen text only: --no-visual --signals speech,ocr")
            raise IndexRunError(f"{e} ({hint})") from None
        if report.indexed or library.index_needs_update():
            emit("index", {})
            library.update_index()
        if report.indexed:  # the first search of this library then starts without torch (query_encoder)
            prepare_query_encoders(_model_id(model) or model_id if config.visual else None, job.text_embedder)
    except Exception:
        library.close()
        if created and not report.indexed:  # a refused run leaves no half-made library behind
            shutil.rmtree(Path(library_dir).expanduser(), ignore_errors=True)
        raise
    finally:
        library.close()
    report.seconds = time.perf_counter() - started
    return report


def _indexed_model_id(library_dir: str | os.PathLike) -> str | None:
    """The model an existing library was indexed with (a re-run adds frames with the same one), else None."""
    from videomini.storage import CATALOG, LibraryError, LibraryStore

    if not (Path(library_dir).expanduser() / CATALOG).is_file():
        return None
    try:
        with LibraryStore(library_dir) as store:
            return store.indexed_model_id()
    except LibraryError:  # no frames indexed yet, or several models: the default, as for a new library
        return None


def _vision_model_here(model_id: str, signals: Iterable[str], report: IndexReport) -> bool:
    """Whether the default (or the library's) vision model is on this machine: a folder, or in the Hugging Face
    cache. A run that also stores speech / on-screen text goes on without it, with one warning line; a model
    named with --model is never replaced (its absence is an error when the first file needs it)."""
    from videomini.loading import CheckpointError, resolve_checkpoint

    try:
        resolve_checkpoint(model_id)
        return True
    except CheckpointError:
        names = " and ".join(label for name, label in (("speech", "speech"), ("ocr", "on-screen text"))
                             if name in signals)
        report.warnings.append(f"frames are not indexed: the vision model {model_id} is not on this machine, only "
                               f"{names} (index again with --model CHECKPOINT to add the frames)")
        return False


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


def _loader(model_id: str, config: IndexConfig, emit: Event) -> Callable[[], Any]:
    """Loads the model on first call (announcing it: loading takes a while), then returns the same one."""
    loaded: list = []

    def load() -> Any:
        if not loaded:
            from videomini.ask import VideoMini

            emit("loading", {"model_id": model_id})
            loaded.append(VideoMini.from_pretrained(model_id, device=config.device, dtype=config.dtype,
                                                    batch_size=config.batch_size))
        return loaded[0]

    return load


def _model_id(model: Any) -> str | None:
    """The id a model was loaded from (a LazyModel knows it without loading)."""
    return None if model is None else str(model.model_id)


def checked_asr_model(asr_model: str | None) -> str:
    """The speech model a run records and uses: `asr_model` (a Whisper size or CTranslate2 folder, checked before
    any work starts), else the bundled tiny.en."""
    from videomini.signals import SignalError
    from videomini.signals.speech import BUNDLED_NAMES, DEFAULT_MODEL, resolve_model

    if not asr_model or asr_model in BUNDLED_NAMES:
        return DEFAULT_MODEL
    try:
        return str(resolve_model(asr_model))
    except SignalError as e:
        raise IndexRunError(f"--asr-model: {e}") from None
