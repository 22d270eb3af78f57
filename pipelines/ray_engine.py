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
would: done videos stay done, the rest are resumed by the next run. Each video's rows are replayed through the
local engine's own `encode_messages` before `commit_video`, so both engines build the very same result (and
failure messages). Speech and on-screen text (`signals`) are extracted in the decode tasks, as in the local
decoders; a signals-only run (`visual` False) has no encoder stage.

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
from typing import Any, Iterable, Iterator

import numpy as np

from videomini.pipelines.index import (NO_PROJECTION, EncodedVideo, Event, IndexError_, IndexReport, commit_video,
                                       encode_messages, first_line, kept_frames_for)

RAY_MISSING = "ray is not installed: pip install 'videomini[ray]'"
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


def decode_video(video: dict, *, fps: float, batch_size: int, timeout_s: float, frames: bool) -> Iterator[dict]:
    """Ray task: decode one video in an isolated child process (the local engine's DecodeJob) and yield an "info"
    row, one "batch" row per decoded batch, the "segments" row when signals were asked for, then an "end" row
    (batch count, warnings) or an "error" row. `frames` False (signals only): no batches."""
    import multiprocessing as mp

    from videomini.pipelines.index import DecodeJob

    video_id, seq, warnings, started = int(video["video_id"]), 0, [], time.perf_counter()
    signals = json.loads(video["signals"])
    job = DecodeJob(mp.get_context("spawn"), Path(video["path"]), fps, batch_size, timeout_s, signals=signals,
                    frames=frames)
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
            elif kind == "segments":
                yield _row(video_id, "segments", meta={"signals": message[1], "segments": message[2]})
            elif kind == "end":
                yield _row(video_id, "end", meta={"batches": seq, "warnings": warnings,
                                                  "decode_s": time.perf_counter() - started})
            elif kind == "error":
                yield _row(video_id, "error", meta={"error": message[1], "warnings": warnings})
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
            self.problem = first_line(e)
        except Exception as e:
            self.problem = f"{model_id}: cannot load the model on a Ray worker ({first_line(e, with_type=True)})"
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
    """One video's rows as they arrive (in any order), until its last one is in."""

    item: Any  # PlanItem
    video_id: int
    info: dict | None = None
    batches: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # seq -> arrays
    expected: int | None = None  # batch count, known from the "end" row
    segments: tuple[list, list] | None = None  # (signals done, segment dicts)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0  # decode + encode, summed over the workers
    announced: bool = False  # the "video" event was emitted
    kept: Any = None  # the frames a signals-only run keeps (kept_frames_for)

    def complete(self) -> bool:
        return self.error is not None or (self.expected is not None and len(self.batches) >= self.expected)

    def result(self, visual: bool, fps: float) -> EncodedVideo:
        """The EncodedVideo the local engine would build: this video's messages replayed, in their order, through
        its own `encode_messages`, with the actors' encodings standing in for the encoder."""
        messages: list[tuple] = [] if self.info is None else [("info", self.info)]
        if self.error is None:
            messages += [("batch", self.batches[seq], None) for seq in range(self.expected)]
        messages += [("warning", warning) for warning in self.warnings]
        if self.segments is not None:
            messages.append(("segments", *self.segments))
        messages.append(("error", self.error) if self.error is not None else ("end",))
        result = encode_messages(str(self.item.path), messages, _Replay() if visual else None, fps)
        result.seconds = self.seconds
        return result


class _Replay:
    """Stands in for the encoder in `encode_messages`: the batch "frames" are already the actor's encoding."""

    def encode(self, encoded: tuple[np.ndarray, np.ndarray, np.ndarray], _times: Any) -> Any:
        import torch

        from videomini.encoder import EncodedBatch

        tokens, embeddings, times = encoded
        return EncodedBatch(frame_tokens=torch.from_numpy(tokens), timestamps_s=times,
                            clip_embeddings=torch.from_numpy(embeddings))


def run_ray(library: Any, todo: list, model_id: str | None, *, fps: float, batch_size: int, timeout_s: float,
            address: str | None, report: IndexReport, emit: Event, signals: Iterable[str] = (), visual: bool = True,
            text_embedder: Any = None, encoders: int | None = None) -> None:
    """Index the `todo` plan items on Ray: a running cluster at `address` (or $RAY_ADDRESS), else a local Ray on
    this machine's CPUs, started and shut down here. Results enter the library through `commit_video`, in this
    process only. `signals`, `visual`, `text_embedder`: as the local engine's. `encoders`: encoder actors
    (default: one per GPU; one on a CPU-only cluster, using half of a node's CPUs)."""
    from videomini.loading import CheckpointError
    from videomini.pipelines.ask import default_model_id

    model_id = (model_id or default_model_id()) if visual else None  # as recorded in the catalog
    load_id = model_id  # as the workers load it: a local folder by its absolute path (their cwd is not ours)
    if model_id is not None and Path(model_id).expanduser().exists():
        load_id = str(Path(model_id).expanduser().resolve())
    address = address or os.environ.get("RAY_ADDRESS") or None
    if load_id is not None:
        try:
            _check_projection(load_id, model_id)
        except CheckpointError:
            if address is None:
                raise  # same machine, same files: the actors could not load it either
            # on a cluster the workers may have the model when this machine does not: the actors check it
    ray, started_here, temp_dir = _start_ray(address)
    try:
        _run(ray, library, todo, model_id, load_id, fps, batch_size, timeout_s, sorted(set(signals)),
             text_embedder, report, emit, encoders)
    finally:
        if started_here:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


def index_videos_ray(library_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], model: Any = None,
                     **options: Any) -> IndexReport:
    """The "ray" entry point of the `videomini.engines` group: `index_videos` on Ray."""
    from videomini.pipelines.index import index_videos

    return index_videos(library_dir, paths, model, engine="ray", **options)


def _check_projection(load_id: str, model_id: str) -> None:
    """Fail before starting anything when the checkpoint's tower has no CLIP projection (read from its
    safetensors headers, without loading the model), with the local engine's message."""
    from videomini.loading import has_weights, read_config, resolve_checkpoint, resolve_vision_tower
    from videomini.model import LlavaMiniConfig

    folder = resolve_checkpoint(load_id)
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
    if address:
        _probe(address)
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
        what = f"connect to the Ray cluster at {address}" if address else "start a local Ray"
        raise IndexError_(f"cannot {what}: {first_line(e, with_type=True)}") from None
    return ray, True, temp_dir


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast when nothing listens at a host:port address: ray.init would retry for many minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # "auto" and the like: Ray resolves them itself
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise IndexError_(f"cannot reach the Ray cluster at {address} ({e.strerror or type(e).__name__}): "
                          "start one with `ray start --head`, or leave out --ray-address for a local Ray") from None


def short_temp_dir() -> str:
    """A fresh folder for a local Ray's session files: under RAY_TMPDIR (else the system's temp folder) when the
    socket paths fit there, else under /tmp."""
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    if len(os.path.join(base, "vmray-12345678")) > TEMP_DIR_MAX:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="vmray-", dir=base)


def _run(ray: Any, library: Any, todo: list, model_id: str | None, load_id: str | None, fps: float,
         batch_size: int, timeout_s: float, signals: list[str], text_embedder: Any, report: IndexReport,
         emit: Event, encoders: int | None) -> None:
    from ray.data import DataContext

    visual = load_id is not None
    videos: dict[int, _Assembly] = {}
    inputs = []
    for item in todo:
        kept = kept_frames_for(library, item, visual)  # before mark_running, which forgets the shard
        video_id = library.mark_running(item.path, item.fingerprint, model_id=model_id, fps=fps)
        videos[video_id] = _Assembly(item, video_id, kept=kept)
        video_signals = sorted(set(signals) | set(getattr(item, "signals", ())))
        inputs.append({"path": str(item.path), "video_id": video_id, "signals": json.dumps(video_signals)})

    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.print_on_execution_start)
    context.enable_progress_bars, context.print_on_execution_start = False, False
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    data_logger.setLevel(logging.CRITICAL)  # failures reach the caller as IndexError_, not as log spam
    try:
        dataset = ray.data.from_items(inputs, override_num_blocks=len(inputs)).flat_map(
            decode_video, fn_kwargs={"fps": fps, "batch_size": batch_size, "timeout_s": timeout_s, "frames": visual},
            num_cpus=1)
        if visual:
            dataset = dataset.map_batches(
                EncoderActor, fn_constructor_kwargs={"model_id": load_id, "batch_size": batch_size}, batch_size=1,
                batch_format="numpy", **_encoder_resources(ray, encoders))
        rows = iter(dataset.iter_rows())
        try:
            while True:
                try:
                    row = next(rows, None)
                except Exception as e:  # Ray itself failed (a lost node, a bug): one line; details in Ray's logs
                    raise IndexError_(f"the Ray job failed: {first_line(_root_cause(e), with_type=True)}") from None
                if row is None:
                    break
                done = _receive(row, videos, fps, emit)
                if done is not None:
                    _commit(done, videos, library, model_id, fps, visual, text_embedder, report, emit)
        finally:
            getattr(rows, "close", lambda: None)()  # stops the job on a cluster that outlives this run
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        data_logger.setLevel(saved_level)
    for assembly in list(videos.values()):  # a video whose rows never came (should not happen): its failure
        assembly.error = assembly.error or f"{assembly.item.path}: the Ray job returned no result for this file"
        _commit(assembly, videos, library, model_id, fps, visual, text_embedder, report, emit)


def _encoder_resources(ray: Any, encoders: int | None) -> dict:
    """The actor pool: one actor per GPU (the CPUs decode); without GPUs one actor (it holds a whole model in
    RAM) on half of the smallest node's CPUs, the other half decoding."""
    from ray.data import ActorPoolStrategy

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        resources = {"num_gpus": 1, "num_cpus": 0}
    else:
        node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
        resources = {"num_gpus": 0, "num_cpus": max(1, int(min(node_cpus, default=2)) // 2)}
    return {**resources, "compute": ActorPoolStrategy(min_size=1, max_size=encoders or max(1, gpus))}


def _receive(row: dict, videos: dict[int, _Assembly], fps: float, emit: Event) -> _Assembly | None:
    """Take one row; returns its video when that row completed it. Repeated rows (a retried Ray task) overwrite
    their own batch and are otherwise harmless."""
    assembly = videos.get(int(row["video_id"]))
    if assembly is None:  # already committed
        return None
    meta, path, kind = json.loads(row["meta"]), str(assembly.item.path), row["kind"]
    if not assembly.announced:
        assembly.announced = True
        emit("video", {"path": path, "action": assembly.item.action})
    if kind == "info":
        assembly.info = meta["info"]
        emit("info", {"path": path, "frames": int((assembly.info.get("duration_s") or 0) * fps) + 1})
    elif kind == "batch":
        times = _array(row, meta, "times")
        assembly.batches[int(row["seq"])] = (_array(row, meta, "tokens"), _array(row, meta, "embeddings"), times)
        assembly.seconds += meta["encode_s"]
        emit("frames", {"path": path, "count": len(times)})
    elif kind == "segments":
        assembly.segments = (meta["signals"], meta["segments"])
    elif kind == "end":
        assembly.expected, assembly.warnings = meta["batches"], meta["warnings"]
        assembly.seconds += meta["decode_s"]
    elif kind == "error":
        assembly.error, assembly.warnings = meta["error"], meta["warnings"]
    elif kind == "fatal":  # the encoder cannot run at all: stop; the videos left stay `running` for a re-run
        raise IndexError_(meta["error"])
    return assembly if assembly.complete() else None


def _commit(assembly: _Assembly, videos: dict[int, _Assembly], library: Any, model_id: str | None, fps: float,
            visual: bool, text_embedder: Any, report: IndexReport, emit: Event) -> None:
    del videos[assembly.video_id]
    commit_video(library, assembly.item, assembly.video_id, assembly.result(visual, fps), model_id, fps, report, emit,
                 text_embedder, assembly.kept)


def _root_cause(error: BaseException) -> BaseException:
    """The user-code exception inside Ray's wrappers (RayTaskError keeps it as `.cause`)."""
    for _ in range(10):
        inner = getattr(error, "cause", None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error
