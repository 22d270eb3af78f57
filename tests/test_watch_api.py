"""The live session's HTTP routes (`watch --serve`) in process: status, the newest frame, an answer (whole and
streamed), one-line errors."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from synth import make_testsrc_video


@pytest.fixture
def live_client(vm, tmp_path):
    from videomini.pipelines.serve import ServeConfig, create_app
    from videomini.pipelines.serve.live import LiveHub, add_live_routes

    video = make_testsrc_video(tmp_path / "clip.mp4", 6, size=(160, 120), fps=5, pattern="testsrc2", keyframe_s=1)
    hub = LiveHub()
    session = vm.watch(str(video), max_new_tokens=4, on_event=hub.publish)
    app = create_app(ServeConfig())
    add_live_routes(app, session, hub)
    assert session.ended.wait(60)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, session
    session.close()


def test_status_frame_and_answers(live_client):
    client, session = live_client
    status = client.get("/api/live/status").json()
    assert status["frames_encoded"] == 6 and status["ended"] and status["error"] is None
    frame = client.get("/api/live/frame.jpg")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert frame.content[:2] == b"\xff\xd8" and frame.headers["x-videomini-frame"] == "5"
    answer = client.post("/api/live/ask", json={"question": "What happened in the last 2 seconds?"}).json()
    assert answer["frame_times_s"] == [4.0, 5.0] and all(e["wall_utc"].endswith("Z") for e in answer["evidence"])
    with client.stream("POST", "/api/live/ask", json={"question": "What is shown?", "stream": True}) as response:
        kinds = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    assert kinds[-1] == "answer" and set(kinds[:-1]) <= {"token"}


def test_bad_requests_are_one_line(live_client):
    client, _ = live_client
    empty = client.post("/api/live/ask", json={"question": ""})
    assert empty.status_code == 400 and "question" in empty.json()["error"]
    too_long = client.post("/api/live/ask", json={"question": "why? " * 1000})
    assert too_long.status_code == 400 and "question" in too_long.json()["error"]
    assert "\n" not in json.dumps(too_long.json())
    tokens = client.post("/api/live/ask", json={"question": "why?", "max_new_tokens": 100_000})
    assert tokens.status_code == 400 and "max_new_tokens" in tokens.json()["error"]


def test_the_openai_route_addresses_the_live_session(live_client):
    client, session = live_client
    assert "videomini:live" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    question = {"role": "user", "content": "What happened in the last 2 seconds?"}
    as_model = client.post("/v1/chat/completions", json={"model": "videomini:live", "max_tokens": 4,
                                                         "messages": [question]})
    assert as_model.status_code == 200, as_model.text
    out = as_model.json()
    assert out["videomini"]["frame_times_s"] == [4.0, 5.0]  # the stream's last two seconds, in stream time
    assert all(e["wall_utc"].endswith("Z") for e in out["videomini"]["evidence"])
    assert out["choices"][0]["message"]["content"] == out["videomini"]["text"] and out["usage"]["completion_tokens"]
    as_video = client.post("/v1/chat/completions", json={"max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "videomini:live"}}, {"type": "text", "text": "What is shown?"}]}]})
    assert as_video.status_code == 200 and as_video.json()["videomini"]["frames_used"] >= 1


def test_the_openai_route_without_a_live_session_is_one_line(checkpoint):
    from videomini.pipelines.serve import ServeConfig, create_app

    app = create_app(ServeConfig(model=str(checkpoint)))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.post("/v1/chat/completions", json={"model": "videomini:live", "messages": [
            {"role": "user", "content": "What is happening?"}]})
    assert response.status_code == 404 and "watch --serve" in response.json()["error"]["message"]
