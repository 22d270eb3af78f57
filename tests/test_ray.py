"""`index --engine ray` on a local 2-CPU Ray: the same library as the local engine, bad files recorded, resume.

Ray keeps its files in a temp folder under RAY_TMPDIR (conftest points it, and HOME, into a temp folder) and runs
without token auth (RAY_AUTH_MODE=disabled: nothing to write into ~/.ray). One Ray serves the module; the CLI
test starts (and must shut down) its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import ray

from videomini.pipelines import index_videos
from videomini.pipelines.index_run import IndexRunError
from videomini.pipelines.ray_engine import RayEngine, short_temp_dir
from videomini.storage import LibraryStore

from conftest import make_tiny_checkpoint
from synth import make_numbered_video

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own settings


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs whose session files live in a short temp folder (unix socket paths are limited)."""
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # also for the CLI subprocesses, which inherit it
    temp_dir = short_temp_dir()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def media(tmp_path_factory, videos_dir):
    """Two good videos (a real clip, a numbered one) and a text file named .mp4."""
    root = tmp_path_factory.mktemp("media")
    shutil.copy(videos_dir / "carphone_pristine.mp4", root / "carphone.mp4")
    make_numbered_video(root / "numbers.mp4", seconds=6, fps=5)
    (root / "text.mp4").write_text("this is not a video\n")
    return root


@pytest.fixture(scope="module")
def libraries(tmp_path_factory, local_ray, checkpoint, media):
    """The same folder indexed by both engines. The local one encodes on one thread like the 1-CPU actor:
    fp16 tokens rounded from fp32 sums taken in another order could differ by one fp16 step."""
    import torch

    root = tmp_path_factory.mktemp("libs")
    reports = {"ray": index_videos(root / "ray", [media], model_id=str(checkpoint), engine=RayEngine(), batch_size=4)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reports["local"] = index_videos(root / "local", [media], model_id=str(checkpoint), batch_size=4)
    finally:
        torch.set_num_threads(threads)
    return root, reports


@pytest.mark.slow  # a Ray cluster
def test_ray_library_equals_local_engine(libraries, media):
    root, reports = libraries
    for report in reports.values():
        assert sorted(Path(p).name for p in report.indexed) == ["carphone.mp4", "numbers.mp4"]
        [(path, error)] = report.failed
        assert Path(path).name == "text.mp4"
        assert str(media / "text.mp4") in error and "\n" not in error
    assert reports["ray"].failed == reports["local"].failed
    assert reports["ray"].frames == reports["local"].frames
    with LibraryStore(root / "ray") as ray_lib, LibraryStore(root / "local") as local_lib:
        ray_videos = {v["path"]: v for v in ray_lib.videos()}
        local_videos = {v["path"]: v for v in local_lib.videos()}
        assert ray_videos.keys() == local_videos.keys()
        for path, local in local_videos.items():
            mine = ray_videos[path]
            for column in ("status", "error", "fingerprint", "n_frames", "duration_s", "fps", "model_id"):
                assert mine[column] == local[column], (path, column)
            if local["status"] != "done":
                continue
            got, want = ray_lib.load_frames(mine["id"]), local_lib.load_frames(local["id"])
            np.testing.assert_array_equal(got.timestamps_s, want.timestamps_s)
            assert got.frame_tokens is None and want.frame_tokens is None  # not stored (storage/shards.py)
            np.testing.assert_allclose(got.embeddings, want.embeddings, rtol=0, atol=1e-5)
        assert ray_lib.index_is_current() and ray_lib.stats()["index"]["n_vectors"] == reports["ray"].frames


@pytest.mark.slow  # a Ray cluster
def test_ray_rerun_skips_done_and_resumes_unfinished(libraries, media, checkpoint):
    root, _ = libraries
    again = index_videos(root / "ray", [media], model_id=str(checkpoint), engine=RayEngine(), batch_size=4)
    assert again.indexed == [] and again.failed == []
    assert sorted(why for _, why in again.skipped) == ["failed before (use --retry-failed)", "unchanged", "unchanged"]
    # a driver killed while encoding leaves the video `running` with no shard: the next run indexes that one only
    with LibraryStore(root / "ray", writer=True) as lib:
        numbers = lib.video(media / "numbers.mp4")
        lib.mark_running(media / "numbers.mp4", numbers["fingerprint"], model_id=str(checkpoint), fps=1.0)
        (lib.shards_dir / numbers["shard"]).unlink()
    events: list[tuple[str, str]] = []
    resumed = index_videos(root / "ray", [media], model_id=str(checkpoint), engine=RayEngine(), batch_size=4,
                           on_event=lambda kind, details: events.append((kind, Path(details.get("path", "")).name)))
    assert [Path(p).name for p in resumed.indexed] == ["numbers.mp4"]
    assert ("video", "numbers.mp4") in events and ("done", "numbers.mp4") in events
    assert events.index(("video", "numbers.mp4")) < events.index(("info", "numbers.mp4")) \
        < events.index(("frames", "numbers.mp4")) < events.index(("done", "numbers.mp4"))
    with LibraryStore(root / "ray") as lib, LibraryStore(root / "local") as local:
        got = lib.load_frames(lib.video(media / "numbers.mp4")["id"])
        want = local.load_frames(local.video(media / "numbers.mp4")["id"])
        np.testing.assert_array_equal(got.timestamps_s, want.timestamps_s)
        status = lib.stats()["status"]
        assert (status["done"], status["failed"], status["running"]) == (2, 1, 0)


@pytest.mark.slow  # a Ray cluster
def test_ray_signals_equal_local_engine(tmp_path, local_ray, checkpoint, narrated, monkeypatch):
    # the engine's run directly: speech and on-screen text come from the decode tasks, as from the local
    # decoders. Ray runs
    # a 1-CPU task with OMP_NUM_THREADS=1, which moves Whisper's word times by a few hundredths of a second: the
    # local decoders (spawned children, inheriting this environment) get the same setting.
    from videomini.config import IndexConfig
    from videomini.pipelines.index_run import IndexJob, IndexReport
    from videomini.pipelines.video_commit import default_text_embedder

    signals = ["ocr", "speech"]
    with monkeypatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        index_videos(tmp_path / "local", [narrated.path], model_id=str(checkpoint), signals=signals, batch_size=4)
    with LibraryStore(tmp_path / "ray", create=True) as lib:
        plan = lib.plan([narrated.path], model_id=str(checkpoint), signals=signals)
        report = IndexReport()
        config = IndexConfig(model_id=str(checkpoint), batch_size=4, signals=signals)
        RayEngine().run(IndexJob(lib, plan, None, str(checkpoint), config, report, lambda kind, details: None,
                                 default_text_embedder()))
        assert [Path(p).name for p in report.indexed] == [narrated.path.name]
    with LibraryStore(tmp_path / "ray") as ray_lib, LibraryStore(tmp_path / "local") as local_lib:
        mine, local = ray_lib.video(narrated.path), local_lib.video(narrated.path)
        assert mine["signals"] == local["signals"] == "ocr,speech"
        segments = ray_lib.segments(mine["id"])
        assert segments == local_lib.segments(local["id"]) and {s["source"] for s in segments} == {"ocr", "speech"}
        np.testing.assert_array_equal(ray_lib.load_frames(mine["id"]).timestamps_s,
                                      local_lib.load_frames(local["id"]).timestamps_s)


@pytest.mark.slow  # a Ray cluster
def test_ray_signals_only_needs_no_vision_model(tmp_path, local_ray, media, monkeypatch):
    # --no-visual on Ray: no encoder stage and no model at all, even when the default model is not on this machine
    monkeypatch.setenv("VIDEOMINI_MODEL", str(tmp_path / "no-such-model"))
    report = index_videos(tmp_path / "lib", [media / "numbers.mp4"], engine=RayEngine(), visual=False, signals=["ocr"])
    assert [Path(p).name for p in report.indexed] == ["numbers.mp4"] and report.frames == 0, report.failed
    with LibraryStore(tmp_path / "lib") as lib:
        video = lib.video(media / "numbers.mp4")
        assert (video["status"], video["signals"], video["model_id"], video["n_frames"]) == ("done", "ocr", None, 0)


@pytest.mark.slow  # a Ray cluster
def test_ray_model_problem_on_the_workers_is_one_line(tmp_path, local_ray, media):
    # with an address the driver leaves the model to the workers; their failure stops the run in one line
    address = local_ray.get_runtime_context().gcs_address
    missing = tmp_path / "no-such-model"
    with pytest.raises(IndexRunError) as caught:
        index_videos(tmp_path / "lib", [media / "numbers.mp4"], model_id=str(missing),
                     engine=RayEngine(address=address))
    assert str(missing) in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "lib").exists()  # a refused run leaves no half-made library behind


def test_ray_checkpoint_without_projection_fails_before_ray(tmp_path, media):
    tower_only = make_tiny_checkpoint(tmp_path / "tower-only")  # CLIPVisionModel: no visual_projection
    with pytest.raises(IndexRunError, match="no CLIP projection"):
        index_videos(tmp_path / "lib", [media / "numbers.mp4"], model_id=str(tower_only), engine=RayEngine())


def test_ray_not_installed_is_one_line(tmp_path, checkpoint, media, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(IndexRunError, match=r"ray is not installed: pip install 'videomini\[ray\]'"):
        index_videos(tmp_path / "lib", [media / "numbers.mp4"], model_id=str(checkpoint), engine=RayEngine())


def test_ray_unreachable_address_fails_fast(tmp_path, checkpoint, media):
    with pytest.raises(IndexRunError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:1 "):
        index_videos(tmp_path / "lib", [media / "numbers.mp4"], model_id=str(checkpoint),
                     engine=RayEngine(address="127.0.0.1:1"))


@pytest.mark.slow  # a Ray cluster
def test_cli_engine_ray_starts_and_stops_its_own_ray(tmp_path, checkpoint, media, local_ray):
    ray_tmp = Path(tempfile.mkdtemp(prefix="vmt-", dir="/tmp"))  # short: Ray's socket paths must fit
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "videomini.cli", "index", str(media / "numbers.mp4"), str(media / "text.mp4"),
               "--library", str(tmp_path / "lib"), "--model", str(checkpoint), "--engine", "ray", "--json"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        leftovers = list(ray_tmp.iterdir())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 1, out.stderr  # text.mp4 failed: the exit status says so
    report = json.loads(out.stdout)
    assert [Path(p).name for p in report["indexed"]] == ["numbers.mp4"]
    assert [Path(f["path"]).name for f in report["failed"]] == ["text.mp4"]
    assert leftovers == []  # its session folder went with it
    with LibraryStore(tmp_path / "lib") as lib:
        assert lib.stats()["status"]["done"] == 1 and lib.index_is_current()
