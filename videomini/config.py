"""What asking and indexing are given: `AskConfig`, `IndexConfig` (the server's `ServeConfig` is the pattern),
and the contract of an index engine. Each default is defined here once; the CLI, the Python API, the server
and the benchmarks build a config (or pass a few fields as keyword overrides) instead of repeating them.

Each config checks its own fields when made, so a bad value fails with one line naming the field before any
model loads or any file is opened.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from videomini.errors import InvalidInput
from videomini.limits import FPS_MAX, FPS_MIN

FPS = 1.0  # frames sampled per second of video: the paper's rate for long videos
MAX_NEW_TOKENS = 256  # tokens an answer may generate
TOP_K = 10  # moments retrieved from a library (search, ask --library)
LIBRARY_MAX_FRAMES = 64  # frames given to the LLM over all retrieved moments of a library
TOP_K_EVIDENCE = 5  # evidence moments cited for one video's answer
BATCH_SIZE = 16  # frames per CLIP forward (decoded, encoded and sent between processes in batches of this size)
FPS_RANGE = f"must be within {FPS_MIN:g} to {FPS_MAX:g} (videomini/limits.py)"  # NaN and inf fail it too
FUSIONS = ("all", "selected")
SAMPLINGS = ("fps", "reference")  # frames on screen at k/fps (default) | the official evaluation's segment centres
DECODES = ("exact", "fast")  # every frame decoded | frames nobody samples skipped (PyAV; videomini.video.DECODE_MODES)
SIGNALS = ("speech", "ocr")  # what an index run or a prompt can quote beside the frames

CLI_FLAGS = {"timeout_s": "timeout", "wait_s": "wait", "model_id": "model"}  # fields whose option is named otherwise
Event = Callable[[str, dict], None]  # progress of an index run: (kind, details)
Config = TypeVar("Config", "AskConfig", "IndexConfig")


class ConfigError(InvalidInput):
    """A config field out of its range: one line naming the field, its value and the reason (exit 1, HTTP 400)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def for_cli(self, flags: dict[str, str] | None = None) -> str:
        """The message naming the command-line option (`--max-new-tokens=0: ...`) instead of the field;
        `flags` maps fields whose option is named otherwise (timeout_s -> timeout)."""
        message = str(self)
        if self.field is None or not message.startswith(f"{self.field}="):
            return message
        flag = (flags or {}).get(self.field, self.field.replace("_", "-"))
        return f"--{flag}{message[len(self.field):]}"

    def cli_message(self) -> str:
        return self.for_cli(CLI_FLAGS)


def _check(ok: bool, field: str, value: Any, reason: str) -> None:
    if not ok:
        raise ConfigError(f"{field}={value!r}: {reason}", field)


def _check_signals(signals: Iterable[str]) -> tuple[str, ...]:
    names = tuple(sorted(set(signals)))
    unknown = [name for name in names if name not in SIGNALS]
    _check(not unknown, "signals", unknown[0] if unknown else None, f"unknown signal, choose from {', '.join(SIGNALS)}")
    return names


@dataclass(frozen=True)
class AskConfig:
    """How a question is answered: which model, which frames, how long an answer."""

    model_id: str | None = None  # checkpoint folder or hub id; None: the library's model, else VIDEOMINI_MODEL
    device: str | None = None  # cpu, cuda, cuda:1; None: cuda when present
    dtype: str | None = None  # bf16, fp16, fp32; None: bf16 on CUDA, fp32 on the CPU
    quantize: str | None = None  # the LLM's weights: int8 or nf4
    kv_cache: str | None = None  # the KV cache: int8 or int4 (transformers' quantized cache)
    fps: float = FPS
    sampling: str = "fps"  # fps: the frame on screen at k/fps; reference: the official evaluation's frames
    decode: str = "exact"  # exact: every frame decoded; fast: frames nobody samples skipped (times reported)
    max_frames: int | None = None  # cap on frames given to the LLM; None: the planner's budget (a library: 64)
    max_new_tokens: int = MAX_NEW_TOKENS
    do_sample: bool = False
    fusion: str = "all"  # all: the question fused with every sampled frame; selected: with the chosen ones
    top_k: int = TOP_K  # a library: moments retrieved
    top_k_evidence: int = TOP_K_EVIDENCE
    signals: tuple[str, ...] = ()  # speech / ocr quoted into the prompt as timestamped lines
    fallback: bool = True  # no loadable model: answer from speech and on-screen text (labelled) instead

    def __post_init__(self) -> None:
        _check(FPS_MIN <= self.fps <= FPS_MAX, "fps", self.fps, FPS_RANGE)
        _check(self.sampling in SAMPLINGS, "sampling", self.sampling, f"use {' or '.join(SAMPLINGS)}")
        _check(self.decode in DECODES, "decode", self.decode, f"use {' or '.join(DECODES)}")
        _check(self.fusion in FUSIONS, "fusion", self.fusion, f"use {' or '.join(FUSIONS)}")
        _check(self.max_frames is None or self.max_frames >= 1, "max_frames", self.max_frames, "must be >= 1")
        _check(self.max_new_tokens >= 1, "max_new_tokens", self.max_new_tokens, "must be >= 1")
        _check(self.top_k >= 1, "top_k", self.top_k, "must be >= 1")
        _check(self.top_k_evidence >= 1, "top_k_evidence", self.top_k_evidence, "must be >= 1")
        object.__setattr__(self, "signals", _check_signals(self.signals))

    @property
    def library_max_frames(self) -> int:
        """Frames over all of a library's retrieved moments."""
        return self.max_frames or LIBRARY_MAX_FRAMES


@dataclass(frozen=True)
class IndexConfig:
    """What an index run stores and how it treats each file; the engine (where the work runs) is separate."""

    model_id: str | None = None  # None: the model given, else VIDEOMINI_MODEL, else the reference checkpoint
    device: str | None = None
    dtype: str | None = None
    recursive: bool = False  # scan folders recursively
    fps: float = FPS
    batch_size: int = BATCH_SIZE
    timeout_s: float = 120.0  # seconds without a decoded frame before a file fails
    wait_s: float = 0.0  # seconds to wait for another indexer to finish
    retry_failed: bool = False  # try again the files that failed before
    decode: str = "exact"  # exact: every frame decoded; fast: frames nobody samples skipped (times reported)
    signals: tuple[str, ...] = ()  # also store speech / on-screen text, searchable beside the frames
    visual: bool = True  # False: no vision model, store the signals only
    text_model: str | None = None  # sentence-transformers folder or hub id (None: the bundled all-MiniLM-L6-v2)
    asr_model: str | None = None  # Whisper size or CTranslate2 folder (None: the bundled tiny.en)

    def __post_init__(self) -> None:
        _check(FPS_MIN <= self.fps <= FPS_MAX, "fps", self.fps, FPS_RANGE)
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check(self.timeout_s > 0, "timeout_s", self.timeout_s, "must be positive")
        _check(self.wait_s >= 0, "wait_s", self.wait_s, "must be >= 0")
        _check(self.decode in DECODES, "decode", self.decode, f"use {' or '.join(DECODES)}")
        object.__setattr__(self, "signals", _check_signals(self.signals))
        object.__setattr__(self, "model_id", absolute_model_id(self.model_id))  # recorded in the catalog
        if not (self.visual or self.signals):
            raise ConfigError("nothing to index: without the vision model (--no-visual) name --signals speech,ocr",
                              "visual")


def absolute_model_id(model_id: str | None) -> str | None:
    """A local checkpoint named relative to the working folder, made absolute (a library records the model it
    was indexed with, and a later search may run from another folder); a hub id (nothing on disk) as given."""
    if model_id is None:
        return None
    path = Path(model_id).expanduser()
    return str(path.resolve()) if path.exists() else model_id


def configured(config: Config | None, default: type[Config], overrides: dict[str, Any]) -> Config:
    """`config` (or the defaults) with the keyword `overrides` applied; an unknown name is a one-line error."""
    base = config if config is not None else default()
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(base)})
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a field of {type(base).__name__}", unknown[0])
    return dataclasses.replace(base, **overrides) if overrides else base


class IndexEngine(Protocol):
    """Where an index run's per-video work runs (this machine, a Ray cluster, a third-party engine). videomini's
    engines live in `videomini.pipelines` (LocalEngine, RayEngine); `Library.index(engine=...)` takes one."""

    def index(self, library_dir: str | os.PathLike | Path, paths: Iterable[str | os.PathLike], model: Any,
              config: IndexConfig, on_event: Event | None = None) -> Any:
        """Index `paths` into the library with `model` (a VideoMini, a LazyModel, or None: load config.model_id
        where the engine needs it); returns the run's report."""
        ...
