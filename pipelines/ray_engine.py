"""`index --engine ray`: the local engine's per-video work on Ray Data, so that a cluster can index one library.

    videos (path, video_id) ── flat_map: decode task (CPU) ──► one row per decoded batch (+ info, end or error)
        ── map_batches: EncoderActor (holds the model; one GPU each when the cluster has GPUs) ──► encoded rows
        ── this process (the driver): reassemble each video by batch number ──► commit_video (shard, catalog)

What runs where. Decode tasks call the local engine's `DecodeJob` (a spawned child process per video, reading
through a bounded queue), so a decoder that segfaults or hangs for `timeout_s` fails only its video, with the
reason, exactly as with `--engine local`; the Ray task itself never crashes on a bad file. Batch boundaries are
the decoder's (`batch_size` frames), and each actor runs the same `FrameEncoder.encode` on each batch, so the
tokens equal the local engine's. The driver is the library's only writer: it marks every video `running` before
the job starts, commits a video (shard made durable, then `done`) the moment its last batch arrives, and rebuilds
the FAISS index at the end (in `index_videos`). A driver killed mid-job leaves the library as the local engine
would: done videos stay done, the rest are resumed by the next run.

Rows carry arrays as raw bytes with their shape in a small JSON `meta` column: every row of every kind has the
same columns, so Ray Data never has to reconcile schemas or tensor shapes between videos.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from videomini.pipelines.index import EncodedVideo, Event, IndexError_, IndexReport, commit_video

RAY_MISSING = "ray is not installed: pip install 'videomini[ray]'"
NO_PROJECTION = ("{model_id}: its vision tower has no CLIP projection, so frames get no embeddings to search; "
                 "use a checkpoint whose mm_vision_tower is a full CLIP")
# Ray puts unix sockets at <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store (65 bytes after the
# temp dir at most), and a socket path has at most 107 bytes
TEMP_DIR_MAX = 107 - 65


# -- rows ---------------------------------------------------------------------------------------------------------


def _row(video_id: int, kind: str, seq: int = -1, meta: dict | None = None, **arrays: np.ndarray) -> dict:
    """One row of the decode or the encode stage: arrays as bytes, their shapes and everything else in `meta`."""
    meta = dict(meta or {})
    row = {"video_id": video_id, "kind": kind, "seq": seq}
    for name in ("frames", "times", "tokens", "embeddings"):
        array = arrays.get(name)
        row[name] = b"" if array is None else np.ascontiguousarray(array).tobytes()
        if array is not None:
            meta[f"{name}_shape"], meta[f"{name}_dtype"] = list(array.shape), array.dtype.str
    row["meta"] = json.dumps(meta)
    return row


def _array(row: dict, meta: dict, name: str) -> np.ndarray:
    """The array `name` of a row, as a writable numpy array."""
    return np.frombuffer(row[name], dtype=meta[f"{name}_dtype"]).reshape(meta[f"{name}_shape"]).copy()


# -- stage 1: decode tasks ----------------------------------------------------------------------------------------


def decode_video(video: dict, *, fps: float, batch_size: int, timeout_s: float) -> Iterator[dict]:
    """Ray task: decode one video in an isolated child process (the local engine's DecodeJob) and yield an "info"
    row, one "batch" row per decoded batch, then an "end" row (batch count, warnings) or an "error" row."""
    import multiprocessing as mp

    from videomini.pipelines.index import DecodeJob

    video_id, seq, warnings, started = int(video["video_id"]), 0, [], time.perf_counter()
    job = DecodeJob(mp.get_context("spawn"), Path(video["path"]), fps, batch_size, timeout_s)
    try:
        for message in job.messages():
            kind = message[0]
            if kind == "info":
                yield _row(video_id, "info", meta={"info": message[1]})
            elif kind == "batch":
                yield _row(video_id, "batch", seq, frames=message[1], times=np.asarray(message[2], np.float64))
                seq += 1
            elif kind == "warning":
                warnings.append(message[1])
            elif kind == "end":
                yield _row(video_id, "end", meta={"batches": seq, "warnings": warnings,
                                                  "decode_s": time.perf_counter() - started})
            elif kind == "error":
                yield _row(video_id, "error", meta={"error": message[1]})
    finally:
        job.close()


# -- stage 2: encoder actors --------------------------------------------------------------------------------------


class EncoderActor:
    """Ray actor: holds one model on its device and encodes each decoded batch exactly as the local engine does
    (`FrameEncoder.encode`); the other rows pass through."""

    def __init__(self, model_id: str, batch_size: int):
        import torch

        import ray

        from videomini.loading import CheckpointError, load_model
        from videomini.pipelines.ask import VideoMini

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))
        # A model that cannot be used is reported in the rows ("fatal"), not raised: an actor whose constructor
        # raises is retried by Ray and buried under its tracebacks; the driver stops the run with this one line.
        self.problem: str | None = None
        try:
            self.videomini = VideoMini(*load_model(model_id), batch_size=batch_size, retrieval=False)
        except CheckpointError as e:  # names the folder and the reason already
            self.problem = _one_line(e, with_type=False)
        except Exception as e:
            self.problem = f"{model_id}: cannot load the model on a Ray worker ({_one_line(e)})"
        else:
            if not hasattr(self.videomini.model.vision_tower, "visual_projection"):
                self.problem = NO_PROJECTION.format(model_id=model_id)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import torch

        rows = []
        for i in range(len(batch["kind"])):
            row = {name: column[i] for name, column in batch.items()}
            meta = json.loads(row["meta"])
            if self.problem is not None:
                rows.append(_row(int(row["video_id"]), "fatal", meta={"error": self.problem}))
                continue
            if row["kind"] != "batch":
                rows.append(row)
                continue
            started = time.perf_counter()
            encoded = self.videomini.encoder.encode(_array(row, meta, "frames"), _array(row, meta, "times"))
            rows.append(_row(int(row["video_id"]), "batch", int(row["seq"]),
                             meta={"encode_s": time.perf_counter() - started},
                             tokens=encoded.frame_tokens.to(torch.float16).numpy(),
                             embeddings=encoded.clip_embeddings.numpy(), times=encoded.timestamps_s))
        return {name: [row[name] for row in rows] for name in ("video_id", "kind", "seq", "frames", "times",
                                                              "tokens", "embeddings", "meta")}


# -- the driver ---------------------------------------------------------------------------------------------------


@dataclass
class _Assembly:
    """One video's encoded batches as they arrive (in any order), until its last one is in."""

    item: Any  # PlanItem
    video_id: int
    batches: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    expected: int | None = None  # batch count, known from the "end" row
    duration_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0  # decode + encode, summed over the workers
    announced: bool = False  # the "video" event was emitted

    def complete(self) -> bool:
        return self.error is not None or (self.expected is not None and len(self.batches) >= self.expected)

    def result(self) -> EncodedVideo:
        """The same EncodedVideo the local engine's `encode_messages` builds."""
        path = str(self.item.path)
        result = EncodedVideo(path, duration_s=self.duration_s, error=self.error, seconds=self.seconds,
                              warnings=[w if w.startswith(path) else f"{path}: {w}" for w in self.warnings])
        if result.error is None and not self.batches:
            result.error = f"{path}: no frames could be decoded"
        if result.error is None:
            ordered = [self.batches[seq] for seq in range(self.expected)]
            result.frame_tokens = np.concatenate([tokens for tokens, _, _ in ordered])
            result.embeddings = np.concatenate([embeddings for _, embeddings, _ in ordered])
            result.timestamps_s = np.concatenate([times for _, _, times in ordered])
        return result


def run_ray(library: Any, todo: list, model_id: str | None, *, fps: float, batch_size: int, timeout_s: float,
            address: str | None, report: IndexReport, emit: Event, encoders: int | None = None) -> None:
    """Index the `todo` plan items on Ray (a running cluster at `address`, else a local Ray on this machine's
    CPUs, started and shut down here). `encoders`: encoder actors (default: one per GPU, or one on a CPU-only
    cluster, using half of a node's CPUs).
    Results enter the library through `commit_video`, in this process only."""
    from videomini.loading import CheckpointError
    from videomini.pipelines.ask import default_model_id

    model_id = model_id or default_model_id()
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        _check_projection(model_id)
    except CheckpointError:
        if address is None:
            raise  # same machine, same files: the actors could not load it either
        # on a cluster, the workers may have the model when this machine does not: the actors check it
    ray, started_here, temp_dir = _start_ray(address)
    try:
        _run(ray, library, todo, model_id, fps, batch_size, timeout_s, report, emit, encoders)
    finally:
        if started_here:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


def _check_projection(model_id: str) -> None:
    """Fail before starting anything when the checkpoint's tower has no CLIP projection (read from its
    safetensors headers, without loading the model), with the local engine's message."""
    from videomini.loading import has_weights, read_config, resolve_checkpoint, resolve_vision_tower
    from videomini.model import LlavaMiniConfig

    folder = resolve_checkpoint(model_id)
    tower = resolve_vision_tower(LlavaMiniConfig.from_dict(read_config(folder)).mm_vision_tower, folder)
    if not has_weights(tower, "visual_projection."):
        raise IndexError_(NO_PROJECTION.format(model_id=model_id))


def _start_ray(address: str | None) -> tuple[Any, bool, str | None]:
    """Connect to the cluster at `address`, reuse a Ray this process already started, or start a quiet local
    Ray whose files live in a fresh temp folder (under RAY_TMPDIR when set). Returns (ray, started, temp)."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without its data extra lacks pandas and friends)
    except ImportError:
        raise IndexError_(RAY_MISSING) from None
    if ray.is_initialized():
        return ray, False, None
    options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    temp_dir = None
    try:
        if address:
            ray.init(address=address, **options)
        else:
            temp_dir = short_temp_dir()
            ray.init(num_cpus=os.cpu_count() or 1, _temp_dir=temp_dir, **options)
    except Exception as e:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise IndexError_(f"cannot start {where}: {_one_line(e)}") from None
    return ray, True, temp_dir


def short_temp_dir() -> str:
    """A fresh folder for a local Ray's session files: under RAY_TMPDIR (else the system's temp folder) when the
    socket paths fit there, else under /tmp."""
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    if len(os.path.join(base, "vmray-12345678")) > TEMP_DIR_MAX:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="vmray-", dir=base)


def _run(ray: Any, library: Any, todo: list, model_id: str, fps: float, batch_size: int, timeout_s: float,
         report: IndexReport, emit: Event, encoders: int | None) -> None:
    from ray.data import ActorPoolStrategy, DataContext

    videos: dict[int, _Assembly] = {}
    for item in todo:
        video_id = library.mark_running(item.path, item.fingerprint, model_id=model_id, fps=fps)
        videos[video_id] = _Assembly(item, video_id)

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:  # one actor per GPU; the CPUs decode
        actor_resources = {"num_gpus": 1, "num_cpus": 0}
    else:  # no GPU: one actor on half of the smallest node (it holds a whole model in RAM), the rest decodes
        node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
        actor_resources = {"num_gpus": 0, "num_cpus": max(1, int(min(node_cpus, default=2)) // 2)}
    encoders = encoders or max(1, gpus)
    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.print_on_execution_start)
    context.enable_progress_bars, context.print_on_execution_start = False, False
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    data_logger.setLevel(logging.CRITICAL)  # failures reach the caller as IndexError_, not as log spam
    try:
        dataset = (
            ray.data.from_items([{"path": str(a.item.path), "video_id": video_id} for video_id, a in videos.items()],
                                override_num_blocks=len(videos))
            .flat_map(decode_video, fn_kwargs={"fps": fps, "batch_size": batch_size, "timeout_s": timeout_s},
                      num_cpus=1)
            .map_batches(EncoderActor, fn_constructor_kwargs={"model_id": model_id, "batch_size": batch_size},
                         batch_size=1, batch_format="numpy", compute=ActorPoolStrategy(min_size=1, max_size=encoders),
                         **actor_resources)
        )
        rows = iter(dataset.iter_rows())
        try:
            while True:
                try:
                    row = next(rows, None)
                except Exception as e:  # Ray itself failed (a lost node, a bug): one line; details in Ray's logs
                    raise IndexError_(f"the Ray job failed: {_one_line(_root_cause(e))}") from None
                if row is None:
                    break
                _receive(row, videos, library, model_id, fps, report, emit)
        finally:
            getattr(rows, "close", lambda: None)()  # stops the job on a cluster that outlives this run
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        data_logger.setLevel(saved_level)
    for assembly in list(videos.values()):  # a video whose rows never came (should not happen): its failure
        assembly.error = assembly.error or f"{assembly.item.path}: the Ray job returned no result for this file"
        _commit(assembly, videos, library, model_id, fps, report, emit)


def _receive(row: dict, videos: dict[int, _Assembly], library: Any, model_id: str, fps: float,
             report: IndexReport, emit: Event) -> None:
    """Take one encoded row; commit its video when that was the last piece. Repeated rows (a retried Ray task)
    overwrite their own batch and are otherwise harmless."""
    assembly = videos.get(int(row["video_id"]))
    if assembly is None:  # already committed
        return
    meta, path, kind = json.loads(row["meta"]), str(assembly.item.path), row["kind"]
    if not assembly.announced:
        assembly.announced = True
        emit("video", {"path": path, "action": assembly.item.action})
    if kind == "info":
        assembly.duration_s = meta["info"].get("duration_s")
        emit("info", {"path": path, "frames": int((assembly.duration_s or 0) * fps) + 1})
    elif kind == "batch":
        times = _array(row, meta, "times")
        assembly.batches[int(row["seq"])] = (_array(row, meta, "tokens"), _array(row, meta, "embeddings"), times)
        assembly.seconds += meta["encode_s"]
        emit("frames", {"path": path, "count": len(times)})
    elif kind == "end":
        assembly.expected, assembly.warnings = meta["batches"], meta["warnings"]
        assembly.seconds += meta["decode_s"]
    elif kind == "error":
        assembly.error = meta["error"]
    elif kind == "fatal":  # the encoder cannot run at all: stop, the videos left stay `running` for a re-run
        raise IndexError_(meta["error"])
    if assembly.complete():
        _commit(assembly, videos, library, model_id, fps, report, emit)


def _commit(assembly: _Assembly, videos: dict[int, _Assembly], library: Any, model_id: str, fps: float,
            report: IndexReport, emit: Event) -> None:
    del videos[assembly.video_id]
    commit_video(library, assembly.item, assembly.video_id, assembly.result(), model_id, fps, report, emit)


def _root_cause(error: BaseException) -> BaseException:
    """The user-code exception inside Ray's wrappers (RayTaskError keeps it as `.cause`)."""
    for _ in range(10):
        inner = getattr(error, "cause", None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def _one_line(error: BaseException, with_type: bool = True) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}" if with_type or not text else text
