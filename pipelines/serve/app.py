"""The ASGI app: the page, the HTTP API (/api/*, /media, /thumbnails), the OpenAI-compatible routes (/v1/*),
auth, body-size limits, and one error shape: a 4xx with a one-line reason, never a traceback."""

from __future__ import annotations

import hmac
import math
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware

from videomini import __version__, limits
from videomini.config import MAX_NEW_TOKENS, TOP_K
from videomini.errors import VideominiError, one_line
from videomini.pipelines.serve import jobs
from videomini.pipelines.serve.state import ServeConfig, ServeError, ServerState, host_name
from videomini.pipelines.serve.wire import error_event, error_response, exception_response, sse

STATIC = Path(__file__).with_name("static")
TOKEN_COOKIE = "videomini_token"  # set by the page, so <video> and <img> requests carry the token too
VideoId = Annotated[int, FastAPIPath(ge=0, le=limits.ID_MAX, description="A video's id in the catalog")]


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=limits.QUESTION_MAX_CHARS)
    video: Optional[int] = Field(None, ge=0, le=limits.ID_MAX,
                                 description="An indexed video's id: ask about that whole video. "
                                             "Omitted: answer over the library's best moments.")
    top_k: int = Field(TOP_K, ge=1, le=limits.TOP_K_MAX)
    max_frames: Optional[int] = Field(None, ge=1, le=limits.FRAMES_MAX)
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1, le=limits.MAX_NEW_TOKENS_MAX)
    stream: bool = Field(False, description="Server-sent events: `token` events, then one `answer` event.")


class Guard(BaseHTTPMiddleware):
    """The Host served (DNS-rebinding protection, token or not); a bearer token (header or the page's cookie) on
    every route but the page files; a declared body size over the limit is refused before it is read."""

    def __init__(self, app, config: ServeConfig, host_names: frozenset[str] | None) -> None:
        super().__init__(app)
        self.config, self.host_names = config, host_names

    async def dispatch(self, request: Request, call_next):
        path = request.url.path
        host = request.headers.get("host", "")
        if self.host_names is not None and host and host_name(host) not in self.host_names:
            return error_response(path, 421, f"Host {host_name(host)[:100]!r} is not served here (DNS-rebinding "
                                             "protection); start the server with --allow-host NAME to serve it")
        public = path == "/" or path == "/favicon.ico" or path.startswith("/static/")
        if self.config.token and not public:
            given = request.headers.get("authorization", "")
            given = given[7:] if given.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")
            if not hmac.compare_digest(given.encode(), self.config.token.encode()):
                return error_response(path, 401, "missing or wrong token (send 'Authorization: Bearer TOKEN')",
                                      {"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.config.max_body_bytes):
            return error_response(path, 413, f"request body larger than {self.config.max_body_bytes} bytes")
        return await call_next(request)


class BodyLimit:
    """Counts the bytes of bodies sent without a Content-Length (chunked): past the limit, 413."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if seen > self.max_bytes:
                raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


def create_app(config: ServeConfig) -> FastAPI:
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        state.close()

    # /docs and /redoc would load Swagger's scripts from a CDN: the schema is served, the CDN pages are not
    app = FastAPI(title="videomini", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Search and ask an indexed video library; an OpenAI-compatible chat endpoint.")
    app.state.videomini = state
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(Guard, config=config, host_names=state.host_names)
    install_error_handlers(app)
    add_api_routes(app, state)
    add_media_routes(app, state)
    from videomini.pipelines.serve.chat import add_chat_routes

    add_chat_routes(app, state)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def install_error_handlers(app: FastAPI) -> None:
    """Every error in the route's shape: ours by their own status (wire.py), the framework's validation errors
    as 400 naming the field, its own 404/405 (an unknown route or method) as they are, anything else 500."""

    @app.exception_handler(VideominiError)
    async def expected(request: Request, exc: VideominiError):
        return exception_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error_response(request.url.path, 400, validation_reason(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        reason = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else \
            f"no route {request.url.path} (see /openapi.json)"
        if exc.status_code == 405:
            reason = f"{request.method} is not allowed on {request.url.path}"
        return error_response(request.url.path, exc.status_code, str(reason), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return exception_response(request.url.path, exc)


def validation_reason(errors: Any) -> str:
    """The first schema error as `field: reason` (malformed JSON said as such, with where it breaks)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        at = next((part for part in first.get("loc", ()) if isinstance(part, int)), None)
        cause = (first.get("ctx") or {}).get("error")
        return f"body: malformed JSON{f' at character {at}' if at is not None else ''}" + \
            (f" ({cause})" if cause else "")
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def add_api_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/api/search", tags=["library"], summary="Moments matching a plain-language query")
    def search(q: str = Query(..., max_length=limits.QUERY_MAX_CHARS, description="What to look for"),
               top_k: int = Query(TOP_K, ge=1, le=limits.TOP_K_MAX),
               signal: list[Literal["visual", "speech", "ocr"]] = Query([], description="Limit to these signals")):
        query = limits.check_query(q, "q")
        moments, notes = jobs.search(state, query, top_k, tuple(signal) or jobs.SIGNALS)
        return JSONResponse(moments, headers={"X-Videomini-Notes": one_line("; ".join(notes), 500)} if notes else None)

    @app.post("/api/ask", tags=["library"], summary="Answer over the library, or about one indexed video")
    async def ask(body: AskRequest):
        question = limits.check_question(body.question)
        max_new_tokens = min(body.max_new_tokens, state.config.max_new_tokens)
        if body.video is not None:
            job = jobs.file_answer(state, state.video_file(body.video), question, body.max_frames,
                                   max_new_tokens)
        else:
            job = jobs.library_answer(state, question, body.top_k, body.max_frames, max_new_tokens)
        generation = jobs.Generation(state, job)
        if not body.stream:
            return (await generation.answer()).to_dict()
        return StreamingResponse(ask_events(generation), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/videos", tags=["library"], summary="The library: stats (as `videomini library --json`), videos")
    def videos():
        with state.storage() as storage:
            return {"stats": storage.stats(), "videos": storage.videos()}

    @app.get("/api/videos/{video_id}", tags=["library"], summary="One video's catalog row and text segments")
    def video(video_id: VideoId):
        row = state.video_row(video_id)
        with state.storage() as storage:
            row["segments"] = storage.segments(video_id) if row["status"] == "done" else []
        return row

    @app.get("/api/health", tags=["server"])
    def health():
        return {"ok": True, "version": __version__, "library": str(state.library.root) if state.library else None,
                "generation_in_flight": state.queue.in_flight}


async def ask_events(generation: jobs.Generation):
    async for piece in generation.tokens():
        yield sse("token", {"text": piece})
    try:
        answer = await generation.answer()
    except Exception as e:  # the stream has started: the reason goes in the stream
        yield sse("error", error_event(e))
        return
    yield sse("answer", answer.to_dict())


def add_media_routes(app: FastAPI, state: ServerState) -> None:
    thumbnail_locks: dict[str, threading.Lock] = {}
    locks_guard = threading.Lock()

    @app.get("/media/{video_id}", tags=["media"], summary="A library video's file, by id (HTTP range requests)")
    def media(video_id: VideoId):
        return FileResponse(state.video_file(video_id), headers={"Cache-Control": "private, max-age=60"})

    @app.get("/thumbnails/{video_id}/{t}", tags=["media"], summary="The frame of a library video at t seconds")
    def thumbnail(video_id: VideoId, t: float):
        from videomini.search import SearchMoment, write_thumbnails

        row = state.video_row(video_id)
        duration = float(row.get("duration_s") or 0.0)
        if not math.isfinite(t) or t < 0 or (duration and t > duration + 1.0):
            raise ServeError(400, f"t: {t} is outside video {video_id} (0 to {duration:.1f} s)")
        path = state.video_file(video_id)
        key = f"{video_id}/{t:.3f}"
        with locks_guard:
            lock = thumbnail_locks.setdefault(key, threading.Lock())
        with lock:
            folder = state.scratch / "thumbnails" / str(video_id) / f"{t:.3f}"
            done = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
            if not done:
                moment = SearchMoment(str(path), t, t, 0.0, t)
                write_thumbnails([moment], folder)
                if moment.thumbnail is None:
                    raise ServeError(404, f"video {video_id}: no frame could be read at {t:.3f} s")
                done = [Path(moment.thumbnail)]
        return FileResponse(done[0], media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
