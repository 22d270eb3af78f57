"""Evidence-only answers from speech and on-screen text with the real bundled models (Whisper tiny.en, RapidOCR,
MiniLM), checked against a generated video whose narration and captions are at known times (tests/narrated.py)."""

from __future__ import annotations

import re

import pytest

from videomini.search import rank_segments
from videomini.signal_answer import EVIDENCE_ONLY_LABEL, answer_from_signals, extract_signals, signal_context
from videomini.signals import TextSegment
from videomini.signals.text import default_embedder

from narrated import Caption, make_narrated_video

TOLERANCE_S = 2.0
# Questions about each caption that share at most one word with it.
CAPTION_QUESTIONS = {
    "OPEN 24 HOURS": "Is the shop open all night?",
    "EXIT ONLY": "Which door is the way out?",
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.fixture(scope="module")
def segments(narrated) -> list[TextSegment]:
    return extract_signals(narrated.path)


@pytest.fixture(scope="module")
def embedder():
    return default_embedder()


def test_extract_signals_finds_every_line_and_caption_in_time_order(narrated, segments):
    assert [s.start_s for s in segments] == sorted(s.start_s for s in segments)
    speech = [s for s in segments if s.source == "speech"]
    on_screen = [s for s in segments if s.source == "ocr"]
    assert len(speech) >= len(narrated.lines) and len(on_screen) == len(narrated.captions)
    assert all(s.score is None or s.score >= 0.5 for s in speech)
    assert [s.text for s in on_screen] == [c.text for c in narrated.captions]


def test_low_confidence_speech_is_dropped(monkeypatch, narrated):
    import videomini.signals.speech as speech_module

    heard = [TextSegment(1.0, 2.0, "Feed the cat.", "speech", score=0.9),
             TextSegment(4.0, 6.0, "Thank you for watching.", "speech", score=0.2)]  # Whisper on noise
    monkeypatch.setattr(speech_module, "transcribe", lambda path, model="tiny.en": heard)
    kept = extract_signals(narrated.path, signals=("speech",))
    assert [s.text for s in kept] == ["Feed the cat."]


def test_unknown_signal_is_a_clear_error(narrated):
    with pytest.raises(ValueError, match="unknown signal 'smell'"):
        extract_signals(narrated.path, signals=("speech", "smell"))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_paraphrase_of_a_spoken_line_cites_its_time(narrated, segments, embedder, index):
    line = narrated.lines[index]
    answer = answer_from_signals(narrated.path, line.paraphrase, segments=segments, embedder=embedder)
    top = answer.evidence[0]
    assert top.method == "speech"
    assert abs(top.time_s - line.start_s) <= TOLERANCE_S, (line.text, answer.text)
    # The answer quotes what was heard there, labelled as evidence and not as a model's answer.
    lines = answer.text.splitlines()
    assert lines[0] == EVIDENCE_ONLY_LABEL
    quoted = re.search(r"\(speech\): “(.+)”$", lines[1]).group(1)
    assert len(_words(quoted) & _words(line.text)) >= 0.7 * len(_words(line.text))
    assert re.match(r"\d+:\d\d(\.\d)?–\d+:\d\d(\.\d)? \(speech\)", lines[1])


@pytest.mark.parametrize("caption_text", list(CAPTION_QUESTIONS))
def test_question_about_a_caption_cites_its_time(narrated, segments, embedder, caption_text):
    caption = next(c for c in narrated.captions if c.text == caption_text)
    answer = answer_from_signals(narrated.path, CAPTION_QUESTIONS[caption_text], segments=segments,
                                 embedder=embedder)
    top = answer.evidence[0]
    assert top.method == "ocr"
    assert abs(top.time_s - caption.start_s) <= TOLERANCE_S
    assert answer.text.splitlines()[1].endswith(f"(on screen): “{caption_text}”")


def test_answer_says_no_generative_model_answered(narrated, segments, embedder):
    answer = answer_from_signals(narrated.path, "Is the shop open all night?", segments=segments,
                                 embedder=embedder, top_k=3)
    assert answer.generated_by == "signals"
    assert answer.model == "all-MiniLM-L6-v2 + whisper tiny.en + rapidocr"
    assert answer.frames_used == 0 and answer.frame_times_s == []
    assert any("No generative model answered" in note for note in answer.notes)
    assert answer.text.startswith("[evidence only")
    assert len(answer.evidence) == 3 == len(answer.text.splitlines()) - 1
    assert all(-1.0 <= e.score <= 1.0 and e.start_s <= e.time_s <= e.end_s for e in answer.evidence)
    assert answer.to_dict()["evidence"][0]["method"] == "ocr"


def test_time_references_restrict_the_candidates(narrated, segments, embedder):
    cat = narrated.lines[1]
    # Semantically the cat line wins, but the question asks about the first five seconds.
    answer = answer_from_signals(narrated.path, f"{cat.paraphrase} In the first 5 seconds?", segments=segments,
                                 embedder=embedder)
    assert answer.evidence and all(e.start_s < 5.0 for e in answer.evidence)
    assert not any("cat" in line for line in answer.text.splitlines())
    assert any("0:00–0:05" in note for note in answer.notes)
    # The last five seconds hold only the train line.
    last = answer_from_signals(narrated.path, "What was said in the last 5 seconds?", segments=segments,
                               embedder=embedder)
    assert all(e.end_s > narrated.duration_s - 5.0 for e in last.evidence)
    assert any(e.method == "speech" and abs(e.time_s - narrated.lines[2].start_s) <= TOLERANCE_S
               for e in last.evidence)
    # A window that holds no text falls back to the whole video (and says so).
    empty = answer_from_signals(narrated.path, f"{cat.paraphrase} Between 0:00 and 0:01?", segments=segments,
                                embedder=embedder)
    assert abs(empty.evidence[0].time_s - cat.start_s) <= TOLERANCE_S
    assert any("whole video" in note for note in empty.notes)


def test_video_without_audio_answers_from_on_screen_text(tmp_path, embedder):
    video = make_narrated_video(tmp_path / "silent.mp4", duration_s=5.0, with_audio=False,
                                captions=[Caption(2.0, 4.0, "NO PARKING")])
    answer = answer_from_signals(video.path, "Can I leave my car here?", embedder=embedder)
    assert [e.method for e in answer.evidence] == ["ocr"]
    assert abs(answer.evidence[0].time_s - 2.0) <= TOLERANCE_S
    assert "“NO PARKING”" in answer.text and answer.generated_by == "signals"


def test_video_with_no_text_at_all_says_so(tmp_path):
    video = make_narrated_video(tmp_path / "blank.mp4", duration_s=2.0, with_audio=False, captions=[])
    answer = answer_from_signals(video.path, "What is written here?", signals=("ocr",))
    assert answer.evidence == []
    assert answer.text.splitlines() == [EVIDENCE_ONLY_LABEL, "No on-screen text was found in blank.mp4."]


def test_rank_segments_orders_best_first(segments, embedder):
    ranked = rank_segments("The railway service to the capital leaves at midday.", segments, embedder, top_k=2)
    assert len(ranked) == 2 and ranked[0].score >= ranked[1].score and ranked[0].confident
    assert "London" in ranked[0].matches[0]["text"]
    assert rank_segments("anything", [], embedder) == []


def test_signal_context_lists_only_text_near_the_frames(narrated, segments):
    context = signal_context(segments, [6.0], window_s=2.0)
    lines = context.splitlines()
    assert "[0:05–0:08 on screen] OPEN 24 HOURS" in lines
    assert any(re.fullmatch(r"\[0:0[12](\.\d)? speech\] .*weather.*", line) for line in lines)  # ends 1.5 s before
    for far in ("cat", "train", "EXIT"):  # all start more than 3 s after 0:06 or end before it
        assert far not in context
    assert signal_context(segments, [60.0]) == "" and signal_context(segments, []) == ""


def test_signal_context_keeps_the_closest_lines_in_time_order():
    many = [TextSegment(float(t), t + 0.5, f"line {t}", "speech") for t in range(30)]
    lines = signal_context(many, [10.2], window_s=5.0, max_lines=3).splitlines()
    assert lines == ["[0:09 speech] line 9", "[0:10 speech] line 10", "[0:11 speech] line 11"]
