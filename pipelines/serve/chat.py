"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`, so OpenAI clients (and evaluation
harnesses built on them) can ask videomini unchanged.

The last user message's text parts are the question; a `video_url` or `image_url` part names what to ask about
(a library id `videomini:ID`, a file under an --allow-dir, or a base64 data URL); with none, the answer comes
from the library's best moments. The answer's evidence times ride in an extra field, `evidence`, of the
completion (and of the last chunk when streamed); `videomini` carries the whole answer as `ask --json` prints it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Optional, Union

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from videomini.pipelines.serve import jobs
from videomini.pipelines.serve.state import ServeError, ServerState
from videomini.pipelines.serve.wire import one_line, sse


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, ... are accepted; decoding is greedy
    model: Optional[str] = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)


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
            texts.append(str(part.get("text") or ""))
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
    return question, media


def choose_job(state: ServerState, question: str, media: list[tuple[str, str]], max_new_tokens: int):
    if not media:
        return jobs.library_answer(state, question, top_k=10, max_frames=64, max_new_tokens=max_new_tokens)
    if len(media) > 1:
        raise ServeError(400, "messages: one video or image per request")
    kind, url = media[0]
    return jobs.file_answer(state, state.media_file(url, kind), question, None, max_new_tokens)


def completion(answer: Any, completion_id: str, created: int) -> dict:
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": answer.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop", "logprobs": None}],
            "evidence": [e.to_dict() for e in answer.evidence], "videomini": answer.to_dict()}


def add_chat_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/models", tags=["openai"], summary="The model this server answers with")
    def models():
        return {"object": "list", "data": [{"id": state.model_id(), "object": "model", "created": 0,
                                            "owned_by": "videomini"}]}

    @app.post("/v1/chat/completions", tags=["openai"], summary="OpenAI-compatible chat completion (ask)")
    async def chat(body: ChatRequest):
        question, media = parse_messages(body.messages)
        wanted = body.max_completion_tokens or body.max_tokens or 256
        job = choose_job(state, question, media, min(wanted, state.config.max_new_tokens))
        generation = jobs.Generation(state, job)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            return completion(await generation.answer(), completion_id, created)

        async def chunks():
            model = body.model or "videomini"
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
            except ServeError as e:
                yield sse(None, {"error": {"message": one_line(e.message), "type": "invalid_request_error",
                                           "code": e.status}})
                return
            if not streamed and answer.text:  # answered from stored signals: no token stream, the text at once
                yield chunk({"content": answer.text})
            yield chunk({}, "stop", evidence=[e.to_dict() for e in answer.evidence], videomini=answer.to_dict())
            yield sse(None, "[DONE]")

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
