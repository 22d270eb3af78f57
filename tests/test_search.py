"""`search` and `ask --library` over speech and on-screen text stored in a library (real offline models:
Whisper tiny.en, RapidOCR, MiniLM), and the rank fusion that joins them with frame hits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videomini.pipelines import index_videos
from videomini.search import (
    CONFIDENT_EVIDENCE,
    FALSE_CONFIDENT_RATE,
    GENERIC_QUERIES,
    MAX_MOMENT_S,
    MIN_SCALE,
    Background,
    Candidate,
    Hubness,
    QueryBank,
    fuse,
    measured_background,
    relevance,
    search_library,
    visual_candidates,
)
from videomini.storage import LibraryStore

from narrated import Caption, make_narrated_video

TOLERANCE_S = 2.0
NOISE = Background(center=0.0, scale=0.1, n_total=100)  # noise ceiling sqrt(2 ln 100) = 3.03 spreads


def hit(video: str, start_s: float, end_s: float, similarity: float, signal: str, text: str | None = None,
        best_s: float | None = None) -> Candidate:
    return Candidate(video, start_s, end_s, start_s if best_s is None else best_s, similarity, signal, text)


def fused(lists: dict[str, list[Candidate]], gap_s: float = 1.5) -> list:
    return fuse(lists, {signal: NOISE for signal in lists}, gap_s=gap_s)


# ----------------------------------------------------------------------------------------------- fusion


def test_calibration_gives_evidence_only_above_what_noise_reaches():
    sims = np.random.default_rng(0).normal(0.2, 0.05, 1000)
    background = Background.of(np.concatenate([sims, [0.9, 0.95]]), n_total=1002)  # true hits do not move it
    assert background.center == pytest.approx(0.2, abs=0.01) and background.scale == pytest.approx(0.05, abs=0.01)
    assert background.evidence(sims.max()) == 0.0  # the best of pure noise is no evidence
    assert background.evidence(0.9) > 5.0
    assert Background.of([0.5, 0.5, 0.5]).scale == MIN_SCALE  # identical values are no scale


def test_a_strong_hit_of_one_signal_beats_a_weak_coincidence_of_two():
    ranked = fused({"speech": [hit("a.mp4", 20, 24, 0.75, "speech", "the train leaves at noon"),
                               hit("b.mp4", 5, 8, 0.34, "speech", "a weak one")],
                    "ocr": [hit("b.mp4", 6, 9, 0.34, "ocr", "SALE")]})
    assert [(Path(m.video).name, m.signals) for m in ranked] == [("a.mp4", ["speech"]), ("b.mp4", ["speech", "ocr"])]
    assert ranked[0].score > ranked[1].score > 0 and ranked[0].confident and not ranked[1].confident


def test_two_strong_signals_that_agree_rank_above_either_alone():
    ranked = fused({"speech": [hit("a.mp4", 10, 13, 0.7, "speech", "said"), hit("b.mp4", 40, 43, 0.72, "speech", "x")],
                    "ocr": [hit("a.mp4", 11, 15, 0.65, "ocr", "shown"), hit("c.mp4", 2, 5, 0.75, "ocr", "y")]})
    top = ranked[0]
    assert Path(top.video).name == "a.mp4" and sorted(top.signals) == ["ocr", "speech"]
    assert top.score == pytest.approx(sum(m["evidence"] for m in top.matches), abs=1e-3)
    assert (top.start_s, top.end_s) == (10, 15) and top.best_s in (10, 11)
    assert {Path(m.video).name for m in ranked[1:]} == {"b.mp4", "c.mp4"}


def test_an_uninformative_list_does_not_reorder_the_others():
    speech = [hit("a.mp4", 30, 33, 0.8, "speech", "one"), hit("b.mp4", 10, 12, 0.6, "speech", "two"),
              hit("c.mp4", 50, 52, 0.5, "speech", "three")]
    # frames at the background: the best of them no higher than pure noise reaches, one beside each weaker text hit
    visual = [hit("c.mp4", 50, 51, 0.30, "visual"), hit("b.mp4", 11, 12, 0.29, "visual"),
              hit("d.mp4", 0, 1, 0.28, "visual")]
    alone = [(m.video, m.start_s, m.end_s, m.score) for m in fused({"speech": speech})]
    with_noise = fused({"speech": speech, "visual": visual})
    assert [(m.video, m.start_s, m.end_s, m.score) for m in with_noise if "speech" in m.signals] == alone
    assert [m.video for m in with_noise][:3] == ["a.mp4", "b.mp4", "c.mp4"]
    assert all(m.score == 0 for m in with_noise if m.signals == ["visual"])


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_hubness_takes_from_a_text_that_lies_near_many_others_not_from_a_distinct_one():
    rng = np.random.default_rng(0)
    hub_direction = unit(rng.normal(size=(1, 64)))[0]
    crowd = unit(hub_direction + 0.6 * unit(rng.normal(size=(30, 64))))  # many texts around one point ("SALE" ...)
    spread = unit(rng.normal(size=(200, 64)))  # the rest of the index, unrelated to each other
    hubness = Hubness.of_sample(np.concatenate([crowd, spread]))
    r = hubness.of(np.stack([crowd[0], spread[0]]))
    assert r[0] > r[1] + 0.3  # the crowded text has close neighbours, the distinct one none
    # the same cosine to the query counts for less on the hub: the distinct text ranks first after correction
    corrected = Hubness.corrected([0.5, 0.5], r)
    assert corrected[1] > corrected[0]
    assert hubness.sample_r.shape == (230,) and np.all(hubness.sample_r < 1.0)  # no text counts itself


def test_hubness_shifts_every_text_alike_when_none_is_a_hub():
    vectors = np.eye(8, dtype=np.float32)  # orthogonal texts: every neighbour at cosine 0
    hubness = Hubness.of_sample(vectors)
    assert np.allclose(hubness.of(vectors), 0.0)
    cosines = np.linspace(0.1, 0.8, 8)
    assert np.argsort(Hubness.corrected(cosines, hubness.of(vectors))).tolist() == np.argsort(cosines).tolist()


def test_a_moment_spans_the_hits_with_evidence_and_never_exceeds_the_cap():
    ranked = fused({"speech": [hit("a.mp4", 15, 17.5, 0.8, "speech", "London")],
                    "visual": [hit("a.mp4", 0, 19, 0.25, "visual", best_s=3)]})  # a whole-video frame run: noise
    assert [(m.start_s, m.end_s, m.best_s) for m in ranked] == [(15, 17.5, 15)]
    long = fused({"ocr": [hit("a.mp4", 100, 160, 0.9, "ocr", "a caption shown for a minute")]})[0]
    assert (long.start_s, long.end_s) == (100, 100 + MAX_MOMENT_S)


def test_visual_moments_keep_the_frames_near_the_peak():
    times = np.arange(0.0, 30.0)  # one 30 s shot, every frame a hit; 12-13 s stand out
    sims = np.full(30, 0.20)
    sims[12:14] = [0.40, 0.42]
    background = Background(0.2, 0.02, 1000)
    (moment,) = visual_candidates(times, sims, ["a.mp4"] * 30, background, gap_s=1.5, frame_s=1.0)
    assert (moment.start_s, moment.end_s, moment.best_s) == (12.0, 14.0, 13.0)
    flat = visual_candidates(times, np.full(30, 0.2), ["a.mp4"] * 30, background, gap_s=1.5, frame_s=1.0)
    assert len(flat) == 1 and flat[0].end_s - flat[0].start_s <= MAX_MOMENT_S + 1.0


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
    report = index_videos(library, [narrated.path, silent.path], visual=False, signals=("speech", "ocr"),
                          timeout_s=600)  # a loaded machine decodes slowly
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


def test_search_reads_at_80_columns_one_line_per_result(signals_library, narrated):
    spoken = narrated.lines[2]
    out = subprocess.run([sys.executable, "-m", "videomini.cli", "search", spoken.paraphrase, "--library",
                          str(signals_library), "--top-k", "4"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VIDEOMINI_MODEL": "/nonexistent/model", "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.rstrip("\n").splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    rows = [line for line in lines if line.lstrip()[:1].isdigit()]
    assert len(rows) == 4  # one line per result: no wrapped cells
    assert all("narrated.mp4" in row or "silent.mp4" in row for row in rows)
    assert str(signals_library) not in out.stdout and "/" not in rows[0].split("narrated.mp4")[0]
    first = rows[0]
    assert "0:15" in first and "speech" in first and "*" in first and "“The train" in first  # range, signal, quote
    relevance = re.search(r" (\d\.\d\d)\* ", first)  # confident: 0.50-1.00, marked *
    assert relevance and 0.5 <= float(relevance.group(1)) <= 1.0


def test_search_json_carries_the_relevance_the_name_and_the_full_path(signals_library):
    out = run_cli("search", "a penguin sliding on the ice", "--library", str(signals_library), "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found and all(not m["confident"] and 0.0 <= m["relevance"] < 0.5 for m in found)
    assert Path(found[0]["video"]).is_absolute() and found[0]["name"] == Path(found[0]["video"]).name
    assert "nothing in the library matches" in out.stderr


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
    from videomini import VideoMini
    from videomini.ask_policy import ask_library

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

    answer = ask_library(library, spoken.paraphrase, model=vm, top_k=3, max_new_tokens=2)
    assert answer.generated_by == "llava-mini" and answer.frames_used > 0
    assert answer.context and "London" in answer.context  # stored speech quoted into the prompt


def test_the_train_question_points_at_the_spoken_sentence_not_the_whole_video(tmp_path, checkpoint, narrated):
    """examples/example.mp4 content indexed with frames (a random CLIP tower: a noise list) and speech + text."""
    from videomini import VideoMini

    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    library = tmp_path / "lib"
    assert index_videos(library, [narrated.path], vm, signals=("speech", "ocr")).indexed
    spoken = narrated.lines[2]  # "The train to London departs at noon." at 15 s
    results = search_library(library, "When does the train to London leave?", top_k=5, text_tower=vm.text_tower)
    best = results[0]
    assert best.matches[0]["signal"] == "speech" and "London" in best.matches[0]["text"] and best.confident
    assert spoken.start_s - TOLERANCE_S <= best.start_s and best.end_s <= spoken.end_s + TOLERANCE_S
    assert best.end_s - best.start_s <= 5.0 and abs(best.best_s - spoken.start_s) <= TOLERANCE_S
    assert all(m.end_s - m.start_s <= MAX_MOMENT_S for m in results)


def test_a_query_answered_nowhere_gets_no_confident_moment(signals_library):
    results = search_library(signals_library, "a penguin sliding on the ice", top_k=3)
    assert results and not any(m.confident for m in results)


# ----------------------------------------------------------------------------------------------- calibration


def test_a_frame_that_stands_out_for_every_query_does_not_stand_out_for_this_one():
    """A random tower: every query embeds near one common direction, so the frames unlike the rest (drawn
    captions) lie far from the library's median for any query. Against its own similarities to the generic
    queries such a frame is unremarkable: no evidence."""
    rng = np.random.default_rng(1)
    common = unit(rng.normal(size=(1, 256)))[0]
    queries = unit(common + 0.05 * rng.normal(size=(len(GENERIC_QUERIES) + 1, 256)))  # last: the user's query
    frames = unit(rng.normal(size=(500, 256)))
    frames[:10] = unit(common + 0.05 * rng.normal(size=(10, 256)))  # ten caption frames, close to every query
    bank = QueryBank(queries[:-1])
    raw = frames @ queries[-1]
    assert Background.of(raw, 500).evidence(raw[:10].max()) > 5  # the query-only calibration: a confident noise hit
    z = bank.standardized(raw, frames)
    background = measured_background(z, bank.generic_z(frames), 500)
    assert max(background.evidence(v) for v in z) == 0.0


def test_an_informative_list_keeps_its_strong_hits():
    """A tower that works: the true frame lies close to this query and not to the generic ones."""
    rng = np.random.default_rng(2)
    queries = unit(rng.normal(size=(len(GENERIC_QUERIES) + 1, 256)))
    frames = unit(rng.normal(size=(500, 256)))
    # the frame the query describes: cosine about 0.5 to the query
    frames[7] = unit(queries[-1:] + 0.1 * rng.normal(size=(1, 256)))[0]
    bank = QueryBank(queries[:-1])
    z = bank.standardized(frames @ queries[-1], frames)
    background = measured_background(z, bank.generic_z(frames), 500)
    assert int(np.argmax(z)) == 7 and background.evidence(z[7]) > 3 * CONFIDENT_EVIDENCE
    assert sorted(background.evidence(v) for v in z)[-2] == 0.0  # and only it


def test_the_confident_margin_is_what_all_but_one_in_twenty_queries_about_nothing_reach():
    """The generic queries' best items scatter with a long upper tail (a few share a word with some item): a hit
    one spread above their median best is one that several generic queries reach, so it is not confident; the
    margin is measured as their 95th percentile above that median."""
    rng = np.random.default_rng(3)
    generic = rng.normal(0.0, 0.05, size=(200, 100))  # (items, generic queries): cosine spread 0.05
    lucky = rng.choice(100, 20, replace=False)  # a fifth of the generic queries share a word with one item
    generic[rng.integers(0, 200, 20), lucky] += rng.uniform(0.1, 0.25, 20)
    query = rng.normal(0.0, 0.05, 200)
    background = measured_background(query, generic, 200)
    bests = (generic - np.median(generic, axis=0)).max(axis=0) / background.scale
    assert background.margin == pytest.approx(np.quantile(bests, 1 - FALSE_CONFIDENT_RATE) - np.median(bests))
    assert background.margin > 1.5 * CONFIDENT_EVIDENCE
    shared_word = background.center + background.scale * (background.noise_ceiling + 1.2)  # evidence 1.2
    strong = background.center + background.scale * (background.noise_ceiling + background.margin + 2)
    moments = fuse({"speech": [hit("a.mp4", 0, 4, shared_word, "speech", "a shared word"),
                               hit("b.mp4", 0, 4, strong, "speech", "the answer")]}, {"speech": background})
    assert [m.video for m in moments] == ["b.mp4", "a.mp4"]
    assert moments[0].confident and not moments[1].confident
    assert moments[1].relevance < 0.5 <= moments[0].relevance == relevance(moments[0].score, background.margin)


@pytest.fixture(scope="module")
def meeting_library(tmp_path_factory, checkpoint, videos_dir):
    """The narrated example of issue 22, indexed with frames (the tiny checkpoint's random CLIP tower) and
    speech + on-screen text, as `index --signals speech,ocr` does."""
    from videomini import VideoMini

    from narrated import make_meeting_video

    video = make_meeting_video(tmp_path_factory.mktemp("media") / "meeting.mp4",
                               [videos_dir / "bikes.mp4", videos_dir / "safari.mp4"])
    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    library = tmp_path_factory.mktemp("lib") / "meeting"
    assert index_videos(library, [video.path], vm, signals=("speech", "ocr"), timeout_s=600).indexed
    return library, video, vm


@pytest.mark.slow
def test_the_budget_meeting_is_the_spoken_sentence_not_the_captioned_frames(meeting_library):
    library, video, vm = meeting_library
    spoken = video.lines[0]
    results = search_library(library, "when is the budget meeting", top_k=5, text_tower=vm.text_tower)
    best = results[0]
    assert best.matches[0]["signal"] == "speech" and "budget" in best.matches[0]["text"].lower()
    assert abs(best.start_s - spoken.start_s) <= TOLERANCE_S and best.confident


@pytest.mark.slow
@pytest.mark.parametrize("query", ["when is the budget meeting", "wet floor", "a penguin sliding on the ice",
                                   "people in a meeting room"])
def test_the_random_tower_carries_no_evidence(meeting_library, query):
    library, _video, vm = meeting_library
    results = search_library(library, query, top_k=10, text_tower=vm.text_tower)
    visual = [m for r in results for m in r.matches if m["signal"] == "visual"]
    assert visual and all(m["evidence"] == 0 for m in visual)



@pytest.mark.slow
@pytest.mark.parametrize("query", ["the price of lunch", "a budget airline flight"])
def test_a_query_that_shares_a_word_with_the_video_but_is_not_answered_is_not_confident(meeting_library, query):
    """"Lunch will be served in the main hall" does not say what lunch costs; a taxi on screen is no airline:
    each shares a word or a topic with the video, and before the measured margin each was a confident moment."""
    library, _video, vm = meeting_library
    results = search_library(library, query, top_k=5, text_tower=vm.text_tower)
    assert results and not any(m.confident for m in results) and results[0].relevance < 0.5
