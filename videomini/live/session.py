"""`LiveSession`: watch a source while it plays — a decoder thread (never blocked by a live source), an encoder
thread (frame tokens + CLIP embeddings into the rolling memory, standing questions every `every_s` of stream),
and `ask` from any thread on the one answering path (`VideoMini._answer` -> `answer.generate_with_evidence`)."""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videomini.config import FPS
from videomini.errors import VideominiError
from videomini.live.alerts import StandingQuestion, answer_word_ids, yes_probability
from videomini.live.intake import FrameBuffer
from videomini.live.memory import RollingMemory
from videomini.live.signals import LiveSignals
from videomini.live.sources import SampledAudio, SampledFrame, SourceError, SourceSpec, StreamReader, parse_source
from videomini.live.timeline import Timeline

EventFn = Callable[[str, dict], None]
PieceFn = Callable[["Piece"], None]


class NothingSeenYet(VideominiError):
    """A question before the first frame was encoded."""
    http_status = 409


@dataclass
class WatchOptions:
    """How a session watches: sampling, memory bounds, standing questions, pieces handed to a library."""

    fps: float = FPS
    window_s: float = 600.0  # the recent window kept in RAM (capped by the planner's frame budget)
    retain_s: float = 3600.0  # the archive on disk keeps this much stream, then drops it
    timeout_s: float = 10.0  # opening / reading a source; a source that never connects fails after this
    buffer_frames: int = 32  # frames between decoder and encoder (bounded: backpressure drops past it)
    archive_dir: str | None = None  # default: a temporary folder, deleted at close
    alerts: tuple[str, ...] = ()
    every_s: float = 5.0  # standing questions evaluated every this many seconds of stream
    alert_window_s: float = 10.0  # ... over this much of the newest stream
    debounce: int = 2
    max_new_tokens: int = 128
    piece_s: float | None = None  # hand the stream to `on_piece` in pieces of this many seconds (a library)
    signals: tuple[str, ...] = ()  # "speech", "ocr": transcribed / read in chunks, quoted in answers
    signal_chunk_s: float = 5.0  # speech and on-screen text are extracted this many seconds at a time


@dataclass
class Piece:
    """A stretch of encoded stream for a library: stream times, CLIP embeddings and the frames (a library keeps
    no frame tokens: it re-decodes the frames it answers from)."""

    index: int
    start_s: float
    times_s: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)  # fp32 (D,) each
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 (h, w, 3) each


@dataclass
class LiveAnswer:
    """An answer about the stream, its evidence dated in both clocks."""

    answer: Any  # videomini.answer.Answer (times are stream seconds)
    wall_utc: list[str]  # one per evidence moment
    resolved_question: str  # the question as the time-reference parser read it (wall clocks -> stream time)

    @property
    def text(self) -> str:
        return self.answer.text

    # what the OpenAI-compatible route renders of any answer (pipelines/serve/chat.py)
    @property
    def model(self) -> str:
        return self.answer.model

    @property
    def evidence(self) -> list:
        return self.answer.evidence

    @property
    def prompt_tokens(self) -> int:
        return self.answer.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.answer.completion_tokens

    def to_dict(self) -> dict:
        out = self.answer.to_dict()
        for evidence, wall in zip(out["evidence"], self.wall_utc):
            evidence["wall_utc"] = wall
        out["resolved_question"] = self.resolved_question
        return out


def resident_bytes() -> int | None:
    """This process's resident set size now (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class LiveSession:
    """A running watch of one source by one VideoMini. Start with `VideoMini.watch(source)`; `ask`, `alerts`,
    `status`, `close`. Events (connected, dropped, gap, alert, ended, error) go to `on_event` and, for alerts,
    also to the queue `alerts()` reads."""

    def __init__(self, vm: Any, source: str | SourceSpec, options: WatchOptions | None = None,
                 on_event: EventFn | None = None, on_piece: PieceFn | None = None):
        self.vm, self.options = vm, options or WatchOptions()
        self.spec = source if isinstance(source, SourceSpec) else parse_source(source)
        self.timeline = Timeline()
        self._on_event, self._on_piece = on_event or (lambda kind, details: None), on_piece
        self._stop, self.ended, self._dropped = threading.Event(), threading.Event(), threading.Event()
        self.error: str | None = None
        budget = vm.frame_budget(256, self.options.max_new_tokens)
        window = max(1, min(int(self.options.window_s * self.options.fps), budget))
        self._own_archive = self.options.archive_dir is None
        folder = self.options.archive_dir or tempfile.mkdtemp(prefix="videomini-live-")
        self.memory = RollingMemory(Path(folder), window, self.options.retain_s)
        self.buffer: FrameBuffer[SampledFrame] = FrameBuffer(self.options.buffer_frames, drop=self.spec.live)
        self.signals = LiveSignals(self.options.signals, self.options.retain_s, self.options.signal_chunk_s,
                                   on_error=lambda message: self._event("error", {"error": message})) \
            if self.options.signals else None
        self.reader = StreamReader(self.spec, self.timeline, self.options.fps, self.options.timeout_s, self._stop,
                                   self._event, audio="speech" in self.options.signals)
        self.standing = [StandingQuestion(q, self.options.debounce) for q in self.options.alerts]
        self._answer_ids = answer_word_ids(vm.tokenizer) if self.standing else None
        self._alerts: queue.Queue[dict] = queue.Queue()
        self._llm = threading.Lock()  # one generation at a time (the answering path hooks the LLM's layers)
        self._progress = threading.Condition()
        self.encoded, self.latest_s = 0, None
        self._next_alert_s: float | None = None  # the stream time of the next standing-question check
        self._piece: Piece | None = None
        self.pieces = 0  # pieces started so far
        self._threads = [threading.Thread(target=self._decode, name="videomini-live-decode", daemon=True),
                         threading.Thread(target=self._encode, name="videomini-live-encode", daemon=True)]
        for thread in self._threads:
            thread.start()

    # -- threads ------------------------------------------------------------------------------------------
    def _event(self, kind: str, details: dict) -> None:
        if kind == "dropped":
            self._dropped.set()  # the encoder ends the piece in progress once it has drained the buffer
            if self.signals is not None:
                self.signals.flush()  # the sound before a drop is a chunk of its own: quotable now, not after it
        self._on_event(kind, details)

    def _decode(self) -> None:
        try:
            for item in self.reader.frames():
                if isinstance(item, SampledAudio):
                    self.signals.add_audio(item.stream_s, item.samples)
                else:
                    self.buffer.put(item)
        except SourceError as e:
            self.error = str(e)
            self._event("error", {"error": self.error})
        except Exception as e:  # an unexpected decoder failure ends the session with one line, not a hang
            self.error = f"{self.spec.url}: decoding failed ({type(e).__name__}: {e})"
            self._event("error", {"error": self.error})
        finally:
            self.buffer.close()

    def _encode(self) -> None:
        try:
            while not self.buffer.closed_and_empty:
                frames = self.buffer.take(self.vm.encoder.batch_size, timeout_s=0.5)
                if frames:
                    self._encode_batch(frames)
                elif self._dropped.is_set():  # the source dropped: what it gave so far is a piece of its own
                    self._dropped.clear()
                    self._flush_piece()
        except Exception as e:
            self.error = self.error or f"encoding failed ({type(e).__name__}: {e})"
            self._event("error", {"error": self.error})
            self._stop.set()
        finally:
            if self.signals is not None:
                self.signals.close()  # the last chunks' text belongs to the last piece
            self._flush_piece()
            self.ended.set()
            with self._progress:
                self._progress.notify_all()
            self._event("ended", {"frames": self.encoded, "error": self.error})

    def _encode_batch(self, frames: list[SampledFrame]) -> None:
        pixels = np.stack([f.pixels for f in frames])
        times = np.array([f.stream_s for f in frames], dtype=np.float64)
        encoded = self.vm.encoder.encode(pixels, times)
        self.memory.append(encoded.frame_tokens, encoded.clip_embeddings, times, pixels)
        with self._progress:
            self.encoded += len(frames)
            self.latest_s = float(times[-1])
            self._progress.notify_all()
        if self.signals is not None:
            self.signals.add_frames(times, pixels)
        if self._on_piece is not None and self.options.piece_s:
            self._collect_piece(encoded, times, pixels)
        if self.standing:
            self._alerts_due(times)

    def _alerts_due(self, times: np.ndarray) -> None:
        """Evaluate the standing questions at every `every_s` mark of stream time this batch crossed (a file
        decoded fast: each one, so the result does not depend on batching; a live source: the newest only)."""
        if self._next_alert_s is None:
            self._next_alert_s = float(times[0])
        marks = []
        while self._next_alert_s <= times[-1] + 1e-6:
            marks.append(self._next_alert_s)
            self._next_alert_s += self.options.every_s
        for at_s in (marks[-1:] if self.spec.live else marks):
            self._evaluate_alerts(at_s)

    # -- pieces (a library) -----------------------------------------------------------------------------
    def _collect_piece(self, encoded: Any, times: np.ndarray, pixels: np.ndarray) -> None:
        embeddings = encoded.clip_embeddings.numpy() if encoded.clip_embeddings is not None else None
        for i, t in enumerate(times.tolist()):
            if self._piece is not None and t - self._piece.start_s >= self.options.piece_s:
                self._flush_piece()
            if self._piece is None:
                self._piece = Piece(self.pieces, t)
                self.pieces += 1
            self._piece.times_s.append(t)
            self._piece.embeddings.append(embeddings[i] if embeddings is not None else None)
            self._piece.frames.append(pixels[i])

    def _flush_piece(self) -> None:
        piece, self._piece = self._piece, None
        if piece is not None and piece.times_s and self._on_piece is not None:
            try:
                self._on_piece(piece)
            except Exception as e:  # a piece that cannot be stored is reported; watching goes on
                self._event("error", {"error": f"piece {piece.index}: {type(e).__name__}: {e}"})

    # -- standing questions -------------------------------------------------------------------------------
    def _evaluate_alerts(self, at_s: float) -> None:
        """Each standing question over the stream in (at_s - alert_window_s, at_s]; an event when one changes."""
        from videomini.prompting import encode_question

        seqs, times = self.memory.snapshot()
        recent = (times > at_s - self.options.alert_window_s) & (times <= at_s + 1e-6)
        seqs, times = seqs[recent][-self.memory.window_frames:], times[recent][-self.memory.window_frames:]
        if len(seqs) == 0:
            return
        tokens, frames = self.memory.load(seqs)
        model = self.vm.model
        for standing in self.standing:
            input_ids = encode_question(self.vm.tokenizer, standing.prompt).to(model.device)
            fused = self._fuse(frames, times, input_ids)
            with self._llm:
                p_yes = yes_probability(model, input_ids, fused.mean(model.device, model.dtype), tokens,
                                        *self._answer_ids)
            if standing.update(p_yes):
                event = {"type": "alert", "question": standing.question, "answer": "yes" if standing.answer else "no",
                         "p_yes": round(p_yes, 4), "stream_s": round(at_s, 3),
                         "wall_utc": self.timeline.wall_iso(at_s)}
                self._alerts.put(event)
                self._event("alert", event)

    def _fuse(self, frames: np.ndarray, times: np.ndarray, input_ids: Any) -> Any:
        """The question fused with each of `frames` (the reference's mean over frames), batch by batch."""
        from videomini.model import FusedText

        fused = FusedText()
        size = self.vm.encoder.batch_size
        for start in range(0, len(frames), size):
            encoded = self.vm.encoder.encode(frames[start: start + size], times[start: start + size], input_ids)
            fused.add(encoded.fused_text_sum, len(encoded.timestamps_s))
        return fused

    # -- the API --------------------------------------------------------------------------------------------
    def ask(self, question: str, max_new_tokens: int | None = None, max_frames: int | None = None,
            top_k_evidence: int = 5, on_token: Callable[[str], None] | None = None) -> LiveAnswer:
        """Answer about what the stream has shown so far (retained part), while it keeps playing. Time references
        may use stream time ("the last 5 minutes", "at 2:30") or UTC times of day ("at 14:05")."""
        from videomini.answer import Answer, moments_from_scores
        from videomini.prompting import encode_question
        from videomini.selection import select_frames
        from videomini.timerefs import parse_time_references

        seqs, times = self.memory.snapshot()
        if len(seqs) == 0:
            raise NothingSeenYet(f"{self.spec.url}: no frame encoded yet; ask again in a moment")
        started = time.perf_counter()
        max_new_tokens = max_new_tokens or self.options.max_new_tokens
        vm, fps = self.vm, self.options.fps
        input_ids = encode_question(vm.tokenizer, question).to(vm.model.device)
        budget = vm.frame_budget(input_ids.shape[1], max_new_tokens)
        budget = min(budget, max_frames) if max_frames else budget
        relevance = None
        if vm.text_tower is not None and len(seqs) > budget:
            relevance = self.memory.relevance(vm.text_tower.embed(question)[0], seqs)
        resolved = self.timeline.resolve_question(question, float(times[-1]))
        duration_s = float(times[-1]) + 1.0 / fps
        windows = parse_time_references(resolved, duration_s)
        inside = sum(int(((times >= a) & (times <= b)).sum()) for a, b in windows)
        if windows and not inside:
            raise NothingSeenYet(f"{self.spec.url}: no frame retained in the time the question names "
                                 f"({', '.join(f'{a:.0f}-{b:.0f}s' for a, b in windows)} of stream)")
        selected = select_frames(times, min(budget, inside) if inside else budget, windows=windows,
                                 relevance=relevance)
        tokens, frames = self.memory.load(seqs[selected])
        context = self._context(times[selected])
        if context:  # speech / on-screen text near the chosen frames, as timestamped lines before the question
            input_ids = encode_question(vm.tokenizer, question, context).to(vm.model.device)
        fused = self._fuse(frames, times[selected], input_ids)
        with self._llm:  # the one answering path: VideoMini._generate -> answer.generate_with_evidence
            generated = vm._generate(input_ids, fused, tokens, max_new_tokens, False, on_token)
        chosen_times = times[selected]
        evidence = moments_from_scores(chosen_times, generated.frame_scores, top_k_evidence, "attention", 1.0 / fps,
                                       video=self.spec.url)
        answer = Answer(question=question, text=generated.text, evidence=evidence, frames_used=len(selected),
                        frames_total=len(seqs), frame_times_s=[round(float(t), 3) for t in chosen_times],
                        model=vm.model_id, prompt_tokens=generated.prompt_tokens,
                        completion_tokens=len(generated.token_ids))
        if len(selected) < len(seqs):
            answer.notes.append(f"{len(seqs)} frames retained, {len(selected)} chosen for the question")
        answer.context = context or None
        answer.timings_s = {"total": round(time.perf_counter() - started, 3)}
        return LiveAnswer(answer, [self.timeline.wall_iso(e.time_s) for e in answer.evidence], resolved)

    def _context(self, times_s: np.ndarray) -> str:
        if self.signals is None:
            return ""
        from videomini.signal_answer import signal_context

        return signal_context(self.signals.segments(), times_s)

    def alerts(self, timeout_s: float = 0.0) -> list[dict]:
        """Alert events not yet taken (waiting up to `timeout_s` for the first when there are none)."""
        events = []
        try:
            events.append(self._alerts.get(timeout=timeout_s) if timeout_s > 0 else self._alerts.get_nowait())
            while True:
                events.append(self._alerts.get_nowait())
        except queue.Empty:
            return events

    def wait_for_frames(self, count: int, timeout_s: float) -> bool:
        """Block until `count` frames are encoded (or the session ended, or the timeout): True when they were."""
        with self._progress:
            self._progress.wait_for(lambda: self.encoded >= count or self.ended.is_set(), timeout=timeout_s)
            return self.encoded >= count

    def wait_for_stream(self, stream_s: float, timeout_s: float | None = None) -> bool:
        """Block until a frame at or past `stream_s` is encoded (or the session ended): True when it was."""
        with self._progress:
            self._progress.wait_for(lambda: (self.latest_s or 0.0) >= stream_s or self.ended.is_set(),
                                    timeout=timeout_s)
            return (self.latest_s or 0.0) >= stream_s

    def status(self) -> dict:
        """Frames seen, lag behind live, memory: what `watch` and the server report."""
        latest = self.latest_s
        live_s = self.timeline.now_s() if self.spec.live else self.reader.end_s
        return {"source": self.spec.url, "started_utc": self.timeline.wall_iso(0.0),
                "frames_decoded": self.reader.decoded, "frames_encoded": self.encoded,
                "frames_dropped": self.buffer.dropped, "frames_retained": len(self.memory),
                "frames_in_ram": self.memory.recent_count,
                "stream_s": None if latest is None else round(latest, 3),
                "latest_wall_utc": None if latest is None else self.timeline.wall_iso(latest),
                "lag_s": None if latest is None else round(max(0.0, live_s - latest - 1.0 / self.options.fps), 3),
                "connections": self.reader.connections, "gaps": [g.to_dict() for g in self.timeline.gaps],
                "alerts": [{"question": s.question, "answer": "yes" if s.answer else "no", "p_yes": s.p_yes,
                            "evaluations": s.evaluations} for s in self.standing],
                "signals": None if self.signals is None else {
                    "segments": len(self.signals.segments()), "chunks": self.signals.chunks_done,
                    "chunks_dropped": self.signals.dropped_chunks},
                "resident_bytes": resident_bytes(), "ended": self.ended.is_set(), "error": self.error}

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop decoding, finish the frames already taken, hand over the last piece, delete a temporary archive."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        self.memory.close(delete=self._own_archive)

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def watch(vm: Any, source: str | SourceSpec, options: WatchOptions | None = None, on_event: EventFn | None = None,
          on_piece: PieceFn | None = None) -> LiveSession:
    """Start watching `source` (a file, URL, /dev/videoN or "-") with `vm`; SourceError (one line) for a source
    that cannot be used."""
    return LiveSession(vm, source, options, on_event, on_piece)
