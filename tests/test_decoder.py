"""The decoder process (videomini.pipelines.decoder): a video's messages in order, and a crash or a hang that
fails that file only, with one line naming it and the reason."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from videomini.pipelines.decoder import DecodeJob, decode_messages
from videomini.pipelines.messages import Failed, Finished, FrameBatch, Probed

from synth import make_numbered_video, read_frame_number


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> Path:
    return make_numbered_video(tmp_path_factory.mktemp("decoder") / "numbers.mp4", seconds=5, fps=5)


def test_messages_are_probe_batches_then_finished(numbered):
    messages = list(decode_messages(str(numbered), fps=1.0, batch_size=2))
    assert isinstance(messages[0], Probed) and messages[0].info["duration_s"] == pytest.approx(5.0, abs=0.3)
    batches = [m for m in messages if isinstance(m, FrameBatch)]
    assert [b.seq for b in batches] == [0, 1, 2] and [len(b.frames) for b in batches] == [2, 2, 1]
    np.testing.assert_allclose(np.concatenate([b.timestamps_s for b in batches]), [0, 1, 2, 3, 4], atol=1e-6)
    assert isinstance(messages[-1], Finished) and messages[-1].batches == 3


def test_fast_decoding_sends_the_times_of_the_frames_it_used(tmp_path):
    """`index --decode fast`: the decoder skips frames nobody samples; each batch carries the used frames' times."""
    video = make_numbered_video(tmp_path / "bframes.mp4", seconds=8, fps=10, gop=40)
    messages = list(decode_messages(str(video), fps=1.0, batch_size=4, decode="fast"))
    batches = [m for m in messages if isinstance(m, FrameBatch)]
    frames = np.concatenate([b.frames for b in batches])
    times = np.concatenate([b.timestamps_s for b in batches])
    assert len(times) == 8 and isinstance(messages[-1], Finished)
    np.testing.assert_allclose(times, [read_frame_number(f) / 10 for f in frames], atol=1e-6)
    assert np.all(times <= np.arange(8) + 1e-6)


def test_without_frames_no_batches_are_sent(numbered):
    messages = list(decode_messages(str(numbered), fps=1.0, batch_size=2, frames=False))
    assert [type(m) for m in messages] == [Probed, Finished] and messages[-1].batches == 0


def test_a_bad_file_is_one_failed_message(tmp_path):
    bad = tmp_path / "not a video.mp4"
    bad.write_text("this is not a video\n")
    messages = list(decode_messages(str(bad), fps=1.0, batch_size=2))
    assert len(messages) == 1 and isinstance(messages[0], Failed)
    assert str(bad) in messages[0].error and "\n" not in messages[0].error


def test_the_process_sends_what_decoding_in_process_gives(numbered):
    job = DecodeJob(mp.get_context("spawn"), numbered, fps=1.0, batch_size=2, timeout_s=60)
    try:
        got = list(job.messages())
    finally:
        job.close()
    want = list(decode_messages(str(numbered), fps=1.0, batch_size=2))
    assert [type(m) for m in got] == [type(m) for m in want]
    for mine, theirs in zip(got, want):
        if isinstance(mine, FrameBatch):
            np.testing.assert_array_equal(mine.frames, theirs.frames)
            np.testing.assert_array_equal(mine.timestamps_s, theirs.timestamps_s)


def test_a_killed_decoder_fails_its_file_in_one_line(numbered):
    job = DecodeJob(mp.get_context("spawn"), numbered, fps=1.0, batch_size=1, timeout_s=60)
    try:
        messages = job.messages()
        assert isinstance(next(messages), Probed)
        os.kill(job.process.pid, signal.SIGKILL)  # as PyAV segfaulting on a damaged stream would
        last = list(messages)[-1]
    finally:
        job.close()
    assert isinstance(last, Failed) and last.error == f"{numbered}: decoder crashed (killed by signal 9)"


def test_a_hung_decoder_fails_after_its_timeout(numbered):
    job = DecodeJob(mp.get_context("spawn"), numbered, fps=1.0, batch_size=1, timeout_s=60)
    try:
        messages = job.messages()
        assert isinstance(next(messages), Probed)  # started (a loaded machine may take seconds to spawn it)
        job.timeout_s = 1
        os.kill(job.process.pid, signal.SIGSTOP)  # alive but silent, as a decoder stuck in a read
        last = list(messages)[-1]
    finally:
        os.kill(job.process.pid, signal.SIGCONT)
        job.close()
    assert isinstance(last, Failed) and last.error == f"{numbered}: decoder hung (no frames for 1 s)"
