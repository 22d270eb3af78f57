"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`, so OpenAI clients (and evaluation
harnesses built on them) can ask videomini unchanged.

The last user message's text parts are the question; a `video_url` or `image_url` part names what to ask about
(a library id `videomini:ID`, a file under an --allow-dir, or a base64 data URL); several `image_url` parts are
the frames of one video, in order (lmms-eval's `openai_compatible` backend sends a video so), optionally dated by
a `frame_times_s` list; with no media, the answer comes from the library's best moments. A `video_url` request
may carry `media_io_kwargs: {"video": {"num_frames": N}}` (lmms-eval's pass_video_url mode): at most N frames.
The answer's evidence times ride in an extra field, `evidence`, of the completion (and of the last chunk when
streamed); `videomini` carries the whole answer as `ask --json` prints it. Every field is checked against
videomini/limits.py before anything is decoded. Under `videomini watch --serve`, the model or video_url
`videomini:live` asks about the stream as it plays (its evidence dated in stream time and UTC).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Optional, Union

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from videomini import limits
from videomini.config import MAX_NEW_TOKENS, TOP_K
from videomini.errors import LimitExceeded
from videomini.pipelines.serve import jobs
from videomini.pipelines.serve.state import ServeError, ServerState
from videomini.pipelines.serve.wire import error_body, error_status, sse

LIVE_MODEL = "videomini:live"  # the model (or video_url) that names the stream `watch --serve` is watching


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, ... are accepted; decoding is greedy
    model: Optional[str] = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    max_tokens: Optional[int] = Field(None, ge=1, le=limits.MAX_NEW_TOKENS_MAX)
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=limits.MAX_NEW_TOKENS_MAX)


def parse_messages(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """(question, [(part type, url)]) from the last user message."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise ServeError(400, "messages: no user message")
    content = users[-1].content
    texts: list[str] = []
    media: list[tuple[str, str]] = []
    for part in [{"type": "text", "text": content}] if isinstance(content, str) else content or []:
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text") or "", str):
                raise ServeError(400, "messages: a text part needs {\"text\": \"...\"}")
            texts.append(part.get("text") or "")
        elif kind in ("image_url", "video_url"):
            ref = part.get(kind)
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise ServeError(400, f"messages: a {kind} part needs {{\"url\": ...}}")
            media.append((kind, url))
        else:
            raise ServeError(400, f"messages: unsupported content part type {kind!r} (text, image_url, video_url)")
    question = "\n".join(t.strip() for t in texts if t.strip())
    if not question:
        raise ServeError(400, "messages: the user message has no text (the question)")
    if len(media) > limits.FRAMES_PER_REQUEST_MAX:
        raise LimitExceeded(f"messages: {len(media):,} media parts, over the limit of "
                            f"{limits.FRAMES_PER_REQUEST_MAX:,} (FRAMES_PER_REQUEST_MAX)")
    return limits.check_question(question, "messages"), media


def choose_job(state: ServerState, body: ChatRequest, question: str, media: list[tuple[str, str]],
               max_new_tokens: int):
    """No media: the library answers. One video or image: `ask` on it. Several images: the frames of ONE video
    (what evaluation harnesses send: lmms-eval's openai backends decode a video client-side into PNG frames)."""
    if body.model == LIVE_MODEL or [url for _, url in media] == [LIVE_MODEL]:
        return jobs.live_answer(state, question, max_new_tokens)  # the stream `watch --serve` is watching
    if not media:
        return jobs.library_answer(state, question, top_k=TOP_K, max_frames=None, max_new_tokens=max_new_tokens)
    kinds = {kind for kind, _ in media}
    if len(media) > 1 and kinds == {"image_url"}:
        times = frame_times(body, len(media))  # checked before anything is decoded
        frames, pixels = decode_frames(state, [url for _, url in media])
        return jobs.frames_answer(state, frames, times, question, max_new_tokens, pixels)
    if len(media) > 1:
        raise ServeError(400, "messages: one video, one image, or the frames of one video (image_url parts) "
                              "per request")
    kind, url = media[0]
    max_frames = requested_frames(body)
    path = state.media_file(url, kind)
    return jobs.file_answer(state, path, question, max_frames, max_new_tokens)


def requested_frames(body: ChatRequest) -> int | None:
    """`media_io_kwargs: {"video": {"num_frames": N}}` (lmms-eval's pass_video_url mode): N within FRAMES_MAX."""
    kwargs = (body.model_extra or {}).get("media_io_kwargs")
    if kwargs is None:
        return None
    video = kwargs.get("video") if isinstance(kwargs, dict) else None
    if not isinstance(kwargs, dict) or not isinstance(video, (dict, type(None))):
        raise ServeError(400, 'media_io_kwargs: expected {"video": {"num_frames": N}}')
    return limits.check_max_frames((video or {}).get("num_frames"), "media_io_kwargs.video.num_frames")


def decode_frames(state: ServerState, urls: list[str]) -> tuple[Any, int]:
    """image_url parts -> ((N, H, W, 3) uint8 in the order given, the pixels taken from the server's budget);
    the frames of one video share one size. Sizes come from the headers, so nothing is decoded that would not
    fit; every upload is removed, whatever happens."""
    import numpy as np
    from PIL import Image

    from videomini.pipelines.serve.state import check_image

    paths: list = []
    try:
        sizes = []
        for i, url in enumerate(urls):
            paths.append(state.media_file(url, f"image_url {i + 1}"))
            sizes.append(check_image(paths[-1], f"image_url {i + 1}"))  # from the header: nothing decoded yet
        if len(set(sizes)) > 1:
            raise ServeError(400, f"messages: the frames of one video must share one size, got {len(set(sizes))} "
                                  "sizes")
        pixels = state.pixels.take(sum(width * height for width, height in sizes))
        try:
            frames = []
            for path in paths:
                with Image.open(path) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            return np.stack(frames), pixels
        except BaseException:
            state.pixels.give_back(pixels)
            raise
    finally:
        for path in paths:
            state.discard(path)  # a decoded frame is not kept


def frame_times(body: ChatRequest, n: int):
    """The frames' times when the request gives them (`frame_times_s`, an extension), else None (0, 1, 2 ... s)."""
    import numpy as np

    given = (body.model_extra or {}).get("frame_times_s")
    if given is None:
        return None
    numbers = isinstance(given, list) and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in given)
    times = np.asarray(given, dtype=float) if numbers else np.zeros(0)
    if len(times) != n or not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise ServeError(400, f"frame_times_s: give {n} increasing times in seconds, one per frame")
    return times


def usage(answer: Any) -> dict:
    """OpenAI's token accounting: what the LLM read (the prompt with one token per frame) and generated."""
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def completion(answer: Any, completion_id: str, created: int) -> dict:
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": answer.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop", "logprobs": None}], "usage": usage(answer),
            "evidence": [e.to_dict() for e in answer.evidence], "videomini": answer.to_dict()}


def add_chat_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/models", tags=["openai"], summary="The model this server answers with")
    def models():
        served = [state.model_id()] + ([LIVE_MODEL] if state.live is not None else [])
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "videomini"}
                                           for name in served]}

    @app.post("/v1/chat/completions", tags=["openai"], summary="OpenAI-compatible chat completion (ask)")
    async def chat(body: ChatRequest):
        question, media = parse_messages(body.messages)
        wanted = body.max_completion_tokens or body.max_tokens or MAX_NEW_TOKENS
        job = choose_job(state, body, question, media, min(wanted, state.config.max_new_tokens))
        try:
            generation = jobs.Generation(state, job)
        except BaseException:
            job.cleanup()  # refused before the job could run and clean up (uploads, decoded pixels)
            raise
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            return completion(await generation.answer(), completion_id, created)

        async def chunks():
            model = state.model_id()  # the model that answers, as in the non-streamed completion
            base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}

            def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
                return sse(None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                       "logprobs": None}], **extra})

            yield chunk({"role": "assistant", "content": ""})
            streamed = False
            async for piece in generation.tokens():
                streamed = True
                yield chunk({"content": piece})
            try:
                answer = await generation.answer()
            except Exception as e:  # the stream has started: the reason goes in the stream, in OpenAI's shape
                status, message, _ = error_status(e)
                yield sse(None, error_body("/v1/chat/completions", status, message))
                return
            if not streamed and answer.text:  # answered from stored signals: no token stream, the text at once
                yield chunk({"content": answer.text})
            yield chunk({}, "stop", usage=usage(answer), evidence=[e.to_dict() for e in answer.evidence],
                        videomini=answer.to_dict())
            yield sse(None, "[DONE]")

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
