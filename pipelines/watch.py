"""`videomini watch`: the job around a live session — the model, the session, questions read while it plays,
standing-question events, and the stream committed into a library in pieces through the same commit as `index`
(`video_commit.commit_video`: shard durable, then `done`, then a new index segment), so `search` finds it while the
stream runs and a crash loses at most the piece in progress."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from videomini.errors import VideominiError
from videomini.live import LiveSession, Piece, WatchOptions, watch
from videomini.pipelines.video_commit import (
    EncodedVideo,
    IndexReport,
    VideoAssembly,
    commit_video,
    default_text_embedder,
)

PIECES_FOLDER = "live"  # <library>/live/<session start UTC>/piece-NNNNNN-<piece start UTC>.mp4
SIGNAL_WAIT_CHUNKS = 3  # a piece waits at most this many signal chunks for its speech / on-screen text
PIECE_QUEUE = 2  # pieces waiting to be committed; the encoder waits beyond this (a file) or drops frames (live)

EventFn = Callable[[str, dict], None]


class LibraryPieces:
    """Commits each piece of a session into the library at `library_dir` on its own thread, and removes pieces
    that end more than `retain_s` before the newest (catalog rows, index entries, shards and piece files)."""

    def __init__(self, library_dir: str | Path, model_id: str, fps: float, retain_s: float,
                 on_event: EventFn | None = None, wait_s: float = 30.0, signals: tuple[str, ...] = ()):
        from videomini.storage import LibraryStore

        self.library_dir, self.model_id, self.fps, self.retain_s = Path(library_dir).absolute(), model_id, fps, retain_s
        self.on_event = on_event or (lambda kind, details: None)
        self.wait_s, self.signals = wait_s, tuple(signals)
        self.text_embedder = default_text_embedder() if signals else None  # MiniLM, loaded once
        LibraryStore(self.library_dir, create=True, wait_s=wait_s).close()  # create it (one line if it cannot be)
        self.folder: Path | None = None
        self.committed: list[tuple[Path, float]] = []  # (piece file, end in stream seconds)
        self.errors: list[str] = []
        self._queue: queue.Queue[tuple[Piece, Any] | None] = queue.Queue(maxsize=PIECE_QUEUE)
        self._thread = threading.Thread(target=self._run, name="videomini-live-library", daemon=True)
        self._thread.start()

    def add(self, piece: Piece, session: LiveSession) -> None:
        """Queue one piece (blocks while PIECE_QUEUE pieces wait)."""
        self._queue.put((piece, session))

    def close(self) -> None:
        """Commit what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            piece, session = item
            timeline = session.timeline
            try:
                path = self._commit(piece, timeline, self._segments(piece, session))
                self.on_event("piece", {"path": str(path), "frames": len(piece.times_s),
                                        "start_utc": timeline.wall_iso(piece.start_s)})
                self._expire(piece.times_s[-1])
            except Exception as e:  # one line; the next piece tries again
                message = f"{self.library_dir}: piece {piece.index} not stored ({type(e).__name__}: {e})"
                self.errors.append(message)
                self.on_event("error", {"error": message})

    def _segments(self, piece: Piece, session: LiveSession) -> list[dict]:
        """The piece's speech / on-screen text, on its own clock, once extracted (waiting at most a few chunks:
        a signal that falls that far behind gives the piece what it has)."""
        if session.signals is None:
            return []
        end_s = piece.times_s[-1] + 1.0 / self.fps
        session.signals.wait_until(end_s, timeout_s=SIGNAL_WAIT_CHUNKS * session.options.signal_chunk_s)
        return [{"source": seg.source, "text": seg.text, "start_s": round(seg.start_s - piece.start_s, 3),
                 "end_s": round(seg.end_s - piece.start_s, 3)}
                for seg in session.signals.segments() if piece.start_s <= seg.start_s < end_s]

    def _commit(self, piece: Piece, timeline: Any, segments: list[dict]) -> Path:
        from videomini.live.pieces import write_piece_video
        from videomini.storage import LibraryStore

        if self.folder is None:
            self.folder = self.library_dir / PIECES_FOLDER / _stamp(timeline.wall(0.0))
        times = np.asarray(piece.times_s, dtype=np.float64) - piece.start_s
        path = write_piece_video(self.folder / f"piece-{piece.index:06d}-{_stamp(timeline.wall(piece.start_s))}.mp4",
                                 piece.frames, times)
        with LibraryStore(self.library_dir, create=True, wait_s=self.wait_s) as library:
            item = library.plan([path], model_id=self.model_id)[0]
            video_id = library.mark_running(path, item.fingerprint, model_id=self.model_id, fps=self.fps)
            result = EncodedVideo(str(path), embeddings=np.stack(piece.embeddings), timestamps_s=times,
                                  signals=list(self.signals), segments=segments,
                                  duration_s=float(times[-1]) + 1.0 / self.fps)
            report = IndexReport()
            commit_video(library, VideoAssembly(item, video_id), result, model_id=self.model_id, fps=self.fps,
                         report=report, text_embedder=self.text_embedder)
            if report.failed:
                raise RuntimeError(report.failed[0][1])
            library.update_index()
        self.committed.append((path, piece.times_s[-1]))
        return path

    def _expire(self, newest_s: float) -> None:
        from videomini.storage import LibraryStore

        old = [(path, end) for path, end in self.committed if newest_s - end > self.retain_s]
        if not old:
            return
        with LibraryStore(self.library_dir, create=True, wait_s=self.wait_s) as library:
            library.remove([path for path, _ in old])
        for path, end in old:
            path.unlink(missing_ok=True)
            self.committed.remove((path, end))


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def start_watch(vm: Any, source: str, options: WatchOptions, library_dir: str | Path | None = None,
                library_retain_s: float = 86400.0, on_event: EventFn | None = None) -> tuple[LiveSession, Any]:
    """A running session on `source` and, with `library_dir`, the LibraryPieces committing it (or None)."""
    on_event = on_event or (lambda kind, details: None)
    pieces = None
    session_box: list[LiveSession] = []
    if library_dir is not None:
        model_id = str(vm.model_id)
        pieces = LibraryPieces(library_dir, model_id, options.fps, library_retain_s, on_event,
                               signals=options.signals)
    on_piece = (lambda piece: pieces.add(piece, session_box[0])) if pieces else None
    try:
        session = watch(vm, source, options, on_event=on_event, on_piece=on_piece)
    except BaseException:
        if pieces:
            pieces.close()
        raise
    session_box.append(session)
    return session, pieces


def answer_questions(session: LiveSession, questions: Iterable[str], on_answer: Callable[[str, Any], None],
                     on_token: Callable[[str], None] | None = None, max_new_tokens: int | None = None) -> None:
    """Answer each question as it comes (the stream keeps decoding meanwhile); a question before any frame, or
    about a time not retained, gets its one-line reason instead of an answer."""
    for question in questions:
        question = question.strip()
        if not question:
            continue
        session.wait_for_frames(1, session.options.timeout_s)  # a question typed before the first frame waits
        try:
            on_answer(question, session.ask(question, max_new_tokens=max_new_tokens, on_token=on_token))
        except VideominiError as e:  # nothing seen yet, a question over the limits: its reason, the stream goes on
            on_answer(question, e)


def serve_session(session: LiveSession, hub: Any, library_dir: str | Path | None, host: str, port: int,
                  token: str | None, on_listening: Callable[[str], None]) -> None:
    """The live session on the HTTP API and the /live page (and, with a library, `serve`'s library routes),
    until interrupted. `hub` (serve.live.LiveHub) must be hearing the session's events."""
    from videomini.pipelines.serve import ServeConfig, run
    from videomini.pipelines.serve.live import add_live_routes

    config = ServeConfig(library=library_dir, model=str(session.vm.model_id), token=token)
    run(config, host=host, port=port, on_listening=on_listening,
        extend=lambda app: add_live_routes(app, session, hub))
