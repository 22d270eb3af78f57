"""`videomini serve` through an ASGI client: the HTTP API (same JSON as the CLI), streaming, media with range
requests, thumbnails, the OpenAI-compatible routes, the generation queue, and every security case."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from videomini.library import Library as Storage  # noqa: E402
from videomini.pipelines.search import search_library  # noqa: E402
from videomini.pipelines.serve import ServeConfig, ServeError, check_bind, create_app  # noqa: E402

TOLERANCE_S = 2.0


@pytest.fixture(scope="module")
def library(serve_library):
    return serve_library[0]


@pytest.fixture(scope="module")
def client(serve_library, checkpoint, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    app = create_app(ServeConfig(library=serve_library[0], model=str(checkpoint), device="cpu",
                                 allow_dirs=[allowed], max_body_bytes=1 << 20))
    with TestClient(app) as c:
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


def test_search_limits_to_a_signal(client):
    moments = client.get("/api/search", params={"q": "the loading bay", "signal": "speech"}).json()
    assert all(m["signal"] == "speech" for moment in moments for m in moment["matches"])
    moments = client.get("/api/search", params={"q": "the loading bay", "signal": "ocr"}).json()
    assert moments[0]["matches"][0]["text"] == "LOADING DOCK"


def test_videos_and_one_video(client, library):
    body = client.get("/api/videos").json()
    with Storage(library) as storage:  # what `videomini library --json` prints
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
