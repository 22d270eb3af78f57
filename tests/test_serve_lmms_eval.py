"""lmms-eval's `openai_compatible` backend against a live `videomini serve`: its requests, replayed.

tests/test_lmms_eval_live.py runs lmms-eval 0.7.3 itself (in its own virtualenv) for the modes that install
without torchvision: pass_video_url and the simple backend. The chat backend's default mode decodes frames with
qwen-vl-utils, which imports torchvision (kept out of our environments: unpinned, PyPI's torchvision brings
torch 2.14 and the CUDA wheels), so these tests send exactly the requests each mode sends, read from lmms-eval's
0.7.3 source:

- `--model openai_compatible` resolves to the chat class `lmms_eval/models/chat/openai.py`: the payload is
  `{"messages": ChatMessages.to_openai_messages(...), "model": model_version, "max_tokens": N, "temperature": 0}`
  sent with `OpenAI(...).chat.completions.create(**payload)`; `protocol.py` turns a video into its decoded frames,
  each an `image_url` part `data:image/png;base64,...`, in the message's order (video, then the question text);
  no times are sent.
- the simple class (`lmms_eval/models/simple/openai.py`, `--force_simple`): the question text first,
  then the frames as the same PNG `image_url` parts.
- `pass_video_url=True`: one `video_url` part `file:///abs/path` and `extra_body={"media_io_kwargs": {"video":
  {"num_frames": N}}}`.

The served answers must equal `VideoMini.ask` on the same frames: one token per frame, the question fused over all
of them, not unrelated images.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from videomini.pipelines.serve.process import serve_process

QUESTION = ("Question: What is written on the screen?\nOptions:\n(A) LOADING DOCK\n(B) FIRE EXIT\n(C) CAFE\n"
            "Answer with the option's letter from the given choices directly.")

pytestmark = pytest.mark.slow  # a live server process answering lmms-eval's request shapes


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from narrated import Caption, make_narrated_video

    folder = tmp_path_factory.mktemp("eval-videos")
    return make_narrated_video(folder / "mc.mp4", duration_s=6.0, lines=[], with_audio=False,
                               captions=[Caption(2.0, 5.0, "FIRE EXIT")]).path


@pytest.fixture(scope="module")
def server(serve_library, checkpoint, clip):
    with serve_process(["--library", str(serve_library[0]), "--model", str(checkpoint), "--device", "cpu",
                        "--allow-dir", str(clip.parent)]) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    import openai
    return openai.OpenAI(api_key="EMPTY", base_url=f"{server}/v1", max_retries=0)  # as OPENAI_API_BASE=...


def png_parts(frames: np.ndarray) -> list[dict]:
    """Frames as lmms-eval encodes them: PNG, base64, one image_url part each."""
    from PIL import Image

    parts = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        url = f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def one_fps_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from videomini.video import sample_frames

    with sample_frames(path, fps=1.0, batch_size=64) as batches:
        frames, times = zip(*batches)
    return np.concatenate(frames), np.concatenate(times)


@pytest.mark.parametrize("order", ["chat: video then text", "simple: text then video"])
def test_frames_sent_as_png_image_parts_are_one_video(client, vm, clip, order):
    frames, times = one_fps_frames(clip)
    images, text = png_parts(frames), [{"type": "text", "text": QUESTION}]
    payload = {"messages": [{"role": "user", "content": images + text if order.startswith("chat") else text + images}],
               "model": "llava-mini", "max_tokens": 8, "temperature": 0}
    response = client.chat.completions.create(**payload)
    served = response.model_extra["videomini"]
    expected = vm.ask(clip, QUESTION, max_new_tokens=8)  # videomini's own decoding of the same file
    assert served["frames_used"] == len(frames) == expected.frames_used
    assert response.choices[0].message.content == expected.text
    assert served["frame_times_s"] == [float(t) for t in times]  # no times sent: 0, 1, 2 ... s
    assert all(0.0 <= e["time_s"] <= times[-1] for e in response.model_extra["evidence"])


def test_frame_times_given_are_kept(server, vm, clip):
    import httpx

    frames, _ = one_fps_frames(clip)
    given = [0.5 + 2.0 * i for i in range(len(frames))]
    body = {"messages": [{"role": "user", "content": png_parts(frames) + [{"type": "text", "text": QUESTION}]}],
            "max_tokens": 8, "temperature": 0, "frame_times_s": given}
    served = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120).json()
    assert served["videomini"]["frame_times_s"] == given
    assert served["choices"][0]["message"]["content"] == vm.ask_frames(frames, QUESTION, np.array(given),
                                                                        max_new_tokens=8).text
    assert all(e["time_s"] in given for e in served["evidence"])


def test_pass_video_url_mode_sends_a_file_url_and_a_frame_count(client, vm, clip):
    payload = {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": f"file://{clip.resolve()}"}}, {"type": "text", "text": QUESTION}]}],
        "model": "llava-mini", "max_tokens": 8, "temperature": 0,
        "extra_body": {"media_io_kwargs": {"video": {"num_frames": 4}}}}
    response = client.chat.completions.create(**payload)
    expected = vm.ask(clip, QUESTION, max_frames=4, max_new_tokens=8)
    assert response.model_extra["videomini"]["frames_used"] == 4
    assert response.choices[0].message.content == expected.text


def test_frames_of_different_sizes_are_refused(client):
    import openai
    frames = [np.zeros((32, 48, 3), np.uint8), np.zeros((40, 48, 3), np.uint8)]
    parts = png_parts(frames[:1]) + png_parts(frames[1:])
    with pytest.raises(openai.BadRequestError, match="share one size"):
        client.chat.completions.create(model="llava-mini", max_tokens=4, messages=[
            {"role": "user", "content": parts + [{"type": "text", "text": QUESTION}]}])
