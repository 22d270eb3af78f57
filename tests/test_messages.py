"""The typed messages between decoders and index engines, and a video's assembly from them (no model needed)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from videomini.pipelines.messages import (
    EncodedFrames,
    Failed,
    Fatal,
    Finished,
    FrameBatch,
    Probed,
    from_row,
    to_columns,
    to_row,
)
from videomini.pipelines.video_commit import VideoAssembly


class Item(NamedTuple):  # the fields of a library plan item an assembly reads
    path: Path
    action: str = "new"
    fingerprint: str = "f"


def encoded(seq: int, n: int = 2) -> EncodedFrames:
    rng = np.random.default_rng(seq)
    return EncodedFrames(seq, rng.standard_normal((n, 3)).astype(np.float32), np.arange(n, dtype=np.float64) + 10 * seq,
                         encode_s=0.5)


MESSAGES = [
    Probed({"duration_s": 6.0, "fps": 5.0, "path": "/v/a.mp4"}),
    FrameBatch(3, np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3), np.array([0.0, 1.0])),
    encoded(1),
    Finished(2, 1.25, ["/v/a.mp4: file ends early"], ["ocr"], [{"source": "ocr", "text": "EXIT", "start_s": 1.0,
                                                                 "end_s": 2.0}]),
    Failed("/v/a.mp4: decoder crashed (killed by signal 11)", ["w"]),
    Fatal("/m: no such model"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_ray_row_and_a_process_boundary(message):
    video_id, back = from_row(to_row(7, message))
    assert video_id == 7 and type(back) is type(message)
    for name, value in vars(message).items():
        if isinstance(value, np.ndarray):
            got = getattr(back, name)
            assert got.dtype == value.dtype and got.flags.writeable
            np.testing.assert_array_equal(got, value)
        else:
            assert getattr(back, name) == value
    assert type(pickle.loads(pickle.dumps(message))) is type(message)  # spawn queues pickle them


def test_rows_of_every_kind_share_one_schema():
    columns = to_columns([to_row(1, message) for message in MESSAGES])
    assert {len(column) for column in columns.values()} == {len(MESSAGES)}
    assert {frozenset(to_row(1, message)) for message in MESSAGES} == {frozenset(columns)}


def test_assembly_is_the_same_whatever_order_the_messages_arrive_in():
    messages = [Probed({"duration_s": 6.0}), encoded(0), encoded(1, 3), encoded(2), Finished(3, 2.0, ["late"])]
    in_order = VideoAssembly(Item(Path("/v/a.mp4")), 1)
    shuffled = VideoAssembly(Item(Path("/v/a.mp4")), 1)
    for message in messages:
        in_order.add(message, fps=1.0)
    for message in [messages[3], messages[4], messages[1], messages[0]]:  # Ray rows, batch 1 still to come
        shuffled.add(message, fps=1.0)
        assert not shuffled.complete()
    shuffled.add(messages[1], fps=1.0)  # a retried task repeats a batch: harmless
    shuffled.add(messages[2], fps=1.0)
    assert in_order.complete() and shuffled.complete()
    a, b = in_order.result(visual=True), shuffled.result(visual=True)
    np.testing.assert_array_equal(a.timestamps_s, [0, 1, 10, 11, 12, 20, 21])
    for name in ("embeddings", "timestamps_s"):  # frame tokens are not kept: no reader (storage/shards.py)
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.warnings == b.warnings == ["/v/a.mp4: late"] and a.error is None and a.duration_s == 6.0


def test_assembly_reasons_for_a_video_that_yields_nothing():
    failed = VideoAssembly(Item(Path("/v/a.mp4")), 1)
    failed.add(Failed("/v/a.mp4: decoder hung (no frames for 120 s)"), fps=1.0)
    assert failed.complete() and failed.result(visual=True).error == "/v/a.mp4: decoder hung (no frames for 120 s)"
    empty = VideoAssembly(Item(Path("/v/a.mp4")), 1)
    empty.add(Finished(0), fps=1.0)
    assert empty.result(visual=True).error == "/v/a.mp4: no frames could be decoded"
    assert empty.result(visual=False).error == "/v/a.mp4: no signal could be extracted (see the warnings)"
    with pytest.raises(TypeError):
        empty.add(FrameBatch(0, np.zeros((1, 2, 2, 3), np.uint8), np.zeros(1)), fps=1.0)  # encode it first
