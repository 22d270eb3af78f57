"""The local engine: decoder processes on this machine, the encoder on this process's device.

Decoding runs in worker processes (videomini.pipelines.decoder), one per video: a decoder that crashes or hangs
fails only that file. Up to `workers` videos decode ahead while the device encodes the current one.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Any

from videomini.pipelines.decoder import DecodeJob
from videomini.pipelines.index_run import Engine, IndexJob
from videomini.pipelines.messages import FrameBatch
from videomini.pipelines.video_commit import (
    NO_PROJECTION,
    IndexRunError,
    VideoAssembly,
    commit_video,
    encode_batch,
    kept_frames_for,
    kept_text_for,
)


@dataclass
class LocalEngine(Engine):
    """`--engine local`: `workers` decoder processes (videos decoded ahead, each in isolation)."""

    workers: int = 2

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise IndexRunError(f"workers={self.workers}: need at least one decoder process")

    def run(self, job: IndexJob) -> None:
        """Index the plan items with the job's model (None: signals only), decoding up to `workers` ahead."""
        if job.model is not None:
            check_model(job.model, job.model_id)
        ctx = mp.get_context("spawn")
        jobs: dict[int, DecodeJob] = {}
        kept_text: dict[int, Any] = {}
        todo, config = job.todo, job.config
        try:
            for position, item in enumerate(todo):
                for ahead in range(position, min(position + self.workers, len(todo))):
                    if ahead not in jobs:
                        kept_text[ahead] = kept_text_for(job.library, todo[ahead], job.model is not None)
                        signals = set(config.signals) | set(todo[ahead].signals)
                        signals -= set(kept_text[ahead][0] if kept_text[ahead] else ())  # stored text: not redone
                        jobs[ahead] = DecodeJob(ctx, todo[ahead].path, config.fps, config.batch_size,
                                                config.timeout_s, sorted(signals), job.model is not None, config.decode,
                                                config.asr_model)
                decoding = jobs.pop(position)
                try:
                    _index_one(job, item, decoding, kept_text.pop(position))
                finally:
                    decoding.close()
        finally:
            for decoding in jobs.values():
                decoding.close()


def check_model(model: Any, model_id: str | None) -> None:
    """Indexing needs frame embeddings to search: the vision tower must be a full CLIP with its projection."""
    if not hasattr(model.model.vision_tower, "visual_projection"):
        raise IndexRunError(NO_PROJECTION.format(model_id=model_id))


def _index_one(job: IndexJob, item: Any, decoding: DecodeJob, kept_text: Any = None) -> None:
    """Encode one video's batches as they arrive from its decoder, then commit it (with the speech / on-screen
    text `kept_text` already stored for it, when the run adds frames to a video indexed without them)."""
    visual, fps = job.model is not None, job.config.fps
    model_id = job.model_id if visual else None
    kept = kept_frames_for(job.library, item, visual)
    video_id = job.library.mark_running(item.path, item.fingerprint, model_id=model_id, fps=fps)
    job.emit("video", {"path": str(item.path), "action": item.action})
    assembly = VideoAssembly(item, video_id, kept, kept_text=kept_text)
    started = time.perf_counter()
    for message in decoding.messages():
        if isinstance(message, FrameBatch):
            message = encode_batch(job.model.encoder, message)
        assembly.add(message, fps, job.emit)
    result = assembly.result(visual=visual)
    result.seconds = time.perf_counter() - started  # wall time: decoding overlaps encoding
    commit_video(job.library, assembly, result, model_id=model_id, fps=fps, report=job.report, emit=job.emit,
                 text_embedder=job.text_embedder)
