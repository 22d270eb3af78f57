"""`index`: video files -> a library (SQLite catalog, per-video shards, FAISS index), incremental and crash-safe.

Decoding runs in worker processes (spawned; they import PyAV and numpy, never torch), one per video, each
feeding a bounded queue: a decoder that crashes (PyAV can segfault on damaged H.264) or hangs (no batch for
`timeout_s`) fails only that file. Up to `workers` videos decode ahead while the device encodes the current
one. A video is recorded `done` only after its shard is durable; the FAISS index is rebuilt from the done
shards at the end and replaced atomically, so a kill at any point leaves the library consistent, and a re-run
skips unchanged files, resumes the rest and rebuilds the same index.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv",
                    ".wmv", ".3gp", ".ogv"}
QUEUE_BATCHES = 4  # decoded batches buffered per worker: bounds memory whatever the video's length


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


# -- decoding in a worker process -------------------------------------------------------------------------------


def decode_messages(path: str, fps: float, batch_size: int, signals: Iterable[str] = (),
                    frames: bool = True) -> Iterator[tuple]:
    """Probe and decode one video into messages: ("info", dict), ("batch", frames, times)..., ("warning", text),
    ("segments", signals done, [segment dicts]) when `signals` are asked for, then ("end",) -- or ("error", one
    line) instead. Never raises: a bad file is a message. Used by the local engine's decoder processes and by the
    Ray engine's decode tasks alike.

    Signals run here, beside decoding and away from the encoder's device: on-screen text (RapidOCR) reads the
    frames this pass decodes anyway, speech (Whisper tiny.en) the audio track. A signal that fails is a warning,
    not a failed video; it is left out of the signals recorded, so a later run with --signals retries it.
    `frames=False` (no vision model this run) sends no batches."""
    import warnings

    from videomini.video import VideoError, probe, sample_frames

    signals = list(signals)
    try:
        info = probe(path)
        yield ("info", info.to_dict())
        readings: list[tuple[str, float]] = []
        read_times: list[float] = []
        ocr_error = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if frames or "ocr" in signals:
                with sample_frames(path, fps=fps, batch_size=batch_size, prefetch=0) as batches:
                    for batch, times in batches:
                        if "ocr" in signals and ocr_error is None:
                            ocr_error = _read_on_screen_text(batch, times, readings, read_times)
                        if frames:
                            yield ("batch", batch, times)
        for w in caught:
            yield ("warning", str(w.message).splitlines()[0])
        if signals:
            done, segments = [], []
            if "ocr" in signals:
                if ocr_error is None:
                    from videomini.signals.ocr import merge_frame_texts

                    done.append("ocr")
                    segments += merge_frame_texts(readings, read_times, frame_interval_s=1.0 / fps)
                else:
                    yield ("warning", f"{path}: on-screen text skipped: {ocr_error}")
            if "speech" in signals:
                try:
                    from videomini.signals.speech import confident_speech, transcribe

                    segments += confident_speech(transcribe(path))
                    done.append("speech")
                except Exception as e:  # a broken audio track costs the speech, not the video
                    yield ("warning", f"{path}: speech skipped: {first_line(e)}")
            segments.sort(key=lambda seg: (seg.start_s, seg.end_s))
            yield ("segments", done, [{"source": seg.source, "text": seg.text, "start_s": float(seg.start_s),
                                       "end_s": float(seg.end_s)} for seg in segments])
        yield ("end",)
    except VideoError as e:
        yield ("error", str(e))
    except Exception as e:  # unexpected, but still this file's failure only
        yield ("error", f"{path}: {first_line(e, with_type=True)}")


def first_line(error: BaseException, with_type: bool = False) -> str:
    """An exception as one line: its message's first line (the type's name when it has none), after the type's
    name when `with_type`."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type:
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text or type(error).__name__


def _read_on_screen_text(batch: np.ndarray, times: Any, readings: list, read_times: list) -> str | None:
    """OCR one batch of frames into `readings`/`read_times`; the error line if the OCR model cannot run."""
    try:
        from videomini.signals.ocr import frame_texts

        readings += frame_texts(batch)
        read_times += [float(t) for t in times]
        return None
    except Exception as e:
        return first_line(e)


def _decode_worker(path: str, fps: float, batch_size: int, out: Any, parent_pid: int, signals: tuple = (),
                   frames: bool = True) -> None:
    """Runs in a spawned process: decode_messages() into a bounded queue."""

    def put(message: tuple) -> None:
        # a bounded queue blocks when the indexer is busy; if the indexer died (SIGKILL), exit instead of
        # waiting forever as an orphan that still holds the terminal's or the caller's pipes
        while True:
            try:
                out.put(message, timeout=1.0)
                return
            except queue.Full:
                if os.getppid() != parent_pid:
                    os._exit(0)

    for message in decode_messages(path, fps, batch_size, signals, frames):
        put(message)
    # At exit the queue's feeder thread flushes what is buffered into the pipe, which blocks while nobody reads:
    # wait for it, but give up the moment the indexer is gone.
    import threading

    out.close()
    flusher = threading.Thread(target=out.join_thread, daemon=True)
    flusher.start()
    while flusher.is_alive():
        flusher.join(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


class DecodeJob:
    """One video decoding in its own process, read through a bounded queue with a hang timeout."""

    def __init__(self, ctx: Any, path: Path, fps: float, batch_size: int, timeout_s: float,
                 signals: Iterable[str] = (), frames: bool = True):
        self.path, self.timeout_s = path, timeout_s
        self.waited_s = 0.0  # seconds since the last message, while the worker is alive
        self.queue = ctx.Queue(maxsize=QUEUE_BATCHES)
        self.process = ctx.Process(target=_decode_worker, args=(str(path), fps, batch_size, self.queue, os.getpid(),
                                                                tuple(signals), frames), daemon=True)
        self.process.start()

    def messages(self) -> Iterator[tuple]:
        """Yield the worker's messages; a crash or a hang becomes an ("error", reason) message."""
        while True:
            try:
                message = self.queue.get(timeout=min(self.timeout_s, 1.0))
            except queue.Empty:
                if not self.process.is_alive():
                    try:  # the last messages may still be in the pipe
                        message = self.queue.get(timeout=0.5)
                    except queue.Empty:
                        code = self.process.exitcode
                        reason = f"killed by signal {-code}" if code and code < 0 else f"exited with code {code}"
                        yield ("error", f"{self.path}: decoder crashed ({reason})")
                        return
                else:
                    self.waited_s += 1.0
                    if self.waited_s >= self.timeout_s:
                        yield ("error", f"{self.path}: decoder hung (no frames for {self.timeout_s:.0f} s)")
                        return
                    continue
            self.waited_s = 0.0
            yield message
            if message[0] in ("end", "error"):
                return

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.queue.close()
        self.queue.cancel_join_thread()


# -- the indexer --------------------------------------------------------------------------------------------------


@dataclass
class IndexReport:
    indexed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    warnings: list[str] = field(default_factory=list)
    frames: int = 0
    segments: int = 0  # speech / on-screen text segments stored
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"indexed": self.indexed, "skipped": [{"path": p, "why": w} for p, w in self.skipped],
                "failed": [{"path": p, "error": e} for p, e in self.failed], "warnings": self.warnings,
                "frames": self.frames, "segments": self.segments, "seconds": round(self.seconds, 3)}


Event = Callable[[str, dict], None]  # (kind, details) for progress displays


def index_videos(library_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], model: Any = None,
                 *, model_id: str | None = None, recursive: bool = False, fps: float = 1.0, workers: int = 2,
                 retry_failed: bool = False, timeout_s: float = 120.0, batch_size: int = 16, wait_s: float = 0.0,
                 engine: str = "local", ray_address: str | None = None, signals: Iterable[str] = (),
                 visual: bool = True, on_event: Event | None = None) -> IndexReport:
    """Index `paths` into the library at `library_dir` (created when absent) with `model` (a VideoMini, or
    loaded from `model_id`). Returns what was indexed, skipped and failed; never raises for a bad file.

    signals ("speech", "ocr"): also store each video's timestamped speech / on-screen text with MiniLM
    embeddings, searchable beside the frames. visual False: no vision model at all, signals only (a machine
    without the LLaVA-Mini weights); frames already stored for an unchanged file are kept.

    engine "local": decoder processes on this machine, the encoder on this process's device. engine "ray": the
    same per-video work on Ray Data (videomini.pipelines.ray_engine); this process stays the only writer."""
    if engine not in ("local", "ray"):
        raise IndexError_(f"unknown engine {engine!r}: use 'local' or 'ray'")
    signals = sorted(set(signals))
    unknown = [name for name in signals if name not in SIGNALS]
    if unknown:
        raise IndexError_(f"unknown signal {unknown[0]!r}: choose from {', '.join(SIGNALS)}")
    if not visual and not signals:
        raise IndexError_("nothing to index: without the vision model (--no-visual) name --signals speech,ocr")
    from videomini.storage import LibraryStore

    started = time.perf_counter()
    emit = on_event or (lambda kind, details: None)
    report = IndexReport()
    candidates, missing = find_videos(paths, recursive)
    library = LibraryStore(library_dir, create=True, wait_s=wait_s)
    try:
        for path, reason in missing:
            report.failed.append((str(path), f"{path}: {reason}"))
        run_model_id = (model_id or _model_id(model)) if visual else None
        plan = library.plan(candidates, retry_failed=retry_failed, model_id=run_model_id, signals=signals)
        todo = []
        for item in plan:
            if item.action == "unchanged":
                report.skipped.append((str(item.path), "unchanged"))
            elif item.action == "skip_failed":
                report.skipped.append((str(item.path), "failed before (use --retry-failed)"))
            else:
                todo.append(item)
        emit("plan", {"todo": len(todo), "skipped": len(report.skipped), "total": len(plan)})
        text_embedder = _text_embedder() if todo and (signals or any(item.signals for item in todo)) else None
        if todo and engine == "ray":
            from videomini.pipelines.ray_engine import run_ray

            run_ray(library, todo, run_model_id, fps=fps, batch_size=batch_size, timeout_s=timeout_s,
                    address=ray_address, report=report, emit=emit, signals=signals, visual=visual,
                    text_embedder=text_embedder)
        elif todo:
            if not visual:
                model = None
            elif model is None:
                from videomini.pipelines.ask import VideoMini

                model = VideoMini.from_pretrained(model_id, batch_size=batch_size)
            if model is not None:
                check_model(model)
            _run(library, todo, model, fps, workers, timeout_s, batch_size, report, emit, signals, text_embedder)
        if report.indexed or not library.index_is_current():
            emit("index", {})
            library.rebuild_index()
    finally:
        library.close()
    report.seconds = time.perf_counter() - started
    return report


class IndexError_(Exception):
    """The whole run cannot proceed (e.g. the model gives no embeddings); one line naming the cause."""


SIGNALS = ("speech", "ocr")
NO_PROJECTION = ("{model_id}: its vision tower has no CLIP projection, so frames get no embeddings to search; "
                 "use a checkpoint whose mm_vision_tower is a full CLIP")


def check_model(model: Any) -> None:
    """Indexing needs frame embeddings to search: the vision tower must be a full CLIP with its projection."""
    if not hasattr(model.model.vision_tower, "visual_projection"):
        raise IndexError_(NO_PROJECTION.format(model_id=_model_id(model)))


def _text_embedder() -> Any:
    """The bundled MiniLM that embeds speech / on-screen text (loaded once per process)."""
    from videomini.signals.text import default_embedder
    from videomini.signals import SignalError

    try:
        return default_embedder()
    except SignalError as e:
        raise IndexError_(str(e)) from None


def _model_id(model: Any) -> str | None:
    return None if model is None else str(model.model_id)


def _run(library: Any, todo: list, model: Any, fps: float, workers: int, timeout_s: float, batch_size: int,
         report: IndexReport, emit: Event, signals: list[str] = (), text_embedder: Any = None) -> None:
    ctx = mp.get_context("spawn")
    jobs: dict[int, DecodeJob] = {}
    try:
        for position, item in enumerate(todo):
            for ahead in range(position, min(position + max(1, workers), len(todo))):
                if ahead not in jobs:  # keep up to `workers` videos decoding ahead
                    jobs[ahead] = DecodeJob(ctx, todo[ahead].path, fps, batch_size, timeout_s,
                                            sorted(set(signals) | set(todo[ahead].signals)), model is not None)
            job = jobs.pop(position)
            try:
                _index_one(library, item, job, model, fps, report, emit, text_embedder)
            finally:
                job.close()
    finally:
        for job in jobs.values():
            job.close()


@dataclass
class EncodedVideo:
    """One video's decoded-and-encoded result, ready for the library (or the reason it failed)."""

    path: str
    frame_tokens: np.ndarray | None = None  # fp16 (N, T, H)
    embeddings: np.ndarray | None = None  # fp32 (N, D)
    timestamps_s: np.ndarray | None = None  # f64 (N,)
    duration_s: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    signals: list[str] = field(default_factory=list)  # signals extracted (even when they found nothing)
    segments: list[dict] = field(default_factory=list)  # {"source", "text", "start_s", "end_s"}


def encode_messages(path: str, messages: Iterable[tuple], encoder: Any, fps: float,
                    emit: Event = lambda kind, details: None) -> EncodedVideo:
    """Consume one video's decode messages, encoding each batch of frames on the device as it arrives.
    `encoder` None: a signals-only run (no frames are sent)."""
    import torch

    started = time.perf_counter()
    result = EncodedVideo(path)
    tokens, embeddings, times = [], [], []
    for message in messages:
        kind = message[0]
        if kind == "info":
            result.duration_s = message[1].get("duration_s")
            emit("info", {"path": path, "frames": int((result.duration_s or 0) * fps) + 1})
        elif kind == "batch":
            encoded = encoder.encode(message[1], message[2])
            tokens.append(encoded.frame_tokens.to(torch.float16).numpy())
            embeddings.append(encoded.clip_embeddings.numpy())
            times.append(encoded.timestamps_s)
            emit("frames", {"path": path, "count": len(encoded.timestamps_s)})
        elif kind == "warning":
            result.warnings.append(message[1] if message[1].startswith(path) else f"{path}: {message[1]}")
        elif kind == "segments":
            result.signals, result.segments = list(message[1]), list(message[2])
        elif kind == "error":
            result.error = message[1]
    if result.error is None and not times and encoder is not None:
        result.error = f"{path}: no frames could be decoded"
    if result.error is None and encoder is None and not result.signals:
        result.error = f"{path}: no signal could be extracted (see the warnings)"
    if result.error is None and times:
        result.frame_tokens = np.concatenate(tokens)
        result.embeddings = np.concatenate(embeddings)
        result.timestamps_s = np.concatenate(times)
    result.seconds = time.perf_counter() - started
    return result


def commit_video(library: Any, item: Any, video_id: int, result: EncodedVideo, model_id: str | None, fps: float,
                 report: IndexReport, emit: Event = lambda kind, details: None, text_embedder: Any = None,
                 kept_frames: Any = None) -> None:
    """Record one video's result: its shard made durable, then `done`; or `failed` with the reason.
    The single place where an engine's results enter the library. Segments are embedded with `text_embedder`
    (MiniLM). `kept_frames` (VideoFrames, model id): the frames a signals-only run keeps from the last shard."""
    report.warnings += result.warnings
    if result.error is not None:
        library.mark_failed(item.path, result.error, item.fingerprint)
        report.failed.append((result.path, result.error))
        emit("failed", {"path": result.path, "error": result.error})
        return
    if result.frame_tokens is None and kept_frames is not None:
        frames, model_id = kept_frames
        result.frame_tokens, result.embeddings, result.timestamps_s = (frames.frame_tokens, frames.embeddings,
                                                                       frames.timestamps_s)
    if result.frame_tokens is None:  # signals only
        result.frame_tokens, result.embeddings = np.zeros((0, 1, 1), np.float16), np.zeros((0, 1), np.float32)
        result.timestamps_s = np.zeros(0)
    segment_embeddings = None
    if result.signals:
        if text_embedder is None:
            from videomini.signals.text import default_embedder

            text_embedder = default_embedder()
        segment_embeddings = text_embedder.encode([seg["text"] for seg in result.segments])
    library.write_shard(video_id, result.frame_tokens, result.embeddings, result.timestamps_s,
                        duration_s=result.duration_s, model_id=model_id if len(result.timestamps_s) else None,
                        fps=fps, timings={"decode_encode_s": round(result.seconds, 3)}, signals=result.signals,
                        segments=result.segments, segment_embeddings=segment_embeddings,
                        text_model=getattr(text_embedder, "label", None))
    library.mark_done(video_id)
    report.indexed.append(result.path)
    report.frames += len(result.timestamps_s)
    report.segments += len(result.segments)
    emit("done", {"path": result.path})


def kept_frames_for(library: Any, item: Any, visual: bool) -> Any:
    """A signals-only run over a video already indexed with frames (same file): keep those frames."""
    if visual or item.action != "changed":
        return None
    row = library.video(item.path)
    if not row or row["status"] != "done" or row["fingerprint"] != item.fingerprint or not row["n_frames"]:
        return None
    return library.load_frames(row["id"]), row["model_id"]


def _index_one(library: Any, item: Any, job: DecodeJob, model: Any, fps: float, report: IndexReport,
               emit: Event, text_embedder: Any = None) -> None:
    path = str(item.path)
    kept = kept_frames_for(library, item, model is not None)
    video_id = library.mark_running(item.path, item.fingerprint, model_id=_model_id(model), fps=fps)
    emit("video", {"path": path, "action": item.action})
    result = encode_messages(path, job.messages(), model.encoder if model is not None else None, fps, emit)
    commit_video(library, item, video_id, result, _model_id(model), fps, report, emit, text_embedder, kept)
