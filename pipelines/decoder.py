"""A video's decoder in its own process: probe, decode, extract signals, send typed messages.

Decoding runs in a spawned worker process (it imports PyAV and numpy, never torch), one per video, feeding a
bounded queue: a decoder that crashes (PyAV can segfault on damaged H.264) or hangs (no message for `timeout_s`)
fails only that file. Both index engines use it: the local engine directly, the Ray engine inside its decode tasks.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from videomini.errors import first_line
from videomini.pipelines.messages import Failed, Finished, FrameBatch, Message, Probed

QUEUE_BATCHES = 4  # decoded batches buffered per worker: bounds memory whatever the video's length
ORPHAN_CHECK_S = 1.0  # how often a blocked worker checks whether the indexer that started it is still alive


def decode_messages(path: str, fps: float, batch_size: int, signals: Iterable[str] = (),
                    frames: bool = True, decode: str = "exact", asr_model: str | None = None) -> Iterator[Message]:
    """Probe and decode one video into messages: Probed, FrameBatch..., Finished -- or Failed instead. Never
    raises: a bad file is a message. `frames=False` (no vision model this run) sends no batches; `decode`
    "fast" lets the decoder skip frames nobody samples (`videomini.video.sample_frames`).

    Signals run here, beside decoding and away from the encoder's device: on-screen text (RapidOCR) reads the
    frames this pass decodes anyway, speech (Whisper tiny.en) the audio track. A signal that fails is a warning,
    not a failed video; it is left out of the signals recorded, so a later run with --signals retries it."""
    from videomini.video import VideoError, probe

    started = time.perf_counter()
    signals = list(signals)
    try:
        yield Probed(probe(path).to_dict())
        finished = Finished(batches=0)
        readings: list[tuple[str, float]] = []
        read_times: list[float] = []
        ocr_error = yield from _decode_frames(path, fps, batch_size, "ocr" in signals, frames, finished,
                                              readings, read_times, decode)
        if signals:
            _extract_signals(path, fps, signals, ocr_error, readings, read_times, finished, asr_model)
        finished.decode_s = time.perf_counter() - started
        yield finished
    except VideoError as e:
        yield Failed(str(e))
    except Exception as e:  # unexpected, but still this file's failure only
        yield Failed(f"{path}: {first_line(e, with_type=True)}")


def _decode_frames(path: str, fps: float, batch_size: int, ocr: bool, frames: bool, finished: Finished,
                   readings: list, read_times: list, decode: str = "exact") -> Iterator[FrameBatch]:
    """Yield the frame batches (when `frames`), OCR them (when `ocr`), and record the decoder's warnings and
    the batch count in `finished`. Returns the OCR's error line, if it could not run."""
    import warnings

    from videomini.video import sample_frames

    ocr_error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if frames or ocr:
            with sample_frames(path, fps=fps, batch_size=batch_size, prefetch=0, decode=decode) as batches:
                for batch, times in batches:
                    if ocr and ocr_error is None:
                        ocr_error = _read_on_screen_text(batch, times, readings, read_times)
                    if frames:
                        yield FrameBatch(finished.batches, batch, np.asarray(times, np.float64))
                        finished.batches += 1
    finished.warnings += [first_line(w.message) for w in caught]
    return ocr_error


def _extract_signals(path: str, fps: float, signals: list[str], ocr_error: str | None, readings: list,
                     read_times: list, finished: Finished, asr_model: str | None = None) -> None:
    """Fill `finished` with the on-screen text read while decoding and the speech of the audio track."""
    segments = []
    if "ocr" in signals:
        if ocr_error is None:
            from videomini.signals.ocr import merge_frame_texts

            finished.signals.append("ocr")
            segments += merge_frame_texts(readings, read_times, frame_interval_s=1.0 / fps)
        else:
            finished.warnings.append(f"{path}: on-screen text skipped: {ocr_error}")
    if "speech" in signals:
        try:
            from videomini.signals.speech import confident_speech, transcribe

            segments += confident_speech(transcribe(path, **({"model": asr_model} if asr_model else {})))
            finished.signals.append("speech")
        except Exception as e:  # a broken audio track costs the speech, not the video
            finished.warnings.append(f"{path}: speech skipped: {first_line(e)}")
    segments.sort(key=lambda seg: (seg.start_s, seg.end_s))
    finished.segments = [{"source": seg.source, "text": seg.text, "start_s": float(seg.start_s),
                          "end_s": float(seg.end_s)} for seg in segments]


def _read_on_screen_text(batch: np.ndarray, times: Any, readings: list, read_times: list) -> str | None:
    """OCR one batch of frames into `readings`/`read_times`; the error line if the OCR model cannot run."""
    try:
        from videomini.signals.ocr import frame_texts

        readings += frame_texts(batch)
        read_times += [float(t) for t in times]
        return None
    except Exception as e:
        return first_line(e)


def _decode_worker(path: str, fps: float, batch_size: int, out: Any, parent_pid: int, signals: tuple = (),
                   frames: bool = True, decode: str = "exact", asr_model: str | None = None) -> None:
    """Runs in a spawned process: decode_messages() into a bounded queue."""

    def put(message: Message) -> None:
        # a bounded queue blocks when the indexer is busy; if the indexer died (SIGKILL), exit instead of
        # waiting forever as an orphan that still holds the terminal's or the caller's pipes
        while True:
            try:
                out.put(message, timeout=ORPHAN_CHECK_S)
                return
            except queue.Full:
                if os.getppid() != parent_pid:
                    os._exit(0)

    for message in decode_messages(path, fps, batch_size, signals, frames, decode, asr_model):
        put(message)
    # At exit the queue's feeder thread flushes what is buffered into the pipe, which blocks while nobody reads:
    # wait for it, but give up the moment the indexer is gone.
    out.close()
    flusher = threading.Thread(target=out.join_thread, daemon=True)
    flusher.start()
    while flusher.is_alive():
        flusher.join(ORPHAN_CHECK_S)
        if os.getppid() != parent_pid:
            os._exit(0)


class DecodeJob:
    """One video decoding in its own process, read through a bounded queue with a hang timeout."""

    def __init__(self, ctx: Any, path: Path, fps: float, batch_size: int, timeout_s: float,
                 signals: Iterable[str] = (), frames: bool = True, decode: str = "exact", asr_model: str | None = None):
        self.path, self.timeout_s = path, timeout_s
        self.waited_s = 0.0  # seconds since the last message, while the worker is alive
        self.queue = ctx.Queue(maxsize=QUEUE_BATCHES)
        self.process = ctx.Process(target=_decode_worker, args=(str(path), fps, batch_size, self.queue, os.getpid(),
                                                                tuple(signals), frames, decode, asr_model),
                                   daemon=True)
        self.process.start()

    def messages(self) -> Iterator[Message]:
        """Yield the worker's messages up to its last; a crash or a hang becomes a Failed message."""
        while True:
            try:
                message = self.queue.get(timeout=min(self.timeout_s, 1.0))
            except queue.Empty:
                if not self.process.is_alive():
                    try:  # the last messages may still be in the pipe
                        message = self.queue.get(timeout=0.5)
                    except queue.Empty:
                        code = self.process.exitcode
                        reason = f"killed by signal {-code}" if code and code < 0 else f"exited with code {code}"
                        yield Failed(f"{self.path}: decoder crashed ({reason})")
                        return
                else:
                    self.waited_s += 1.0
                    if self.waited_s >= self.timeout_s:
                        yield Failed(f"{self.path}: decoder hung (no frames for {self.timeout_s:.0f} s)")
                        return
                    continue
            self.waited_s = 0.0
            yield message
            if isinstance(message, (Finished, Failed)):
                return

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.queue.close()
        self.queue.cancel_join_thread()
