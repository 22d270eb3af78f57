"""The typed messages of indexing: what a video's decoder sends, what an encoder makes of it, how it ends.

One video's stream of messages is `Probed`, `FrameBatch`..., then `Finished` -- or `Failed` at any point. The
local engine reads them from a decoder process's queue (they pickle across spawn processes) and turns each
`FrameBatch` into `EncodedFrames` on its device; the Ray engine carries the same messages as Ray Data rows
(`to_row` / `from_row`), its encoder actors doing the same turn, and adds `Fatal` (the encoder cannot run at all).

Rows carry arrays as raw bytes with their shape and dtype, and every other field, in a small JSON `meta`
column: every message becomes a row with the same columns, so Ray Data never has to reconcile schemas or tensor
shapes between videos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Union

import numpy as np


@dataclass
class Probed:
    """The video opened: its probed facts (`VideoInfo.to_dict()`), sent before any frame."""

    info: dict[str, Any]


@dataclass
class FrameBatch:
    """Decoded frames, batch number `seq` of the video (batches are numbered from 0 in decoding order)."""

    seq: int
    frames: np.ndarray  # uint8 (B, H, W, 3)
    timestamps_s: np.ndarray  # f64 (B,)


@dataclass
class EncodedFrames:
    """A `FrameBatch` after the encoder: what the library stores for those frames."""

    seq: int
    embeddings: np.ndarray  # fp32 (B, D): CLIP image embeddings, searched by text (frame tokens are not stored)
    timestamps_s: np.ndarray  # f64 (B,)
    encode_s: float = 0.0


@dataclass
class Finished:
    """The decoder's last message: how many batches it sent, its warnings, and the signals it extracted."""

    batches: int
    decode_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)  # signals extracted (even when they found nothing)
    segments: list[dict] = field(default_factory=list)  # {"source", "text", "start_s", "end_s"}, by time


@dataclass
class Failed:
    """This video cannot be indexed; `error` is one line naming the file and the reason."""

    error: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class Fatal:
    """No video can be indexed (the Ray encoder cannot load its model); the run stops with this one line."""

    error: str


Message = Union[Probed, FrameBatch, EncodedFrames, Finished, Failed, Fatal]
MESSAGES: dict[str, type] = {cls.__name__: cls for cls in (Probed, FrameBatch, EncodedFrames, Finished, Failed,
                                                             Fatal)}
ARRAY_COLUMNS = ("frames", "timestamps_s", "embeddings")
ROW_COLUMNS = ("video_id", "kind", *ARRAY_COLUMNS, "meta")


def to_row(video_id: int, message: Message) -> dict[str, Any]:
    """A message as a Ray Data row of `ROW_COLUMNS`: arrays as bytes, the rest (and array shapes) as JSON."""
    row: dict[str, Any] = {"video_id": video_id, "kind": type(message).__name__, **{c: b"" for c in ARRAY_COLUMNS}}
    meta: dict[str, Any] = {}
    for name in (f.name for f in fields(message)):
        value = getattr(message, name)
        if name in ARRAY_COLUMNS:
            array = np.ascontiguousarray(value)
            row[name], meta[name] = array.tobytes(), [list(array.shape), array.dtype.str]
        else:
            meta[name] = value
    row["meta"] = json.dumps(meta)
    return row


def from_row(row: dict[str, Any]) -> tuple[int, Message]:
    """(video id, message) from a row made by `to_row`; arrays come back writable."""
    cls = MESSAGES[str(row["kind"])]
    meta = json.loads(row["meta"])
    values = {}
    for name in (f.name for f in fields(cls)):
        if name in ARRAY_COLUMNS:
            shape, dtype = meta[name]
            values[name] = np.frombuffer(row[name], dtype=dtype).reshape(shape).copy()
        else:
            values[name] = meta[name]
    return int(row["video_id"]), cls(**values)


def to_columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Rows as the column dict a Ray Data `map_batches` function returns."""
    return {name: [row[name] for row in rows] for name in ROW_COLUMNS}
