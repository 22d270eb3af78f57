"""What both index engines share: the run's report and errors, one video's result assembled from its messages,
and `commit_video`, the single place where a result enters the library.

Both engines feed a `VideoAssembly` the same typed messages (videomini.pipelines.messages) -- the local engine in
decoding order, the Ray engine in whatever order its rows arrive -- so both build the very same `EncodedVideo`
(and the same failure messages) for a video.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videomini.config import Event
from videomini.errors import VideominiError
from videomini.pipelines.messages import EncodedFrames, Failed, Finished, FrameBatch, Message, Probed

NO_PROJECTION = ("{model_id}: its vision tower has no CLIP projection, so frames get no embeddings to search; "
                 "use a checkpoint whose mm_vision_tower is a full CLIP")

def no_event(kind: str, details: dict) -> None:
    """The progress callback when nobody listens."""


class IndexRunError(VideominiError):
    """The whole run cannot proceed (e.g. the model gives no embeddings); one line naming the cause."""
    exit_code, http_status = 2, 503


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


def encode_batch(encoder: Any, batch: FrameBatch) -> EncodedFrames:
    """Encode one decoded batch on the encoder's device (`FrameEncoder.encode`), as both engines do."""
    started = time.perf_counter()
    encoded = encoder.encode(batch.frames, batch.timestamps_s)
    return EncodedFrames(batch.seq, encoded.clip_embeddings.numpy(), encoded.timestamps_s,
                         encode_s=time.perf_counter() - started)


@dataclass
class EncodedVideo:
    """One video's decoded-and-encoded result, ready for the library (or the reason it failed)."""

    path: str
    embeddings: np.ndarray | None = None  # fp32 (N, D); frame tokens are not kept (no reader: storage/shards.py)
    timestamps_s: np.ndarray | None = None  # f64 (N,)
    duration_s: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # decoding and encoding
    signals: list[str] = field(default_factory=list)  # signals extracted (even when they found nothing)
    segments: list[dict] = field(default_factory=list)  # {"source", "text", "start_s", "end_s"}


@dataclass
class VideoAssembly:
    """One video being indexed: its plan item and catalog id, and its messages as they arrive (in any order),
    until the last one is in."""

    item: Any  # PlanItem
    video_id: int
    kept: Any = None  # the frames a signals-only run keeps (kept_frames_for)
    kept_text: Any = None  # the (signals, segments) a run adding frames keeps (kept_text_for)
    info: dict | None = None
    batches: dict[int, EncodedFrames] = field(default_factory=dict)  # by seq; a repeated batch overwrites itself
    finished: Finished | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return str(self.item.path)

    def add(self, message: Message, fps: float, emit: Event = no_event) -> None:
        """Take one message (decoded batches must have been encoded), with its progress event."""
        if isinstance(message, Probed):
            self.info = message.info
            emit("info", {"path": self.path, "frames": int((self.info.get("duration_s") or 0) * fps) + 1})
        elif isinstance(message, EncodedFrames):
            self.batches[message.seq] = message
            emit("frames", {"path": self.path, "count": len(message.timestamps_s)})
        elif isinstance(message, (Finished, Failed)):
            self.warnings += [w if w.startswith(self.path) else f"{self.path}: {w}" for w in message.warnings]
            if isinstance(message, Finished):
                self.finished = message
            else:
                self.error = message.error
        else:
            raise TypeError(f"a video's assembly takes no {type(message).__name__} message")

    def complete(self) -> bool:
        return self.error is not None or (self.finished is not None and len(self.batches) >= self.finished.batches)

    def result(self, visual: bool) -> EncodedVideo:
        """The video's result; `visual` False: a signals-only run, which encodes no frames."""
        result = EncodedVideo(self.path, duration_s=(self.info or {}).get("duration_s"), error=self.error,
                              warnings=list(self.warnings))
        batches = [self.batches[seq] for seq in sorted(self.batches)]
        result.seconds = sum(batch.encode_s for batch in batches)
        if result.error is None and self.finished is None:
            result.error = f"{self.path}: the decoder stopped without a last message"
        if result.error is not None:
            return result
        result.seconds += self.finished.decode_s
        result.signals, result.segments = list(self.finished.signals), list(self.finished.segments)
        if visual and not batches:
            result.error = f"{self.path}: no frames could be decoded"
        elif not visual and not result.signals:
            result.error = f"{self.path}: no signal could be extracted (see the warnings)"
        elif batches:
            result.embeddings = np.concatenate([batch.embeddings for batch in batches])
            result.timestamps_s = np.concatenate([batch.timestamps_s for batch in batches])
        return result


def kept_frames_for(library: Any, item: Any, visual: bool) -> Any:
    """A signals-only run over a video already indexed with frames (same file): keep those frames.
    Call before `mark_running`, which forgets the shard."""
    if visual or item.action != "changed":
        return None
    row = library.video(item.path)
    if not row or row["status"] != "done" or row["fingerprint"] != item.fingerprint or not row["n_frames"]:
        return None
    return library.load_frames(row["id"]), row["model_id"]


def kept_text_for(library: Any, item: Any, visual: bool) -> tuple[list[str], list[dict]] | None:
    """A run that adds frames to a video indexed before (same file) keeps its stored speech and on-screen text:
    they do not depend on the vision model, and transcribing again costs more than the frames. Call before
    `mark_running`, which forgets the shard."""
    if not visual or item.action != "changed" or not item.signals:
        return None
    row = library.video(item.path)
    if not row or row["status"] != "done" or row["fingerprint"] != item.fingerprint:
        return None
    return list(item.signals), library.segments(row["id"])


def commit_video(library: Any, assembly: VideoAssembly, result: EncodedVideo, *, model_id: str | None, fps: float,
                 report: IndexReport, emit: Event = no_event, text_embedder: Any = None) -> None:
    """Record one video's result: its shard made durable, then `done`; or `failed` with the reason.
    Segments are embedded with `text_embedder` (MiniLM)."""
    report.warnings += result.warnings
    if result.error is not None:
        library.mark_failed(assembly.item.path, result.error, assembly.item.fingerprint)
        report.failed.append((result.path, result.error))
        emit("failed", {"path": result.path, "error": result.error})
        return
    if assembly.kept_text is not None:
        kept_signals, kept_segments = assembly.kept_text
        result.signals = sorted(set(result.signals) | set(kept_signals))
        result.segments = kept_segments + result.segments
    if result.timestamps_s is None and assembly.kept is not None:
        frames, model_id = assembly.kept
        result.embeddings, result.timestamps_s = frames.embeddings, frames.timestamps_s
    if result.timestamps_s is None:  # signals only
        result.embeddings, result.timestamps_s = np.zeros((0, 1), np.float32), np.zeros(0)
    segment_embeddings = None
    if result.signals:
        text_embedder = text_embedder or default_text_embedder()
        segment_embeddings = text_embedder.encode([seg["text"] for seg in result.segments])
    library.write_shard(assembly.video_id, None, result.embeddings, result.timestamps_s,
                        duration_s=result.duration_s, model_id=model_id if len(result.timestamps_s) else None,
                        fps=fps, timings={"decode_encode_s": round(result.seconds, 3)}, signals=result.signals,
                        segments=result.segments, segment_embeddings=segment_embeddings,
                        text_model=getattr(text_embedder, "label", None))
    library.mark_done(assembly.video_id)
    report.indexed.append(result.path)
    report.frames += len(result.timestamps_s)
    report.segments += len(result.segments)
    emit("done", {"path": result.path})


def default_text_embedder() -> Any:
    """The bundled MiniLM that embeds speech / on-screen text (loaded once per process)."""
    return text_embedder_for(None)


def text_embedder_for(model: str | None) -> Any:
    """The sentence embedder of speech / on-screen text: `model` (a sentence-transformers folder or hub id), else
    the bundled MiniLM; loaded once per process. IndexRunError (one line) when it cannot be loaded."""
    from videomini.signals import SignalError
    from videomini.signals.text import TextEmbedder, default_embedder

    try:
        return TextEmbedder.shared(model) if model else default_embedder()
    except SignalError as e:
        raise IndexRunError(f"--text-model: {e}" if model else str(e)) from None
