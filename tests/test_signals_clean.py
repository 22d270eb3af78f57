"""Clean on-screen text and sentence-sized speech: only words a person would search for reach the text index,
with their word spaces, each caption once with the whole time it stays on screen."""

from __future__ import annotations

import numpy as np

from videomini.signals import TextSegment
from videomini.signals.ocr import WATERMARK_MIN_FRAMES, merge_frame_texts, searchable_phrases, watermarks
from videomini.signals.speech import split_sentences

from narrated import Caption, frame_at


def box(x0: float, x1: float, y0: float, text: str, score: float = 0.95, height: float = 20.0):
    """A RapidOCR-style reading: (4 corner points, text, confidence)."""
    corners = np.array([[x0, y0], [x1, y0], [x1, y0 + height], [x0, y0 + height]], dtype=np.float32)
    return corners, text, score


def test_phrases_without_words_are_dropped_and_captions_stay_whole():
    boxes = [box(10, 170, 8, "00:00:26.000 650"),  # a burned-in timecode, top left
             box(560, 630, 8, "RAIL TV"),  # a logo on the same line, far to the right
             box(200, 290, 220, "OPEN"), box(300, 330, 220, "24"), box(340, 440, 220, "HOURS"),  # one caption
             box(600, 610, 330, "7"), box(20, 60, 330, "12:30"), box(300, 310, 300, "■-")]  # digits, a clock
    assert [text for text, _ in searchable_phrases(boxes)] == ["RAIL TV", "OPEN 24 HOURS"]


def test_a_caption_on_screen_under_a_running_timecode_is_one_segment():
    # per-frame readings as frame_texts gives them once the timecode is gone: the caption alone, 4 frames long
    readings = [[], [("PLATFORM 9", 0.98)], [("PLATFORM 9", 0.97)], [("PLATF0RM 9", 0.9)], [("PLATFORM 9", 0.99)], []]
    segments = merge_frame_texts(readings, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], frame_interval_s=1.0)
    assert [(s.text, s.start_s, s.end_s) for s in segments] == [("PLATFORM 9", 1.0, 5.0)]


def test_text_on_screen_through_the_whole_video_is_a_watermark():
    n = WATERMARK_MIN_FRAMES + 10
    readings = [[("GARDEN TV", 0.99)] + ([("COMPOST HERE", 0.95)] if 10 <= i < 16 else []) for i in range(n)]
    readings[3] = [("GARDEN TY", 0.9)]  # OCR jitter on the logo is the logo too
    assert watermarks(readings) == {"garden tv", "garden ty"}
    segments = merge_frame_texts(readings, list(range(n)), frame_interval_s=1.0)
    assert [(s.text, s.start_s, s.end_s) for s in segments] == [("COMPOST HERE", 10.0, 16.0)]
    # a short clip showing one caption throughout keeps it: too few frames to call it a watermark
    assert merge_frame_texts([[("EXIT ONLY", 0.9)]] * 5, [0, 1, 2, 3, 4])[0].text == "EXIT ONLY"


def test_ocr_keeps_word_spaces_and_skips_timecode_and_logo():
    from videomini.signals.ocr import frame_texts

    captions = [Caption(0, 9, "WARNING WET FLOOR")]
    frames = np.stack([frame_at(t, captions, timecode_fps=10, watermark="RAIL TV") for t in (1.0, 2.0)])
    readings = frame_texts(frames)
    for phrases in readings:  # the timecode is gone; the caption keeps its spaces (the small logo may not)
        assert [text.replace(" ", "") for text, _ in phrases] == ["RAILTV", "WARNINGWETFLOOR"]
        assert phrases[1][0] == "WARNING WET FLOOR"


def test_speech_segments_split_into_timed_sentences():
    words = [(1.0, 1.3, "The"), (1.3, 1.6, "train"), (1.6, 2.0, "leaves."), (2.5, 2.8, "Mind"), (2.8, 3.0, "the"),
             (3.0, 3.4, "gap!"), (3.6, 4.0, "Thanks")]
    parts = split_sentences(TextSegment(1.0, 4.0, "The train leaves. Mind the gap! Thanks", "speech", words, 0.9))
    assert [(p.text, p.start_s, p.end_s, p.score) for p in parts] == [
        ("The train leaves.", 1.0, 2.0, 0.9), ("Mind the gap!", 2.5, 3.4, 0.9), ("Thanks", 3.6, 4.0, 0.9)]
    # two lines 10 s apart that Whisper ran together with a comma
    joined = [(2.0, 2.4, "Take"), (2.4, 2.8, "one"), (2.8, 3.5, "tablet,"), (13.0, 13.4, "drink"),
              (13.4, 14.0, "water.")]
    parts = split_sentences(TextSegment(2.0, 14.0, "Take one tablet, drink water.", "speech", joined, 0.8))
    assert [(p.text, p.start_s, p.end_s) for p in parts] == [("Take one tablet,", 2.0, 3.5),
                                                             ("drink water.", 13.0, 14.0)]
    whole = TextSegment(0.0, 2.0, "No word times.", "speech")
    assert split_sentences(whole) == [whole]
