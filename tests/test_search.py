"""`search` and `ask --library` over speech and on-screen text stored in a library (real offline models:
Whisper tiny.en, RapidOCR, MiniLM), and the rank fusion that joins them with frame hits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from narrated import Caption, make_narrated_video
from videomini.storage import LibraryStore
from videomini.pipelines.index import index_videos
from videomini.pipelines.search import RRF_K, fuse_rankings, search_library

TOLERANCE_S = 2.0


def entry(video: str, start_s: float, end_s: float, similarity: float, **extra) -> dict:
    return {"video": video, "start_s": start_s, "end_s": end_s, "best_s": start_s, "similarity": similarity, **extra}


# ----------------------------------------------------------------------------------------------- rank fusion


def test_fusion_joins_a_frame_moment_and_a_text_segment_that_overlap():
    ranked = {"visual": [entry("a.mp4", 10, 12, 0.3), entry("b.mp4", 0, 2, 0.29)],
              "text": [entry("a.mp4", 11, 14, 0.8, text="hello", signal="speech"),
                       entry("b.mp4", 40, 41, 0.5, text="EXIT", signal="ocr")]}
    fused = fuse_rankings(ranked, gap_s=1.5)
    assert [(m.video, m.start_s, m.end_s) for m in fused] == [("a.mp4", 10, 14), ("b.mp4", 40, 41), ("b.mp4", 0, 2)]
    top = fused[0]
    assert top.score == pytest.approx(2 / (RRF_K + 1), abs=1e-6) and top.best_s == 10  # the frame is the anchor
    assert {m["signal"]: m.get("text") for m in top.matches} == {"visual": None, "speech": "hello"}
    # rank 2 in both lists, but 38 s apart in b.mp4: two moments, equal scores ordered by their own similarity
    assert fused[1].signals == ["ocr"] and fused[2].signals == ["visual"]


def test_fusion_never_merges_entries_of_one_list_and_respects_the_gap():
    ranked = {"text": [entry("a.mp4", 5, 6, 0.9, text="x", signal="speech"),
                       entry("a.mp4", 6.5, 7, 0.8, text="y", signal="speech")],
              "visual": [entry("a.mp4", 9, 10, 0.2)]}
    fused = fuse_rankings(ranked, gap_s=1.0)
    assert len(fused) == 3  # two segments stay apart; the frame moment is 2 s after the nearest: too far
    fused = fuse_rankings(ranked, gap_s=2.5)  # now the frame moment reaches the second segment (6.5-7 s) only
    assert [(m.signals, m.start_s, m.end_s) for m in fused] == [(["visual", "speech"], 6.5, 10), (["speech"], 5, 6)]


# ----------------------------------------------------------------------------------------------- real signals


@pytest.fixture(scope="module")
def silent(tmp_path_factory):
    """No audio track, one caption: speech finds nothing (not an error), on-screen text finds the caption."""
    return make_narrated_video(tmp_path_factory.mktemp("media") / "silent.mp4", duration_s=4.0, lines=[],
                               captions=[Caption(1.0, 3.0, "LOADING DOCK")], with_audio=False)


@pytest.fixture(scope="module")
def signals_library(tmp_path_factory, narrated, silent):
    """Indexed with no vision model at all (--no-visual), as on a machine without the LLaVA-Mini weights."""
    library = tmp_path_factory.mktemp("lib") / "signals"
    report = index_videos(library, [narrated.path, silent.path], visual=False, signals=("speech", "ocr"))
    assert sorted(Path(p).name for p in report.indexed) == ["narrated.mp4", "silent.mp4"], report.failed
    return library


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videomini.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "VIDEOMINI_MODEL": "/nonexistent/model"}, timeout=600)


def test_signals_only_library_stores_segments_and_no_frames(signals_library, narrated, silent):
    with LibraryStore(signals_library) as lib:
        stats = lib.stats()
        assert stats["status"]["done"] == 2 and stats["frames"] == 0
        assert stats["index"]["n_vectors"] == 0 and stats["index"]["text_n_vectors"] >= 5
        video = lib.video(narrated.path)
        assert video["signals"] == "ocr,speech" and video["model_id"] is None
        segments = lib.segments(video["id"])
        assert {s["source"] for s in segments} == {"speech", "ocr"}
        quiet = lib.segments(lib.video(silent.path)["id"])
        assert lib.video(silent.path)["signals"] == "ocr,speech"
        assert [(s["source"], s["text"]) for s in quiet] == [("ocr", "LOADING DOCK")]


@pytest.mark.parametrize("line", range(3))
def test_search_for_a_paraphrase_finds_the_spoken_moment(signals_library, narrated, line):
    spoken = narrated.lines[line]
    best = search_library(signals_library, spoken.paraphrase, top_k=3)[0]
    assert Path(best.video).name == "narrated.mp4"
    assert abs(best.start_s - spoken.start_s) <= TOLERANCE_S, (spoken, best)
    assert best.matches[0]["signal"] == "speech"


@pytest.mark.parametrize("query, caption", [("the shop never closes, day or night", "OPEN 24 HOURS"),
                                             ("the loading bay", "LOADING DOCK"),
                                             ("way out, no entry", "EXIT ONLY")])
def test_search_finds_on_screen_text(signals_library, narrated, silent, query, caption):
    truth = {c.text: (path, c) for path, v in ((narrated.path, narrated), (silent.path, silent)) for c in v.captions}
    path, shown = truth[caption]
    best = search_library(signals_library, query, top_k=3)[0]
    assert Path(best.video) == Path(path).resolve() and abs(best.start_s - shown.start_s) <= TOLERANCE_S
    assert best.matches[0]["signal"] == "ocr" and best.matches[0]["text"] == caption


def test_search_cli_json_shows_the_matched_signal_and_text(signals_library, narrated):
    spoken = narrated.lines[2]
    out = run_cli("search", spoken.paraphrase, "--library", str(signals_library), "--json", "--top-k", "2")
    assert out.returncode == 0, out.stderr
    best = json.loads(out.stdout)[0]
    assert best["matches"][0]["signal"] == "speech" and "London" in best["matches"][0]["text"]
    assert abs(best["start_s"] - spoken.start_s) <= TOLERANCE_S


def test_ask_library_without_a_model_quotes_the_right_moment(signals_library, narrated):
    spoken = narrated.lines[1]
    out = run_cli("ask", "--library", str(signals_library), "What must I do for the kitten?", "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["generated_by"] == "signals" and answer["text"].startswith("[evidence only")
    top = answer["evidence"][0]
    assert Path(top["video"]).name == "narrated.mp4" and abs(top["time_s"] - spoken.start_s) <= TOLERANCE_S
    assert "feed the cat" in answer["text"].lower()


# ----------------------------------------------------------------------------------------------- frames + signals


def test_frames_and_signals_fuse_and_a_signals_rerun_keeps_the_frames(tmp_path, checkpoint, narrated):
    from videomini.pipelines.ask import VideoMini
    from videomini.ask import ask_library

    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    library = tmp_path / "lib"
    first = index_videos(library, [narrated.path], vm)
    assert first.indexed and first.segments == 0
    with LibraryStore(library) as lib:
        frames_before = lib.load_frames(1)
    # the same file with --no-visual --signals: only the signals are new, the stored frames are kept as they were
    second = index_videos(library, [narrated.path], visual=False, signals=("speech",))
    assert second.indexed and second.segments >= 3
    with LibraryStore(library) as lib:
        row = lib.video(narrated.path)
        assert row["signals"] == "speech" and row["model_id"] == str(checkpoint)
        frames_after = lib.load_frames(row["id"])
        assert np.array_equal(frames_before.frame_tokens, frames_after.frame_tokens)
        assert np.array_equal(frames_before.timestamps_s, frames_after.timestamps_s)
    # unchanged now, with or without naming the signal again
    assert index_videos(library, [narrated.path], vm, signals=("speech",)).indexed == []

    spoken = narrated.lines[2]
    results = search_library(library, spoken.paraphrase, top_k=5, text_tower=vm.text_tower)
    signals = {m["signal"] for r in results for m in r.matches}
    assert signals == {"visual", "speech"}
    speech_hit = next(r for r in results if "speech" in r.signals)
    assert abs(speech_hit.start_s - spoken.start_s) <= TOLERANCE_S or any(
        abs(m["start_s"] - spoken.start_s) <= TOLERANCE_S for m in speech_hit.matches)

    answer = ask_library(vm, library, spoken.paraphrase, top_k=3, max_new_tokens=2)
    assert answer.generated_by == "llava-mini" and answer.frames_used > 0
    assert answer.context and "London" in answer.context  # stored speech quoted into the prompt
