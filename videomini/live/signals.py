"""Speech and on-screen text of a live stream, extracted in chunks on their own thread, so a sentence is quotable
(in answers, and in a library's text search) seconds after it was said or shown.

Speech: the source's audio, resampled to Whisper's 16 kHz mono by the decoder, is transcribed in `chunk_s`
chunks (faster-whisper on the array; segment times moved onto the stream clock). On-screen text: RapidOCR on the
sampled frames, `ocr_every_s` apart, merged per chunk. Work that falls behind a live source is dropped (the
oldest chunk first) rather than queued without bound; retained segments are dropped past `retain_s`."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from videomini.signals import SignalError, TextSegment

LIVE_SIGNALS = ("speech", "ocr")
WHISPER_RATE = 16000  # samples per second (faster-whisper's feature extractor)
BACKLOG_CHUNKS = 4  # chunks waiting for a model; beyond this the oldest is dropped



def check_signals(kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The requested signals, checked; ValueError (one line) for an unknown one."""
    unknown = [k for k in kinds if k not in LIVE_SIGNALS]
    if unknown:
        raise ValueError(f"--signals: unknown signal {unknown[0]!r} (use {', '.join(LIVE_SIGNALS)})")
    return tuple(dict.fromkeys(kinds))


def quietest_cut(audio: np.ndarray, window_s: float = 0.05, search_fraction: float = 0.5) -> int:
    """Where to end a speech chunk: the start of the quietest `window_s` window in its last `search_fraction`
    (by RMS), so that a sentence is not cut in two when a pause is at hand."""
    window = int(window_s * WHISPER_RATE)
    first = int(len(audio) * (1 - search_fraction)) // window
    count = len(audio) // window
    if count - first < 2:
        return len(audio)
    frames = audio[first * window: count * window].reshape(-1, window)
    quietest = int(np.argmin(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))))
    return (first + quietest) * window + window // 2


class LiveSignals:
    """Transcribes audio chunks and reads text off frames on one worker thread; `segments()` gives what is
    retained (a library piece collects them once `wait_until` says they are extracted)."""

    def __init__(self, kinds: tuple[str, ...], retain_s: float, chunk_s: float = 5.0, ocr_every_s: float = 2.0,
                 on_error: Callable[[str], None] | None = None):
        self.kinds, self.retain_s, self.chunk_s, self.ocr_every_s = check_signals(kinds), retain_s, chunk_s, ocr_every_s
        self.on_error = on_error or (lambda message: None)
        self._jobs: queue.Queue[tuple | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._segments: deque[TextSegment] = deque()
        self._audio: list[np.ndarray] = []
        self._audio_start: float | None = None
        self._ocr_frames: list[tuple[float, np.ndarray]] = []
        self._next_ocr_s = 0.0
        self.dropped_chunks = 0
        self._done = threading.Condition()
        self._done_until = {kind: -1.0 for kind in self.kinds}  # stream time each signal has been extracted to
        self._closed = False
        self._buffers = threading.Lock()  # audio comes from the decoder thread, frames from the encoder thread
        self.chunks_done = 0
        if "speech" in self.kinds:  # fail now, in one line, when the model cannot be loaded
            from videomini.signals.speech import load_whisper

            load_whisper()
        if "ocr" in self.kinds:
            from videomini.signals.ocr import load_ocr

            load_ocr()
        self._thread = threading.Thread(target=self._work, name="videomini-live-signals", daemon=True)
        self._thread.start()

    # -- input (decoder / encoder threads) --------------------------------------------------------------------
    def add_audio(self, start_s: float, samples: np.ndarray) -> None:
        """16 kHz mono float32 samples starting at stream time `start_s`; a chunk is queued every `chunk_s`."""
        if "speech" not in self.kinds:
            return
        with self._buffers:
            self._add_audio(start_s, samples)

    def _add_audio(self, start_s: float, samples: np.ndarray) -> None:
        self._done_until.setdefault("audio_seen", 0.0)
        if self._audio_start is None:
            self._audio_start = start_s
        self._audio.append(samples)
        if sum(len(a) for a in self._audio) >= self.chunk_s * WHISPER_RATE:
            audio = np.concatenate(self._audio)
            cut = quietest_cut(audio)  # a chunk ends in the pause between sentences, not inside a word
            self._queue(("speech", self._audio_start, audio[:cut]))
            self._audio, self._audio_start = [audio[cut:]], self._audio_start + cut / WHISPER_RATE

    def add_frames(self, times_s: np.ndarray, frames: np.ndarray) -> None:
        """Sampled frames; one every `ocr_every_s` is read, in chunks of `chunk_s`."""
        if "ocr" not in self.kinds:
            return
        with self._buffers:
            self._add_frames(times_s, frames)

    def _add_frames(self, times_s: np.ndarray, frames: np.ndarray) -> None:
        for t, frame in zip(times_s.tolist(), frames):
            if t >= self._next_ocr_s:
                self._ocr_frames.append((t, frame))
                self._next_ocr_s = t + self.ocr_every_s
        if self._ocr_frames and self._ocr_frames[-1][0] - self._ocr_frames[0][0] >= self.chunk_s:
            self._flush_ocr()

    def flush(self) -> None:
        """Queue the audio and frames buffered so far as chunks of their own (the source dropped, or ends)."""
        with self._buffers:
            if self._audio and sum(len(a) for a in self._audio):
                self._queue(("speech", self._audio_start, np.concatenate(self._audio)))
            self._audio, self._audio_start = [], None
            self._flush_ocr()

    def _flush_ocr(self) -> None:
        if self._ocr_frames:
            times = np.array([t for t, _ in self._ocr_frames])
            self._queue(("ocr", times, np.stack([f for _, f in self._ocr_frames])))
            self._ocr_frames = []

    def _queue(self, job: tuple) -> None:
        with self._lock:
            if self._pending >= BACKLOG_CHUNKS:
                try:  # the oldest waiting chunk gives way: the newest is what a live question asks about
                    self._jobs.get_nowait()
                    self._pending -= 1
                    self.dropped_chunks += 1
                except queue.Empty:
                    pass
            self._pending += 1
        self._jobs.put(job)

    # -- the worker -----------------------------------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._pending -= 1
            try:
                found = self._speech(*job[1:]) if job[0] == "speech" else self._ocr(*job[1:])
            except SignalError as e:
                self.on_error(str(e))
                found = []
            self._mark_done(job)
            self.chunks_done += 1
            if found:
                with self._lock:
                    self._segments.extend(found)
                    newest = max(s.end_s for s in self._segments)
                    while self._segments and newest - self._segments[0].end_s > self.retain_s:
                        self._segments.popleft()

    @staticmethod
    def _speech(start_s: float, audio: np.ndarray) -> list[TextSegment]:
        from videomini.signals.speech import confident_speech, load_whisper, split_sentences

        whisper = load_whisper()
        segments, _ = whisper.transcribe(audio, beam_size=5, word_timestamps=True, vad_filter=True,
                                         temperature=0.0, condition_on_previous_text=False)
        out = []
        for seg in segments:
            text = seg.text.strip()
            if not text:
                continue
            words = [(float(w.start) + start_s, float(w.end) + start_s, w.word.strip()) for w in seg.words or []
                     if w.word.strip()]
            score = float(np.mean([w.probability for w in seg.words])) if seg.words else None
            out += split_sentences(TextSegment(float(seg.start) + start_s, float(seg.end) + start_s, text, "speech",
                                               words=words, score=score))
        return confident_speech(out)

    def _ocr(self, times: np.ndarray, frames: np.ndarray) -> list[TextSegment]:
        from videomini.signals.ocr import read_text

        return read_text(frames, times, frame_interval_s=self.ocr_every_s)

    def _mark_done(self, job: tuple) -> None:
        end_s = job[1] + len(job[2]) / WHISPER_RATE if job[0] == "speech" else float(job[1][-1])
        with self._done:
            self._done_until[job[0]] = max(self._done_until[job[0]], end_s)
            self._done.notify_all()

    def _extracted_until(self) -> float:
        if self._closed:
            return float("inf")
        kinds = [k for k in self.kinds if k != "speech" or "audio_seen" in self._done_until]
        return min((self._done_until[k] for k in kinds), default=float("inf"))

    def wait_until(self, stream_s: float, timeout_s: float) -> bool:
        """Block until the text of the stream up to `stream_s` is extracted (or the timeout): True when it is."""
        with self._done:
            return self._done.wait_for(lambda: self._extracted_until() >= stream_s, timeout=timeout_s)

    # -- output ---------------------------------------------------------------------------------------------
    def segments(self) -> list[TextSegment]:
        with self._lock:
            return list(self._segments)

    def close(self) -> None:
        """Queue what is buffered, finish the queued chunks, stop."""
        if not self._thread.is_alive():
            return
        self.flush()
        self._jobs.put(None)
        self._thread.join()
        with self._done:
            self._closed = True
            self._done.notify_all()
