"""The live session's HTTP routes (`watch --serve`) in process: status, the newest frame, an answer (whole and
streamed), one-line errors."""

from __future__ import annotations

import json
import subprocess

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def live_client(vm, tmp_path):
    from videomini.pipelines.serve import ServeConfig, create_app
    from videomini.pipelines.serve.live import LiveHub, add_live_routes

    video = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=5", "-t", "6", "-c:v", "libx264", "-g", "5", str(video)],
                   check=True, timeout=60)
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
