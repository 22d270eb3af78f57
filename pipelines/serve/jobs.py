"""The server's calls into the library's jobs (search, ask over the library, ask about one file), and the bridge
that runs a generation on the device's queue while its tokens arrive on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from videomini.errors import VideominiError
from videomini.pipelines.serve.state import ServeError, ServerState

SIGNALS = ("visual", "speech", "ocr")
TokenFn = Callable[[str], None]


class Cancelled(VideominiError):
    """The client went away: generation stops at its next token (nobody is left to read a status)."""

    exit_code, http_status = 130, 499  # as an interrupted command; nginx's "client closed request"


def search(state: ServerState, query: str, top_k: int, signals: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """The search job's moments as the CLI's --json prints them, plus each video's id and a thumbnail URL."""
    from videomini.search import search_library

    if state.library is None:
        raise ServeError(404, "this server has no library (start it with --library DIR)")
    notes: list[str] = []
    moments = search_library(state.library.root, query, top_k=top_k, text_tower=state.text_tower(),
                             signals=signals, notes=notes)
    with state.storage() as storage:
        ids = {m.video: (storage.video(m.video) or {}).get("id") for m in moments}
    out = []
    for moment in moments:
        row = moment.to_dict()
        row["video_id"] = ids[moment.video]
        row["thumbnail"] = f"/thumbnails/{ids[moment.video]}/{moment.best_s:.3f}" if ids[moment.video] else None
        out.append(row)
    return out, notes


def library_answer(state: ServerState, question: str, top_k: int, max_frames: int | None,
                   max_new_tokens: int) -> Callable[[TokenFn], Any]:
    """ask --library through the ask policy (videomini/ask_policy.py): LLaVA-Mini over the best moments, the stored
    speech / on-screen text when no model loads; the server's model is loaded once and reused."""
    from videomini.ask_policy import ask_library

    if state.library is None:
        raise ServeError(404, "this server has no library (start it with --library DIR)")

    def job(on_token: TokenFn) -> Any:
        return ask_library(state.library.root, question, model_id=state.config.model, top_k=top_k,
                           max_frames=max_frames, max_new_tokens=max_new_tokens, on_token=on_token,
                           load=lambda _model_id: state.model())

    job.cleanup = lambda: None  # type: ignore[attr-defined]  # nothing held
    return job


def file_answer(state: ServerState, path: Path, question: str, max_frames: int | None,
                max_new_tokens: int) -> Callable[[TokenFn], Any]:
    """ask VIDEO (or image) through the ask policy: the whole file, the question fused with every frame."""
    from videomini.ask_policy import ask_video

    def job(on_token: TokenFn) -> Any:
        try:
            return ask_video(path, question, model_id=state.model_id(), max_frames=max_frames,
                             max_new_tokens=max_new_tokens, on_token=on_token, load=lambda _model_id: state.model())
        finally:
            state.discard(path)  # a decoded upload is not kept

    job.cleanup = lambda: state.discard(path)  # type: ignore[attr-defined]  # when the queue refuses the job
    return job


def live_answer(state: ServerState, question: str, max_new_tokens: int) -> Callable[[TokenFn], Any]:
    """The live session's answer about what the stream has shown so far (`watch --serve`), as the chat route's
    model or video `videomini:live`."""
    if state.live is None:
        raise ServeError(404, "videomini:live: this server watches no stream (start it with videomini watch --serve)")
    session = state.live

    def job(on_token: TokenFn) -> Any:
        return session.ask(question, max_new_tokens=max_new_tokens, on_token=on_token)

    job.cleanup = lambda: None  # type: ignore[attr-defined]  # nothing held
    return job


def frames_answer(state: ServerState, frames: Any, times_s: Any, question: str, max_new_tokens: int,
                  pixels: int = 0) -> Callable[[TokenFn], Any]:
    """The frames of one video, in order (as an evaluation harness sends them): one token each, the question
    fused over all of them, as `ask` does after decoding. Their `pixels` go back to the server's budget when the
    job ends (or when the queue refuses it), once."""
    held = [pixels]

    def cleanup() -> None:
        taken, held[0] = held[0], 0
        state.pixels.give_back(taken)

    def job(on_token: TokenFn) -> Any:
        try:
            return state.model().ask_frames(frames, question, timestamps_s=times_s, max_new_tokens=max_new_tokens,
                                            on_token=on_token, video=f"{len(frames)} frames")
        finally:
            cleanup()

    job.cleanup = cleanup  # type: ignore[attr-defined]
    return job


class Generation:
    """A job on the device's queue (503 when full, raised here, before any response starts); its tokens are
    handed to the event loop as they are generated; if the client leaves, the job stops at its next token."""

    def __init__(self, state: ServerState, job: Callable[[TokenFn], Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.future = state.queue.submit(lambda: job(self._on_token))
        self.future.add_done_callback(lambda _: self.loop.call_soon_threadsafe(self.events.put_nowait, None))

    def _on_token(self, piece: str) -> None:
        if self.cancelled.is_set():
            raise Cancelled()
        self.loop.call_soon_threadsafe(self.events.put_nowait, piece)

    async def tokens(self) -> AsyncIterator[str]:
        try:
            while (piece := await self.events.get()) is not None:
                yield piece
        finally:
            if not self.future.done():
                self.cancelled.set()

    async def answer(self) -> Any:
        """The finished Answer (or the job's exception: the error handlers give it its status)."""
        return await asyncio.wrap_future(self.future)
