"""`videomini serve` through an ASGI client: the HTTP API (same JSON as the CLI), streaming, media with range
requests, thumbnails, the OpenAI-compatible routes, the generation queue, and every security case."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from videomini.pipelines.serve import ServeConfig, ServeError, check_bind, create_app, run
from videomini.search import relevance, search_library
from videomini.storage import LibraryStore

TOLERANCE_S = 2.0


@pytest.fixture(scope="module")
def library(serve_library):
    return serve_library[0]


@pytest.fixture(scope="module")
def client(serve_library, checkpoint, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    app = create_app(ServeConfig(library=serve_library[0], model=str(checkpoint), device="cpu",
                                 allow_dirs=[allowed], max_body_bytes=1 << 20))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        c.allowed = allowed
        yield c


def video_id(client, name: str) -> int:
    videos = client.get("/api/videos").json()["videos"]
    return next(v["id"] for v in videos if Path(v["path"]).name == name)


def sse_events(lines) -> list[tuple[str | None, object]]:
    events, event = [], None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
            events.append((event, data if data == "[DONE]" else json.loads(data)))
            event = None
    return events




# ----------------------------------------------------------------------------------------------- the API


def test_search_returns_the_cli_json_with_ids_and_thumbnails(client, library, serve_library):
    narrated = serve_library[1]["narrated.mp4"]
    response = client.get("/api/search", params={"q": "the shop never closes, day or night", "top_k": 3})
    assert response.status_code == 200, response.text
    moments = response.json()
    best = moments[0]
    assert Path(best["video"]).name == "narrated.mp4"
    (shown,) = [m for m in best["matches"] if m["signal"] == "ocr"]
    assert shown["text"] == "OPEN 24 HOURS" and abs(shown["start_s"] - narrated.captions[0].start_s) <= TOLERANCE_S
    # the same moments as `videomini search --json` (the search job's dicts), plus the video's id and a thumbnail URL
    cli = [m.to_dict() for m in search_library(library, "the shop never closes, day or night", top_k=3)]
    strip = [{k: v for k, v in m.items() if k not in ("video_id", "thumbnail")} for m in moments]
    assert strip == [{k: v for k, v in m.items() if k != "thumbnail"} for m in cli]
    thumb = client.get(best["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8" and len(thumb.content) > 1000


def test_search_says_how_relevant_each_moment_is_and_when_nothing_matches(client):
    found = client.get("/api/search", params={"q": "the shop never closes, day or night", "top_k": 3})
    best = found.json()[0]
    assert best["confident"] and best["relevance"] == relevance(best["score"], best["margin"]) >= 0.5
    assert best["name"] == "narrated.mp4"
    absent = client.get("/api/search", params={"q": "a penguin sliding on the ice", "top_k": 3})
    assert absent.status_code == 200 and all(not m["confident"] and m["relevance"] < 0.5 for m in absent.json())
    assert "nothing in the library matches" in absent.headers["X-Videomini-Notes"]


def test_search_limits_to_a_signal(client):
    moments = client.get("/api/search", params={"q": "the loading bay", "signal": "speech"}).json()
    assert all(m["signal"] == "speech" for moment in moments for m in moment["matches"])
    moments = client.get("/api/search", params={"q": "the loading bay", "signal": "ocr"}).json()
    assert moments[0]["matches"][0]["text"] == "LOADING DOCK"


def test_videos_and_one_video(client, library):
    body = client.get("/api/videos").json()
    with LibraryStore(library) as storage:  # what `videomini library --json` prints
        assert body["stats"] == storage.stats()
    assert sorted(Path(v["path"]).name for v in body["videos"]) == ["narrated.mp4", "silent.mp4"]
    one = client.get(f"/api/videos/{video_id(client, 'silent.mp4')}").json()
    assert one["status"] == "done" and [s["text"] for s in one["segments"]] == ["LOADING DOCK"]


def test_media_supports_range_requests(client, serve_library):
    vid = video_id(client, "narrated.mp4")
    data = serve_library[1]["narrated.mp4"].path.read_bytes()
    whole = client.get(f"/media/{vid}")
    assert whole.status_code == 200 and whole.content == data
    part = client.get(f"/media/{vid}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"


def test_ask_over_the_library_streams_tokens_then_the_answer(client):
    with client.stream("POST", "/api/ask", json={"question": "Where is the train going?", "stream": True,
                                                 "max_new_tokens": 6}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    tokens = [data["text"] for event, data in events if event == "token"]
    (answer,) = [data for event, data in events if event == "answer"]
    assert len(tokens) >= 1 and "".join(tokens).strip() == answer["text"]
    assert answer["generated_by"] == "llava-mini" and answer["frames_used"] > 0
    assert answer["evidence"] and all(Path(e["video"]).name in ("narrated.mp4", "silent.mp4")
                                      for e in answer["evidence"])


def test_ask_one_video_equals_the_cli(client, serve_library, checkpoint):
    vid = video_id(client, "silent.mp4")
    answer = client.post("/api/ask", json={"question": "What is written?", "video": vid, "max_new_tokens": 5})
    assert answer.status_code == 200, answer.text
    vm = client.app.state.videomini.model()  # the server's model, loaded once: as `videomini ask --json`
    cli = vm.ask(serve_library[1]["silent.mp4"].path, "What is written?", max_new_tokens=5).to_dict()
    assert answer.json()["text"] == cli["text"]
    assert answer.json()["frame_times_s"] == cli["frame_times_s"]


# ----------------------------------------------------------------------------------------------- OpenAI shape


def test_chat_completion_about_a_library_video_has_evidence(client):
    vid = video_id(client, "silent.mp4")
    body = {"model": "anything", "max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"videomini:{vid}"}},
                                     {"type": "text", "text": "What is written?"}]}]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["role"] == "assistant"
    assert out["choices"][0]["message"]["content"] == out["videomini"]["text"]
    assert out["evidence"] and all(0.0 <= e["time_s"] <= 4.0 for e in out["evidence"])
    usage = out["usage"]  # what the LLM read (the question and one token per frame) and generated
    assert usage["prompt_tokens"] > out["videomini"]["frames_used"] and 1 <= usage["completion_tokens"] <= 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == out["model"]


def test_chat_accepts_an_image_data_url_and_a_file_under_an_allowed_dir(client, serve_library):
    import io
    import shutil

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = {"max_tokens": 3, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What colour?"}]}]}
    out = client.post("/v1/chat/completions", json=body)
    assert out.status_code == 200, out.text
    assert out.json()["videomini"]["frames_used"] == 1
    scratch = client.app.state.videomini.scratch
    assert not [p for p in scratch.iterdir() if p.is_file()]  # the decoded upload is not kept
    copy = client.allowed / "clip.mp4"
    shutil.copy(serve_library[1]["silent.mp4"].path, copy)
    body["messages"][0]["content"][0] = {"type": "video_url", "video_url": {"url": f"file://{copy}"}}
    out = client.post("/v1/chat/completions", json=body)
    assert out.status_code == 200, out.text
    assert out.json()["videomini"]["frame_times_s"] == [0.0, 1.0, 2.0, 3.0]


def test_chat_streams_openai_chunks_with_evidence_in_the_last(client):
    vid = video_id(client, "silent.mp4")
    body = {"stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": str(vid)}}, {"type": "text", "text": "What is written?"}]}]}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = sse_events(response.iter_lines())
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["evidence"]
    assert text.strip() == chunks[-1]["videomini"]["text"]
    assert chunks[-1]["usage"]["completion_tokens"] == chunks[-1]["videomini"]["completion_tokens"] >= 1


# ----------------------------------------------------------------------------------------------- load


def test_generation_queue_full_answers_503_while_searches_go_on(serve_library, checkpoint):
    import threading

    app = create_app(ServeConfig(library=serve_library[0], model=str(checkpoint), device="cpu", max_waiting=0,
                                 retry_after_s=7))
    release = threading.Event()
    with TestClient(app, base_url="http://127.0.0.1") as c:
        busy = app.state.videomini.queue.submit(lambda: release.wait(60))
        try:
            refused = c.post("/api/ask", json={"question": "what happens?"})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
            assert "busy" in refused.json()["error"]
            chat = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
            assert chat.status_code == 503 and chat.json()["error"]["message"]
            assert c.get("/api/search", params={"q": "loading dock"}).status_code == 200  # not queued
        finally:
            release.set()
            busy.result(timeout=60)
        assert app.state.videomini.queue.in_flight == 0


# ----------------------------------------------------------------------------------------------- security


def assert_refused(response, status: int, *words: str) -> None:
    """A 4xx with a one-line reason (no traceback), in the route family's error shape."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert message and "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, message


def chat_about(url: str, kind: str = "video_url") -> dict:
    return {"messages": [{"role": "user", "content": [{"type": kind, kind: {"url": url}},
                                                      {"type": "text", "text": "What happens?"}]}]}


def test_bad_input_gets_a_4xx_with_one_line(client):
    assert_refused(client.get("/api/search", params={"q": "   "}), 400, "empty query")
    assert_refused(client.get("/api/search"), 400, "q")
    assert_refused(client.get("/api/search", params={"q": "x", "top_k": 0}), 400, "top_k")
    assert_refused(client.get("/api/search", params={"q": "x", "signal": "smell"}), 400, "signal")
    assert_refused(client.get("/api/videos/999"), 404, "no video with id 999")
    assert_refused(client.get("/media/999"), 404, "999")
    assert_refused(client.get("/media/abc"), 400, "video_id")
    assert_refused(client.get("/thumbnails/1/nan"), 400, "outside")
    assert_refused(client.get("/thumbnails/1/99999"), 400, "outside")
    assert_refused(client.post("/api/ask", content=b"{not json", headers={"content-type": "application/json"}),
                   400, "JSON")
    assert_refused(client.post("/api/ask", json={"question": ""}), 400, "question")
    assert_refused(client.post("/api/ask", json={"question": "hi", "video": 999}), 404, "999")
    assert_refused(client.post("/v1/chat/completions", json={"messages": []}), 400, "messages")
    assert_refused(client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]}),
                   400, "no user message")
    not_a_video = "data:video/mp4;base64," + base64.b64encode(b"this is text, not a video" * 10).decode()
    assert_refused(client.post("/v1/chat/completions", json=chat_about(not_a_video)), 400, "not a readable video")
    not_an_image = "data:image/png;base64," + base64.b64encode(b"plain text").decode()
    assert_refused(client.post("/v1/chat/completions", json=chat_about(not_an_image, "image_url")), 400,
                   "not a readable image")
    assert_refused(client.post("/v1/chat/completions", json=chat_about("data:image/png;base64,@@@", "image_url")),
                   400, "base64")
    assert_refused(client.post("/v1/chat/completions", json=chat_about("https://example.com/a.mp4")), 400, "remote")
    assert not [p for p in client.app.state.videomini.scratch.iterdir() if p.is_file()]  # refused uploads deleted


def test_paths_never_escape_the_library_or_the_allowed_dirs(client, tmp_path):
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"secret")
    (client.allowed / "link.mp4").symlink_to(outside)
    allowed = client.allowed
    for url in (f"file://{allowed}/../{tmp_path.name}/secret.mp4",  # '..' out of the allowed folder
                f"file://{allowed}/%2e%2e/{tmp_path.name}/secret.mp4",  # encoded '..'
                str(outside),  # an absolute path elsewhere
                f"{allowed}/link.mp4",  # a symlink inside pointing out
                "/etc/passwd"):
        assert_refused(client.post("/v1/chat/completions", json=chat_about(url)), 403, "outside the allowed")
    assert_refused(client.post("/v1/chat/completions", json=chat_about("secret.mp4")), 400, "absolute path")
    # media and thumbnails take an id, never a path: traversal shapes do not match, or are not ids
    for path in ("/media/..%2f..%2fetc%2fpasswd", "/media/%2e%2e/%2e%2e/etc/passwd", "/media/%2Fetc%2Fpasswd",
                 "/thumbnails/1/..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/static/..%2f..%2fapp.py", "/media/-1"):
        response = client.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert b"root:" not in response.content and b"import" not in response.content


def test_request_bodies_over_the_limit_get_413(client):
    big = {"question": "x" * 10, "padding": "y" * (2 << 20)}
    assert_refused(client.post("/api/ask", json=big), 413, "larger than")

    def chunks():
        yield b'{"question": "'
        for _ in range(40):
            yield b"z" * 65536
        yield b'"}'

    assert_refused(client.post("/api/ask", content=chunks(), headers={"content-type": "application/json"}), 413,
                   "larger than")


def test_token_guards_every_route_but_the_page(serve_library, checkpoint):
    app = create_app(ServeConfig(library=serve_library[0], model=str(checkpoint), device="cpu", token="s3cret"))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        for path in ("/api/videos", "/api/search?q=dock", "/media/1", "/thumbnails/1/1.0", "/v1/models",
                     "/openapi.json", "/api/health"):
            response = c.get(path)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
        assert c.get("/api/videos", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert_refused(c.post("/api/ask", json={"question": "hi"}), 401, "token")
        assert c.get("/api/videos", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        c.cookies.set("videomini_token", "s3cret")  # what the page sets, so <video> requests carry it
        assert c.get("/media/1").status_code == 200
        c.cookies.clear()
        for path in ("/", "/static/app.js", "/static/style.css"):
            assert c.get(path).status_code == 200, path


def test_binding_beyond_loopback_needs_a_token_or_no_auth():
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(host, None, False)
    with pytest.raises(ServeError, match="--token"):
        check_bind("0.0.0.0", None, False)
    with pytest.raises(ServeError, match="--no-auth"):
        check_bind("192.168.1.20", None, False)
    check_bind("0.0.0.0", "t", False)
    check_bind("0.0.0.0", None, True)


def test_openapi_schema_documents_the_routes(client):
    schema = client.get("/openapi.json").json()
    for path in ("/api/search", "/api/ask", "/api/videos", "/api/videos/{video_id}", "/media/{video_id}",
                 "/thumbnails/{video_id}/{t}", "/v1/chat/completions", "/v1/models"):
        assert path in schema["paths"], path


def test_serve_cli_refuses_a_public_bind_without_a_token(library):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "videomini.cli", "serve", "--library", str(library), "--host",
                          "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--token" in out.stderr and "Traceback" not in out.stderr


def test_a_running_server_sees_videos_indexed_beside_it(tmp_path, checkpoint):
    """The library is opened per request, read-only: a new index generation shows without a restart."""
    from videomini.ask import VideoMini
    from videomini.pipelines import index_videos

    from narrated import Caption, make_narrated_video

    first = make_narrated_video(tmp_path / "dock.mp4", duration_s=3.0, lines=[], with_audio=False,
                                captions=[Caption(0.0, 3.0, "LOADING DOCK")])
    second = make_narrated_video(tmp_path / "fire.mp4", duration_s=3.0, lines=[], with_audio=False,
                                 captions=[Caption(1.0, 3.0, "FIRE EXIT")])
    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    library = tmp_path / "lib"
    assert index_videos(library, [first.path], vm, model_id=str(checkpoint), signals=("ocr",)).indexed
    with TestClient(create_app(ServeConfig(library=library, device="cpu")), base_url="http://127.0.0.1") as c:
        assert len(c.get("/api/videos").json()["videos"]) == 1
        assert c.get("/api/search", params={"q": "fire exit", "signal": "ocr"}).json()[0]["matches"][0]["text"] \
            == "LOADING DOCK"  # the only text there is
        assert index_videos(library, [second.path], vm, model_id=str(checkpoint), signals=("ocr",)).indexed
        assert len(c.get("/api/videos").json()["videos"]) == 2
        best = c.get("/api/search", params={"q": "fire exit", "signal": "ocr"}).json()[0]
        assert best["matches"][0]["text"] == "FIRE EXIT" and Path(best["video"]).name == "fire.mp4"


def test_a_server_without_a_library_answers_chat_about_frames(checkpoint):
    import io

    from PIL import Image

    def png(color) -> dict:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), color).save(buffer, format="PNG")
        return {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                          + base64.b64encode(buffer.getvalue()).decode()}}

    with TestClient(create_app(ServeConfig(model=str(checkpoint), device="cpu")), base_url="http://127.0.0.1") as c:
        assert_refused(c.get("/api/videos"), 404, "no library")
        assert_refused(c.get("/api/search", params={"q": "x"}), 404, "no library")
        body = {"max_tokens": 3, "messages": [{"role": "user", "content": [
            png((200, 0, 0)), png((0, 200, 0)), png((0, 0, 200)), {"type": "text", "text": "Which colour first?"}]}]}
        out = c.post("/v1/chat/completions", json=body)
        assert out.status_code == 200, out.text
        assert out.json()["videomini"]["frames_used"] == 3 and out.json()["videomini"]["frame_times_s"] == [0, 1, 2]
        assert c.get("/v1/models").json()["data"][0]["id"] == str(checkpoint)


def test_the_announced_port_already_accepts_connections(checkpoint):
    """A client that connects as soon as the URL is announced (a test, lmms-eval) waits for the server instead of
    being refused while uvicorn starts."""
    import socket
    from urllib.parse import urlsplit

    class Announced(Exception):
        pass

    connected = []

    def connect(url: str) -> None:
        with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port), timeout=5):
            connected.append(url)
        raise Announced  # stop before serving: only the moment between the announcement and uvicorn matters

    with pytest.raises(Announced):
        run(ServeConfig(model=str(checkpoint), device="cpu"), port=0, on_listening=connect)
    assert len(connected) == 1


# ----------------------------------------------------------------------------------------------- issue 23: limits


def png_data_url(width: int, height: int) -> str:
    """A PNG of width x height one-bit pixels as a data URL: 12000 x 12000 is ~20 KB on the wire."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def scratch_files(client) -> list[Path]:
    return [p for p in client.app.state.videomini.scratch.iterdir() if p.is_file()]


def test_row1_questions_over_the_limits_are_400_on_every_route(client):
    huge = "why " * 25_000  # 100,000 characters: a 40 GB allocation before the limit
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": huge}]})
    assert_refused(response, 400, "QUESTION_MAX_CHARS")
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert_refused(client.post("/api/ask", json={"question": huge[:4001]}), 400, "question")
    assert_refused(client.get("/api/search", params={"q": huge[:2001]}), 400, "q")
    many_tokens = " ".join("abcdefghij"[i % 10] for i in range(1500))  # 2,999 characters, ~1,500 tokens
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": many_tokens}]})
    assert_refused(response, 400, "QUESTION_MAX_TOKENS")
    assert_refused(client.post("/api/ask", json={"question": many_tokens}), 400, "QUESTION_MAX_TOKENS")


@pytest.mark.parametrize("side", [12000, 20000])
def test_row2_an_image_bomb_is_refused_from_its_header_and_removed(client, side):
    response = client.post("/v1/chat/completions", json=chat_about(png_data_url(side, side), "image_url"))
    assert_refused(response, 400, "IMAGE_MAX_PIXELS")
    frames = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png_data_url(side, side)}},
        {"type": "image_url", "image_url": {"url": png_data_url(side, side)}},
        {"type": "text", "text": "What happens?"}]}]}
    assert_refused(client.post("/v1/chat/completions", json=frames), 400, "IMAGE_MAX_PIXELS")
    assert not scratch_files(client)  # the decoded uploads are gone


def test_frames_per_request_and_the_decoded_pixel_budget(client, monkeypatch):
    from videomini import limits

    small = png_data_url(64, 48)
    parts = [{"type": "image_url", "image_url": {"url": small}}] * (limits.FRAMES_PER_REQUEST_MAX + 1)
    too_many = {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "What?"}]}]}
    assert_refused(client.post("/v1/chat/completions", json=too_many), 400, "FRAMES_PER_REQUEST_MAX")
    budget = client.app.state.videomini.pixels
    monkeypatch.setattr(budget, "total", 3 * 64 * 48)
    three = {"messages": [{"role": "user", "content": [*parts[:3], {"type": "text", "text": "What?"}]}]}
    four = {"messages": [{"role": "user", "content": [*parts[:4], {"type": "text", "text": "What?"}]}]}
    assert_refused(client.post("/v1/chat/completions", json=four), 400, "SERVER_DECODED_PIXELS")
    budget.take(64 * 48)  # another request holds a frame's worth
    try:
        busy = client.post("/v1/chat/completions", json=three)
        assert_refused(busy, 503, "retry")
        assert busy.headers["retry-after"]
    finally:
        budget.give_back(64 * 48)
    answered = client.post("/v1/chat/completions", json={**three, "max_tokens": 2})
    assert answered.status_code == 200, answered.text
    assert budget.held == 0 and not scratch_files(client)  # given back when the answer is done


@pytest.fixture
def own_library(tmp_path, checkpoint):
    """A library of one small video that a test may damage (the shared one stays intact)."""
    from videomini.ask import VideoMini
    from videomini.pipelines import index_videos

    import synth

    video = synth.make_numbered_video(tmp_path / "clip.mp4", 2, 5)
    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    assert index_videos(tmp_path / "lib", [video], vm, model_id=str(checkpoint)).indexed
    with TestClient(create_app(ServeConfig(library=tmp_path / "lib", model=str(checkpoint), device="cpu")),
                    base_url="http://127.0.0.1") as c:
        yield c, video


def test_row6_media_is_served_only_while_it_is_the_file_indexed(own_library, tmp_path):
    client, video = own_library
    [row] = client.get("/api/videos").json()["videos"]
    original = video.read_bytes()
    assert client.get(f"/media/{row['id']}").content == original
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    video.unlink()
    video.symlink_to(secret)  # the indexed video replaced by a link to another file
    for path in (f"/media/{row['id']}", f"/thumbnails/{row['id']}/0.5"):
        response = client.get(path)
        assert_refused(response, 403, "symbolic link")
        assert b"root:" not in response.content
    video.unlink()
    video.write_bytes(original[:-10])  # replaced by another file: size and time differ
    assert_refused(client.get(f"/media/{row['id']}"), 409, "changed since it was indexed")
    response = client.post("/v1/chat/completions", json=chat_about(f"videomini:{row['id']}"))
    assert_refused(response, 409, "changed since it was indexed")


def test_row7_only_the_host_names_served_are_answered(client, serve_library, checkpoint):
    for host in ("attacker.example", "evil.example:8000", "127.0.0.1.attacker.example"):
        response = client.get("/api/videos", headers={"Host": host})
        assert_refused(response, 421, "DNS-rebinding", "--allow-host")
    assert_refused(client.get("/v1/models", headers={"Host": "attacker.example"}), 421, "not served")
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST.:9", "[::1]:8000"):
        assert client.get("/api/videos", headers={"Host": host}).status_code == 200, host
    app = create_app(ServeConfig(library=serve_library[0], model=str(checkpoint), device="cpu",
                                 allow_hosts=["videos.example.org"], host="10.1.2.3"))
    with TestClient(app, base_url="http://videos.example.org") as proxied:
        assert proxied.get("/api/videos").status_code == 200
        assert proxied.get("/api/videos", headers={"Host": "10.1.2.3:8000"}).status_code == 200  # bound address
        assert proxied.get("/api/videos", headers={"Host": "attacker.example"}).status_code == 421


def test_row7_every_interface_serves_the_machine_names_and_star_serves_any():
    import socket

    from videomini.pipelines.serve.state import host_name, served_host_names

    names = served_host_names(ServeConfig(host="0.0.0.0"))
    assert socket.gethostname().lower() in names and "127.0.0.1" in names and "attacker.example" not in names
    assert served_host_names(ServeConfig(allow_hosts=["*"])) is None
    assert host_name("[::1]:8000") == "::1" and host_name("Example.COM.:80") == "example.com"


@pytest.mark.parametrize("request_args", [
    ("get", "/api/videos/99999999999999999999999", None),
    ("get", "/media/99999999999999999999999", None),
    ("get", "/thumbnails/99999999999999999999999/1.0", None),
    ("get", "/thumbnails/1/inf", None),
    ("post", "/api/ask", {"question": "hi", "video": 99999999999999999999999}),
    ("post", "/api/ask", {"question": "hi", "video": [1]}),
    ("post", "/v1/chat/completions", {**chat_about("videomini:1"), "media_io_kwargs": "x"}),
    ("post", "/v1/chat/completions", {**chat_about("videomini:1"), "media_io_kwargs": {"video": [1]}}),
    ("post", "/v1/chat/completions", {**chat_about("videomini:1"), "media_io_kwargs": {"video": {"num_frames": 0}}}),
    ("post", "/v1/chat/completions", {**chat_about("videomini:1"),
                                      "media_io_kwargs": {"video": {"num_frames": "many"}}}),
    ("post", "/v1/chat/completions", chat_about("videomini:²")),
    ("post", "/v1/chat/completions", chat_about("videomini:99999999999999999999999")),
    ("post", "/v1/chat/completions", chat_about("99999999999999999999999")),
    ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
    ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "videomini:1"}}] * 2 + [{"type": "text", "text": "hi"}]}],
        "frame_times_s": ["a", "b"]}),
], ids=lambda args: f"{args[0]} {args[1]}")
def test_row9_malformed_fields_are_4xx_never_500(client, request_args):
    method, path, body = request_args
    response = client.request(method, path, json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert_refused(response, response.status_code)


def test_row9_infinity_in_json_is_4xx(client):
    body = json.dumps({**chat_about("videomini:1"), "media_io_kwargs": {"video": {"num_frames": float("inf")}}})
    assert "Infinity" in body  # Python writes it; some clients do
    response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_refused(response, 400, "num_frames")


def test_row12_blank_questions_are_400(client):
    assert_refused(client.post("/api/ask", json={"question": "   "}), 400, "empty question")
    assert_refused(client.get("/api/search", params={"q": " \n "}), 400, "empty query")
    blank = {"messages": [{"role": "user", "content": "  \n "}]}
    assert_refused(client.post("/v1/chat/completions", json=blank), 400, "no text")


def test_row13_the_frameworks_own_errors_in_the_routes_shape(client):
    assert_refused(client.get("/api/nothing-here"), 404, "no route /api/nothing-here")
    assert_refused(client.get("/nothing-here"), 404, "no route")
    openai = client.get("/v1/nothing-here")
    assert_refused(openai, 404, "no route")
    assert openai.json()["error"]["code"] == 404 and "detail" not in openai.json()
    assert_refused(client.get("/api/ask"), 405, "GET is not allowed on /api/ask")
    assert_refused(client.delete("/v1/chat/completions"), 405, "DELETE")
    malformed = client.post("/api/ask", content=b'{"question": "hi",, }', headers={"content-type": "application/json"})
    assert_refused(malformed, 400, "malformed JSON at character")
    assert "JSON decode error" not in malformed.text
