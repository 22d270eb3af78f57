"""`videomini watch --serve`: the live session on the HTTP API and a live page, beside the library routes.

    GET  /live                 the live view: the newest frame, status, an ask box, alert events
    GET  /api/live/status      frames seen, lag behind live, memory, gaps, standing questions
    GET  /api/live/frame.jpg   the newest frame
    POST /api/live/ask         {"question", "max_new_tokens", "stream"}: an answer with evidence in both clocks
                               (stream: server-sent `token` events, then one `answer` event)
    GET  /api/live/events      server-sent events: `alert` (a standing question's answer changed), `gap`, `piece`
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from videomini import limits
from videomini.pipelines.serve.state import ServeError
from videomini.pipelines.serve.wire import error_event, sse

STATIC = Path(__file__).with_name("static")
SUBSCRIBER_QUEUE = 256  # events waiting for one slow page; beyond this it misses the oldest
HUB_EVENTS = ("alert", "gap", "piece", "dropped", "connected", "ended")


class LiveAskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=limits.QUESTION_MAX_CHARS)
    max_new_tokens: int = Field(128, ge=1, le=4096)
    stream: bool = False


class LiveHub:
    """Session events fanned out to every page listening (thread-safe `publish`, asyncio subscribers)."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._lock = threading.Lock()

    def publish(self, kind: str, details: dict) -> None:
        if kind not in HUB_EVENTS:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(_offer, queue, (kind, details))

    async def subscribe(self) -> AsyncIterator[tuple[str, dict]]:
        queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE)
        entry = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._subscribers.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            with self._lock:
                self._subscribers.remove(entry)


def _offer(queue: asyncio.Queue, item: Any) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def add_live_routes(app: FastAPI, session: Any, hub: LiveHub) -> None:
    """The live session's routes and page on `app` (auth and errors are the app's own); the OpenAI-compatible
    route answers about it as the model (or video) `videomini:live`."""
    app.state.videomini.live = session

    @app.get("/live", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "live.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/live/status", tags=["live"], summary="Frames seen, lag behind live, memory, gaps, alerts")
    def status() -> dict:
        return session.status()

    @app.get("/api/live/frame.jpg", tags=["live"], summary="The newest frame")
    def frame() -> Response:
        latest = session.memory.latest_jpeg()
        if latest is None:
            raise ServeError(404, "no frame yet")
        return Response(latest[1], media_type="image/jpeg", headers={"Cache-Control": "no-store",
                                                                     "X-Videomini-Frame": str(latest[0])})

    @app.post("/api/live/ask", tags=["live"], summary="Ask about the stream while it plays")
    async def ask(body: LiveAskRequest):
        body.question = limits.check_question(body.question)  # not blank, within the limits: 400 otherwise
        if not body.stream:
            return JSONResponse((await asyncio.to_thread(_ask, session, body, None)).to_dict())
        return StreamingResponse(_ask_events(session, body), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/live/events", tags=["live"], summary="Server-sent alert, gap and piece events")
    async def events():
        async def stream():
            yield sse("status", session.status())
            async for kind, details in hub.subscribe():
                yield sse(kind, details)
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _ask(session: Any, body: LiveAskRequest, on_token: Any) -> Any:
    """The session's answer; nothing seen yet (409) or a question over the limits (400) raise with their status."""
    return session.ask(body.question, max_new_tokens=body.max_new_tokens, on_token=on_token)


async def _ask_events(session: Any, body: LiveAskRequest) -> AsyncIterator[str]:
    """Tokens as they are generated (the answer runs in a worker thread), then the answer."""
    loop, tokens = asyncio.get_running_loop(), asyncio.Queue()
    worker = asyncio.ensure_future(asyncio.to_thread(
        _ask, session, body, lambda piece: loop.call_soon_threadsafe(tokens.put_nowait, piece)))
    while not worker.done() or not tokens.empty():
        getter = asyncio.ensure_future(tokens.get())
        done, _ = await asyncio.wait({getter, worker}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield sse("token", {"text": getter.result()})
        else:
            getter.cancel()
    try:
        yield sse("answer", worker.result().to_dict())
    except Exception as e:  # the stream has started: the reason and status go in the stream (wire.py)
        yield sse("error", error_event(e))
