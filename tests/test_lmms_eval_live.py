"""lmms-eval itself, run in its own virtualenv, against a live `videomini serve` on the tiny checkpoint.

scripts/lmms_eval_env.sh builds that environment once (lmms-eval 0.7.3 with --no-deps plus what its
openai_compatible backend imports: tests/lmms_eval_task/requirements.txt; no torchvision, no CUDA wheels) and caches
it under ~/.cache/videomini; scripts/setup.sh calls it, and so does this module if the environment is missing.
lmms-eval runs the tiny multiple-choice task in tests/lmms_eval_task over three generated videos, offline
(HF_HUB_OFFLINE), with --log_samples; every answer it logged must equal `VideoMini.ask` (what `videomini ask` runs)
on the same frames:

- the chat backend (what `--model openai_compatible` resolves to) with pass_video_url=True sends the video as a
  file:// URL and a frame count; the server decodes it (`ask(..., max_frames=N)`). Its other mode decodes frames
  through qwen-vl-utils, which imports torchvision (kept out: unpinned, PyPI's brings torch 2.14 and the CUDA
  wheels), so tests/test_serve_lmms_eval.py replays those requests instead.
- the simple backend (--force_simple) decodes N uniform frames with decord and sends them as PNG image_url parts,
  after the question text (`ask_frames` on those frames, dated 0, 1, 2 ... s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videomini.pipelines.serve.process import serve_process

pytestmark = pytest.mark.slow  # lmms-eval in its own 1.6 GB virtualenv against a live server

ROOT = Path(__file__).resolve().parent.parent
TASK_DIR = ROOT / "tests" / "lmms_eval_task"
FRAMES = 4
MAX_NEW_TOKENS = 16  # the task yaml's generation_kwargs
OPTIONS = ["(A) CAFE", "(B) FIRE EXIT", "(C) LOADING DOCK"]


def _task_utils():
    spec = importlib.util.spec_from_file_location("videomini_mc_utils", TASK_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stripes(t: float, width: int = 320, height: int = 180) -> np.ndarray:
    x = np.arange(width)[None, :, None]
    return np.broadcast_to(((x + int(40 * t)) // 20 % 2) * 255, (height, width, 3)).astype(np.uint8)


def _dark(t: float, width: int = 320, height: int = 180) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = int(30 + 30 * t) % 256
    return image


def lmms_eval_env_dir() -> Path:
    """Where scripts/setup.sh put lmms-eval's environment: $VIDEOMINI_LMMS_EVAL_ENV, else the user's own
    ~/.cache/videomini (the real home: conftest points HOME at a temporary folder for the tests)."""
    if os.environ.get("VIDEOMINI_LMMS_EVAL_ENV"):
        return Path(os.environ["VIDEOMINI_LMMS_EVAL_ENV"])
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "videomini" / "lmms-eval-0.7.3"


@pytest.fixture(scope="module")
def lmms_eval_python() -> str:
    """lmms-eval's own environment (created once, then reused: the script returns at once when it exists)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "lmms_eval_env.sh"), str(lmms_eval_env_dir())],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Three videos that look nothing alike, each captioned with one of the options; docs.jsonl beside them."""
    from narrated import Caption, make_narrated_video

    folder = tmp_path_factory.mktemp("lmms-eval-data")
    docs = []
    for name, background, caption, answer in [("stripes", _stripes, "FIRE EXIT", "B"), ("dark", _dark, "CAFE", "A"),
                                              ("gradient", None, "LOADING DOCK", "C")]:
        video = make_narrated_video(folder / f"{name}.mp4", duration_s=6.0, lines=[], with_audio=False,
                                    size=(320, 180), background=background, captions=[Caption(1.0, 4.0, caption)])
        docs.append({"video": str(video.path), "question": "What is written on the screen?", "options": OPTIONS,
                     "answer": answer})
    (folder / "docs.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    return folder, docs


@pytest.fixture(scope="module")
def server(checkpoint, dataset):
    with serve_process(["--model", str(checkpoint), "--device", "cpu", "--allow-dir", str(dataset[0])]) as url:
        yield url


def run_lmms_eval(python: str, server: str, folder: Path, model_args: str, *extra: str) -> tuple[list[dict], dict]:
    """`python -m lmms_eval --model openai_compatible` on the task, from `folder`; its logged samples and results."""
    output = folder / ("logs-" + "-".join(extra or ("chat",)).strip("-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OPENAI_API_KEY="EMPTY", OPENAI_API_BASE=f"{server}/v1", HF_HOME=str(folder / "hf"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    done = subprocess.run([python, "-m", "lmms_eval", "--model", "openai_compatible", "--model_args", model_args,
                           "--tasks", "videomini_mc", "--include_path", str(TASK_DIR), "--batch_size", "1",
                           "--output_path", str(output), "--log_samples", *extra],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    samples_file, = output.glob("*/*_samples_videomini_mc.jsonl")
    results_file, = output.glob("*/*_results.json")
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    return samples, json.loads(results_file.read_text())


def served_answer(sample: dict) -> str:
    response = sample["filtered_resps"]
    response = response[0] if isinstance(response, list) else response
    assert "LMMS_EVAL_REQUEST_FAILED" not in response, response
    return response


def decord_frames(path: str, count: int) -> np.ndarray:
    """The frames lmms-eval 0.7.3's simple backend sends (models/simple/openai.py `encode_video`): decord,
    `count` uniform indices over all frames, the last frame always included."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    indices = np.linspace(0, len(reader) - 1, count, dtype=int)
    if len(reader) - 1 not in indices:
        indices = np.append(indices, len(reader) - 1)
    return reader.get_batch(sorted(set(indices.tolist()))).asnumpy()


def check_run(samples: list[dict], results: dict, docs: list[dict], expected: list[str]) -> None:
    utils = _task_utils()
    assert [s["doc_id"] for s in samples] == list(range(len(docs)))
    for sample, doc, answer in zip(samples, docs, expected):
        assert sample["input"] == utils.doc_to_text(doc)  # the question lmms-eval sent
        assert served_answer(sample) == answer, (doc["video"], served_answer(sample), answer)
    assert len(set(expected)) == len(expected), expected  # each answer depends on its own video
    accuracy = np.mean([utils.process_results(doc, [answer])["accuracy"] for doc, answer in zip(docs, expected)])
    assert results["results"]["videomini_mc"]["accuracy,none"] == pytest.approx(accuracy)


def test_chat_backend_passing_the_video_url_gets_videomini_ask_answers(lmms_eval_python, server, dataset, vm):
    folder, docs = dataset
    samples, results = run_lmms_eval(
        lmms_eval_python, server, folder,
        f"model_version=llava-mini,pass_video_url=True,max_frames_num={FRAMES},num_concurrent=1,timeout=120")
    questions = [_task_utils().doc_to_text(doc) for doc in docs]
    expected = [vm.ask(doc["video"], q, max_frames=FRAMES, max_new_tokens=MAX_NEW_TOKENS).text
                for doc, q in zip(docs, questions)]
    check_run(samples, results, docs, expected)


def test_simple_backend_sending_frames_gets_videomini_ask_answers_on_those_frames(lmms_eval_python, server, dataset,
                                                                                   vm):
    folder, docs = dataset
    samples, results = run_lmms_eval(
        lmms_eval_python, server, folder,
        f"model_version=llava-mini,max_frames_num={FRAMES},num_concurrent=1,timeout=120", "--force_simple")
    questions = [_task_utils().doc_to_text(doc) for doc in docs]
    expected = [vm.ask_frames(decord_frames(doc["video"], FRAMES), q, max_new_tokens=MAX_NEW_TOKENS).text
                for doc, q in zip(docs, questions)]
    check_run(samples, results, docs, expected)


def test_the_environment_holds_no_torchvision_and_no_cuda(lmms_eval_python):
    listed = subprocess.run([lmms_eval_python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout
    names = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}
    assert names["lmms-eval"] == "0.7.3" and names["torch"].endswith("+cpu")
    assert not [n for n in names if n.startswith("nvidia-") or n in ("torchvision", "triton")]
    assert sys.executable != lmms_eval_python
