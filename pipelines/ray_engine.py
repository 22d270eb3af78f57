"""`index --engine ray`: the local engine's per-video work on Ray Data, so that a cluster can index one library.

    videos (path, video_id) ── flat_map: decode task (CPU) ──► a row per message (Probed, FrameBatch..., Finished)
        ── map_batches: EncoderActor (holds the model; one GPU each when the cluster has GPUs) ──► EncodedFrames rows
        ── this process (the driver): reassemble each video by batch number ──► commit_video (shard, catalog)

What runs where. Decode tasks call the local engine's `DecodeJob` (a spawned child process per video, reading
through a bounded queue), so a decoder that segfaults or hangs for `timeout_s` fails only its video, with the
reason, exactly as with `--engine local`; the Ray task itself never crashes on a bad file. Batch boundaries are
the decoder's (`batch_size` frames), and each actor runs the same `FrameEncoder.encode` on each batch, so the
tokens equal the local engine's. The driver is the library's only writer: it marks every video `running` before
the job starts, commits a video (shard made durable, then `done`) the moment its last batch arrives, and rebuilds
the FAISS index at the end (in `index_videos`). A driver killed mid-job leaves the library as the local engine
would: done videos stay done, the rest are resumed by the next run. Rows are the local engine's typed messages
(videomini.pipelines.messages) and each video's are gathered into the local engine's `VideoAssembly` before
`commit_video`, so both engines build the very same result (and failure messages). Speech and on-screen text
(`signals`) are extracted in the decode tasks, as in the local decoders; a signals-only run (no model) has
no encoder stage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videomini.config import Event
from videomini.errors import first_line
from videomini.pipelines.decoder import DecodeJob
from videomini.pipelines.index_run import Engine, IndexJob
from videomini.pipelines.messages import Failed, Fatal, FrameBatch, from_row, to_columns, to_row
from videomini.pipelines.video_commit import (
    NO_PROJECTION,
    IndexReport,
    IndexRunError,
    VideoAssembly,
    commit_video,
    encode_batch,
    kept_frames_for,
)

RAY_MISSING = "ray is not installed: pip install 'videomini[ray]'"
# Ray puts unix sockets at <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store (65 bytes after the
# temp dir at most), and a socket path has at most 107 bytes
TEMP_DIR_MAX = 107 - 65


# -- stage 1: decode tasks ----------------------------------------------------------------------------------------


def decode_video(video: dict, *, fps: float, batch_size: int, timeout_s: float, frames: bool,
                 decode: str = "exact", asr_model: str | None = None) -> Iterator[dict]:
    """Ray task: decode one video in an isolated child process (the local engine's DecodeJob) and yield its
    messages as rows. `frames` False (signals only): no batches."""
    import multiprocessing as mp

    video_id = int(video["video_id"])
    job = DecodeJob(mp.get_context("spawn"), Path(video["path"]), fps, batch_size, timeout_s,
                    signals=json.loads(video["signals"]), frames=frames, decode=decode, asr_model=asr_model)
    try:
        for message in job.messages():
            yield to_row(video_id, message)
    finally:
        job.close()


# -- stage 2: encoder actors --------------------------------------------------------------------------------------


class EncoderActor:
    """Ray actor: holds one model on its device and encodes each decoded batch exactly as the local engine does
    (`FrameEncoder.encode`); the other rows pass through."""

    def __init__(self, model_id: str, batch_size: int):
        import ray
        import torch

        from videomini.ask import VideoMini
        from videomini.loading import CheckpointError, load_model

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
        rows = []
        for i in range(len(batch["kind"])):
            row = {name: column[i] for name, column in batch.items()}
            if self.problem is not None:
                rows.append(to_row(int(row["video_id"]), Fatal(self.problem)))
            elif row["kind"] == FrameBatch.__name__:
                video_id, frames = from_row(row)
                rows.append(to_row(video_id, encode_batch(self.videomini.encoder, frames)))
            else:
                rows.append(row)
        return to_columns(rows)


# -- the driver ---------------------------------------------------------------------------------------------------


@dataclass
class RayEngine(Engine):
    """`--engine ray`: a running cluster at `address` (or $RAY_ADDRESS), else a local Ray on this machine's CPUs,
    started and shut down by each run. `encoders`: encoder actors (default: one per GPU; one on a CPU-only
    cluster, using half of a node's CPUs)."""

    address: str | None = None
    encoders: int | None = None

    def run(self, job: IndexJob) -> None:
        """Index the job's plan items on Ray with the model `job.model_id` (as recorded in the catalog; None: no
        vision model, signals only). The model object is not used here: the actors load their own. Results
        enter the library through `commit_video`, in this process only."""
        from videomini.loading import CheckpointError

        model_id = job.model_id
        load_id = model_id  # as the workers load it: a local folder by its absolute path (their cwd is not ours)
        if model_id is not None and Path(model_id).expanduser().exists():
            load_id = str(Path(model_id).expanduser().resolve())
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if load_id is not None:
            try:
                _check_projection(load_id, model_id)
            except CheckpointError:
                if address is None:
                    raise  # same machine, same files: the actors could not load it either
                # on a cluster the workers may have the model when this machine does not: the actors check it
        ray, started_here, temp_dir = _start_ray(address)
        try:
            _run(ray, job, load_id, self.encoders)
        finally:
            if started_here:
                ray.shutdown()
                shutil.rmtree(temp_dir, ignore_errors=True)


def _check_projection(load_id: str, model_id: str) -> None:
    """Fail before starting anything when the checkpoint's tower has no CLIP projection (read from its
    safetensors headers, without loading the model), with the local engine's message."""
    from videomini.loading import has_weights, read_config, resolve_checkpoint, resolve_vision_tower
    from videomini.model import LlavaMiniConfig

    folder = resolve_checkpoint(load_id)
    tower = resolve_vision_tower(LlavaMiniConfig.from_dict(read_config(folder)).mm_vision_tower, folder)
    if not has_weights(tower, "visual_projection."):
        raise IndexRunError(NO_PROJECTION.format(model_id=model_id))


def _start_ray(address: str | None) -> tuple[Any, bool, str | None]:
    """Connect to the cluster at `address`, reuse a Ray this process already started, or start a quiet local
    Ray whose files live in a fresh temp folder (under RAY_TMPDIR when set). Returns (ray, started, temp)."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without its data extra lacks pandas and friends)
    except ImportError:
        raise IndexRunError(RAY_MISSING) from None
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
        raise IndexRunError(f"cannot {what}: {first_line(e, with_type=True)}") from None
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
        raise IndexRunError(f"cannot reach the Ray cluster at {address} ({e.strerror or type(e).__name__}): "
                          "start one with `ray start --head`, or leave out --ray-address for a local Ray") from None


def short_temp_dir() -> str:
    """A fresh folder for a local Ray's session files: under RAY_TMPDIR (else the system's temp folder) when the
    socket paths fit there, else under /tmp."""
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    if len(os.path.join(base, "vmray-12345678")) > TEMP_DIR_MAX:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="vmray-", dir=base)


def _run(ray: Any, job: IndexJob, load_id: str | None, encoders: int | None) -> None:
    config = job.config
    driver = _Driver(job.library, job.model_id, config.fps, load_id is not None, job.text_embedder, job.report,
                     job.emit)
    inputs = [driver.start(item, list(config.signals)) for item in job.todo]
    with _quiet_ray_data():
        dataset = ray.data.from_items(inputs, override_num_blocks=len(inputs)).flat_map(
            decode_video, fn_kwargs={"fps": config.fps, "batch_size": config.batch_size,
                                     "timeout_s": config.timeout_s, "frames": load_id is not None,
                                     "decode": config.decode, "asr_model": config.asr_model}, num_cpus=1)
        if load_id is not None:
            dataset = dataset.map_batches(
                EncoderActor, fn_constructor_kwargs={"model_id": load_id, "batch_size": config.batch_size},
                batch_size=1, batch_format="numpy", **_encoder_resources(ray, encoders))
        rows = iter(dataset.iter_rows())
        try:
            while True:
                try:
                    row = next(rows, None)
                except Exception as e:  # Ray itself failed (a lost node, a bug): one line; details in Ray's logs
                    raise IndexRunError(f"the Ray job failed: {first_line(_root_cause(e), with_type=True)}") from None
                if row is None:
                    break
                driver.receive(row)
        finally:
            getattr(rows, "close", lambda: None)()  # stops the job on a cluster that outlives this run
    driver.finish()


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """No progress bars or execution banners from Ray Data, and no log lines: failures reach the caller as
    IndexRunError, not as log spam."""
    from ray.data import DataContext

    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.print_on_execution_start)
    context.enable_progress_bars, context.print_on_execution_start = False, False
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    data_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        data_logger.setLevel(saved_level)


@dataclass
class _Driver:
    """The library's only writer during a Ray job: marks videos running, gathers each one's rows (they arrive in
    any order) and commits it the moment its last row is in."""

    library: Any
    model_id: str | None
    fps: float
    visual: bool
    text_embedder: Any
    report: IndexReport
    emit: Event
    videos: dict[int, VideoAssembly] = field(default_factory=dict)
    announced: set[int] = field(default_factory=set)  # videos whose "video" event was emitted

    def start(self, item: Any, signals: list[str]) -> dict:
        """Mark one plan item running; returns its input row for the decode tasks."""
        kept = kept_frames_for(self.library, item, self.visual)  # before mark_running, which forgets the shard
        video_id = self.library.mark_running(item.path, item.fingerprint, model_id=self.model_id, fps=self.fps)
        self.videos[video_id] = VideoAssembly(item, video_id, kept)
        video_signals = sorted(set(signals) | set(getattr(item, "signals", ())))
        return {"path": str(item.path), "video_id": video_id, "signals": json.dumps(video_signals)}

    def receive(self, row: dict) -> None:
        """Take one row; commit its video when that row completed it. Repeated rows (a retried Ray task)
        overwrite their own batch and are otherwise harmless."""
        video_id, message = from_row(row)
        if isinstance(message, Fatal):  # the encoder cannot run at all: stop; the videos left stay `running`
            raise IndexRunError(message.error)
        assembly = self.videos.get(video_id)
        if assembly is None:  # already committed
            return
        if video_id not in self.announced:
            self.announced.add(video_id)
            self.emit("video", {"path": assembly.path, "action": assembly.item.action})
        assembly.add(message, self.fps, self.emit)
        if assembly.complete():
            self._commit(assembly)

    def finish(self) -> None:
        """A video whose rows never all came (should not happen) fails with that reason."""
        for assembly in list(self.videos.values()):
            if assembly.error is None:
                assembly.add(Failed(f"{assembly.path}: the Ray job returned no result for this file"), self.fps)
            self._commit(assembly)

    def _commit(self, assembly: VideoAssembly) -> None:
        del self.videos[assembly.video_id]
        commit_video(self.library, assembly, assembly.result(self.visual), model_id=self.model_id, fps=self.fps,
                     report=self.report, emit=self.emit, text_embedder=self.text_embedder)


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


def _root_cause(error: BaseException) -> BaseException:
    """The user-code exception inside Ray's wrappers (RayTaskError keeps it as `.cause`)."""
    for _ in range(10):
        inner = getattr(error, "cause", None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error
