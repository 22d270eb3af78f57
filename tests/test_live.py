"""The live mechanisms on their own: the two clocks, the backpressure buffer, the rolling memory's bounds, the
debounced standing question, source parsing."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from videomini.live.alerts import StandingQuestion, answer_word_ids
from videomini.live.intake import FrameBuffer
from videomini.live.memory import RollingMemory
from videomini.live.sources import SourceError, parse_source
from videomini.live.timeline import Timeline, parse_duration
from videomini.timerefs import parse_time_references

START = datetime(2026, 12, 6, 13, 59, 57, tzinfo=timezone.utc)


def test_wall_clock_time_of_day_becomes_stream_time():
    timeline = Timeline(START)
    # 14:05 UTC is 5 min 3 s into a stream that started at 13:59:57
    resolved = timeline.resolve_question("what was on screen at 14:05?", latest_s=900.0)
    assert resolved == "what was on screen at 5:03?"
    assert parse_time_references(resolved, 900.0)[0][0] < 303 < parse_time_references(resolved, 900.0)[0][1]
    assert timeline.resolve_question("at 2:05 pm?", 900.0) == "at 5:03?"  # the same time on a 12-hour clock
    assert timeline.wall_iso(63.5) == "2026-12-06T14:01:00.500Z"


def test_stream_clock_and_relative_references_stay():
    timeline = Timeline(START)
    assert timeline.resolve_question("what happened at 2:30?", latest_s=600.0) == "what happened at 2:30?"
    assert parse_time_references(timeline.resolve_question("in the last 5 minutes?", 900.0), 900.0) == [(600.0, 900.0)]
    windows = parse_time_references(timeline.resolve_question("anything since the start?", 900.0), 900.0)
    assert windows == [(0.0, 900.0)]


def test_parse_duration():
    assert parse_duration("90") == 90 and parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    with pytest.raises(ValueError, match="--retain: 'soon' is not a duration"):
        parse_duration("soon", "--retain")


def test_live_buffer_never_blocks_and_drops_evenly():
    buffer: FrameBuffer[int] = FrameBuffer(8, drop=True)
    for i in range(64):
        buffer.put(i)  # no consumer: must not block
    kept = buffer.take(100, timeout_s=0)
    assert len(kept) <= 8 and buffer.dropped == 64 - len(kept)
    gaps = np.diff(kept)
    assert gaps.max() <= 2 * gaps.min() + 1, kept  # spread over the whole run, not only the newest frames
    assert kept[0] < 16 and kept[-1] > 48


def test_file_buffer_waits_instead_of_dropping():
    buffer: FrameBuffer[int] = FrameBuffer(2, drop=False)
    produced = threading.Thread(target=lambda: [buffer.put(i) for i in range(20)] and buffer.close())
    produced.start()
    got = []
    while not buffer.closed_and_empty:
        got += buffer.take(3, timeout_s=5)
    produced.join(5)
    assert got == list(range(20)) and buffer.dropped == 0


def _frames(n, value=0):
    return np.full((n, 32, 32, 3), value, dtype=np.uint8)


def test_rolling_memory_window_archive_and_retention(tmp_path):
    memory = RollingMemory(tmp_path / "archive", window_frames=4, retain_s=30.0, chunk_s=10.0)
    for start in range(0, 100, 5):
        times = np.arange(start, start + 5, dtype=np.float64)
        tokens = torch.arange(5 * 2 * 3, dtype=torch.bfloat16).reshape(5, 2, 3) + start
        embeddings = torch.randn(5, 8)
        memory.append(tokens, embeddings, times, _frames(5, start))
    seqs, times = memory.snapshot()
    assert memory.recent_count == 4
    assert times[-1] == 99 and times[0] >= 99 - 30 - 10  # whole chunks past the retention are gone
    assert len(list((tmp_path / "archive").iterdir())) == 4 and memory.dropped_frames == 60
    tokens, frames = memory.load(seqs[[0, -1]])  # the oldest from the memory-mapped archive, the newest from RAM
    assert tokens.dtype == torch.bfloat16 and tokens[0, 0, 0] == times[0] - times[0] % 5
    assert abs(int(frames[0].mean()) - int(times[0] - times[0] % 5)) <= 2  # JPEG keeps a flat frame's value
    relevance = memory.relevance(torch.randn(8), seqs)
    assert relevance.shape == (len(seqs),) and np.isfinite(relevance).all()
    with pytest.raises(KeyError):
        memory.load(np.array([0]))
    memory.close()
    assert not (tmp_path / "archive").exists()


def test_standing_question_changes_once_per_debounced_change():
    standing = StandingQuestion("Is the door open?", debounce=2)
    answers = [0.2, 0.9, 0.2, 0.9, 0.9, 0.9, 0.1, 0.1, 0.2]
    changes = [standing.update(p) for p in answers]
    assert changes == [False, False, False, False, True, False, False, True, False]
    assert standing.answer is False and standing.changes == 2


def test_answer_words_have_distinct_first_tokens(golden_model):
    _, tokenizer, _ = golden_model
    yes, no = answer_word_ids(tokenizer)
    assert yes and no and not set(yes) & set(no)


def test_parse_source(tmp_path):
    assert parse_source("udp://127.0.0.1:5000").kind == "network"
    assert parse_source("-").kind == "stdin"
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    spec = parse_source(str(video))
    assert spec.kind == "file" and not spec.live and parse_source(str(video), realtime=True).live
    with pytest.raises(SourceError, match="no such file"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="unsupported source scheme 'gopher'"):
        parse_source("gopher://example")


def test_speech_chunks_end_in_a_pause():
    from videomini.live.signals import WHISPER_RATE, quietest_cut

    rate = WHISPER_RATE
    loud = np.sin(np.arange(rate) * 0.3).astype(np.float32)  # 1 s of tone
    audio = np.concatenate([loud, loud, loud, np.zeros(rate // 5, np.float32), loud, loud])  # pause at 3.0-3.2 s
    cut = quietest_cut(audio)
    assert 3.0 * rate <= cut <= 3.2 * rate
