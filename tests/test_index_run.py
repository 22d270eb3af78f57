"""`index`, `search`, `library`, `ask --library` end to end with a tiny model that has a CLIP text tower."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from videomini.cli.main import app
from videomini.pipelines.local_engine import LocalEngine
from videomini.storage import LibraryStore

from synth import damage, make_audio_only, make_numbered_video, truncate


@pytest.fixture(scope="module")
def media(tmp_path_factory, videos_dir):
    """Good videos (real clips + generated) and a bad set; names chosen so that sorting interleaves them."""
    root = tmp_path_factory.mktemp("media")
    good = [shutil.copy(videos_dir / "bikes.mp4", root / "b_bikes.mp4"),
            shutil.copy(videos_dir / "carphone_pristine.mp4", root / "d_carphone.mp4")]
    good.append(make_numbered_video(root / "f_numbers.mp4", seconds=6, fps=5))
    good.append(make_numbered_video(root / "h_numbers two.mp4", seconds=4, fps=5))
    bad = {"a_empty.mp4": "", "c_text.mp4": "this is not a video\n"}
    for name, text in bad.items():
        (root / name).write_text(text)
    make_audio_only(root / "e_audio_only.mp4")
    long = make_numbered_video(root / "source.mp4", seconds=6, fps=5)  # index at the end: a cut file is unreadable
    truncate(long, root / "g_truncated.mp4", 0.6)
    long.unlink()
    return root, sorted(Path(p) for p in good)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videomini.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def catalog_rows(library: Path) -> list[tuple]:
    db = sqlite3.connect(library / "catalog.sqlite")
    rows = db.execute("SELECT id, path, fingerprint, status, n_frames, shard FROM videos ORDER BY id").fetchall()
    db.close()
    return rows


def index_contents(library: Path) -> tuple[np.ndarray, np.ndarray]:
    with LibraryStore(library) as lib:
        return lib.indexed_vectors()


def test_index_good_and_bad_then_skip_unchanged(tmp_path, checkpoint, media):
    root, good = media
    library = tmp_path / "lib"
    out = run_cli("index", str(root), "--library", str(library), "--model", str(checkpoint), "--json")
    assert out.returncode == 1, out.stderr  # some failed: the exit status says so
    report = json.loads(out.stdout)
    assert sorted(Path(p).name for p in report["indexed"]) == [p.name for p in good]
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == {"a_empty.mp4", "c_text.mp4", "e_audio_only.mp4", "g_truncated.mp4"}
    for name, error in failed.items():
        assert name in error and "\n" not in error
    with LibraryStore(library) as lib:
        stats = lib.stats()
        assert stats["status"]["done"] == 4 and stats["status"]["failed"] == 4 and lib.index_is_current()
        assert {Path(f["path"]).name for f in stats["failures"]} == set(failed)
    again = run_cli("index", str(root), "--library", str(library), "--model", str(checkpoint), "--json")
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["indexed"] == [] and len(rerun["skipped"]) == 8 and rerun["failed"] == []
    # a changed file is re-indexed, the others skipped
    make_numbered_video(root / "f_numbers.mp4", seconds=3, fps=5)
    changed = json.loads(run_cli("index", str(root), "--library", str(library), "--model", str(checkpoint),
                                 "--json").stdout)
    assert [Path(p).name for p in changed["indexed"]] == ["f_numbers.mp4"]
    with LibraryStore(library) as lib:
        assert lib.video(root / "f_numbers.mp4")["n_frames"] == 3


CRASH_POINTS = ["shard_tmp_written", "shard_durable", "done_committed", "index_files_written", "manifest_published"]


@pytest.mark.slow  # six index runs, each killed at a durability point
def test_sigkill_at_random_points_then_rerun_equals_uninterrupted(tmp_path, checkpoint, media):
    _, good = media
    videos = [str(p) for p in good]
    clean = tmp_path / "clean"
    assert run_cli("index", *videos, "--library", str(clean), "--model", str(checkpoint)).returncode == 0
    rng = random.Random(7)
    crashed = tmp_path / "crashed"
    points = CRASH_POINTS + [rng.choice(CRASH_POINTS[:3])]
    for point in points:  # >= 5 kills, each at a random occurrence of its point
        n = rng.randint(1, 2) if point in CRASH_POINTS[:3] else 1
        out = subprocess.run([sys.executable, str(Path(__file__).parent / "crash.py"), point, str(n), "index",
                              *videos, "--library", str(crashed), "--model", str(checkpoint)],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode in (-9, 0), out.stderr[-1500:]
    final = run_cli("index", *videos, "--library", str(crashed), "--model", str(checkpoint))
    assert final.returncode == 0, final.stderr[-1500:]
    assert catalog_rows(crashed) == catalog_rows(clean)
    clean_ids, clean_vectors = index_contents(clean)
    crashed_ids, crashed_vectors = index_contents(crashed)
    assert np.array_equal(clean_ids, crashed_ids) and len(np.unique(crashed_ids)) == len(crashed_ids)
    assert np.array_equal(clean_vectors, crashed_vectors)
    assert not [p for p in crashed.rglob("*") if p.name.startswith(".tmp-")]


def test_search_finds_the_known_frame_and_ask_cites_it(tmp_path, checkpoint, media, monkeypatch):
    """Known vectors injected: the query's text embedding is made equal to one stored frame's image embedding,
    so search must return that video at that time, and `ask --library` must cite frames from that video."""
    import videomini.search as search_module
    from videomini.ask import VideoMini
    from videomini.pipelines import index_videos

    _, good = media
    library = tmp_path / "lib"
    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    report = index_videos(library, good, vm, engine=LocalEngine(workers=2))
    assert len(report.indexed) == 4 and not report.failed
    with LibraryStore(library) as lib:
        target = lib.load_frames(lib.video(good[2])["id"])  # a numbered video
    frame = 1
    injected = target.embeddings[frame]

    questions = ("the frame showing number twenty", "What number is shown?")

    class KnownTower:
        """The questions embed to that frame's own embedding; any other text (the generic queries search
        calibrates against) to a random direction."""

        dim = injected.shape[0]

        def embed(self, texts):
            import torch

            texts = [texts] if isinstance(texts, str) else list(texts)
            rng = np.random.default_rng(0)
            rows = [injected if text in questions else rng.standard_normal(self.dim) for text in texts]
            return torch.from_numpy(np.stack(rows).astype(np.float32))

        def encode(self, texts):
            return self.embed(list(texts)).numpy()

    monkeypatch.setattr(search_module, "text_tower_for", lambda model_id, device="cpu": KnownTower())
    results = search_module.search_library(library, questions[0], top_k=3, thumbnails_dir=tmp_path / "thumbs")
    best = results[0]
    assert Path(best.video) == good[2].resolve()
    assert best.start_s <= target.timestamps_s[frame] <= best.end_s
    # the moment's strongest hit is that frame, or a neighbour that differs from it by one digit
    assert best.signals == ["visual"] and best.matches[0]["cosine"] > 0.99
    assert best.thumbnail and Path(best.thumbnail).is_file()

    vm.text_tower = KnownTower()
    from videomini.ask_policy import ask_library

    answer = ask_library(library, questions[1], model=vm, top_k=2, max_new_tokens=3)
    assert answer.text and answer.frames_used > 0
    assert any(Path(e.video) == good[2].resolve() for e in answer.evidence)


def test_library_cli_stats_remove_and_second_writer(tmp_path, checkpoint, media):
    _, good = media
    library = tmp_path / "lib"
    runner = CliRunner()
    assert run_cli("index", str(good[0]), str(good[2]), "--library", str(library), "--model",
                   str(checkpoint)).returncode == 0
    stats = json.loads(runner.invoke(app, ["library", str(library), "--json"]).stdout)
    assert stats["videos"] == 2 and stats["frames"] > 10 and stats["bytes_on_disk"] > 0
    with LibraryStore(library, writer=True):  # another indexer holds the library
        busy = run_cli("index", str(good[1]), "--library", str(library), "--model", str(checkpoint))
    assert busy.returncode == 2 and str(library) in busy.stderr and "Traceback" not in busy.stderr
    result = runner.invoke(app, ["library", str(library), "--remove", str(good[0]), "--json"])
    assert result.exit_code == 0, result.output
    after = json.loads(result.stdout)
    assert after["videos"] == 1 and after["index"]["n_vectors"] == after["frames"]


def test_python_api_index_search_ask_remove(tmp_path, checkpoint, media):
    """`videomini.Library(dir)`: index (creating the folder), search, ask, stats, remove -- one model load."""
    import videomini

    _, good = media
    lib = videomini.Library(tmp_path / "new" / "lib", model=str(checkpoint))
    report = lib.index(good[:2], engine=LocalEngine(workers=1))
    assert sorted(report.indexed) == sorted(str(p.resolve()) for p in good[:2]) and not report.failed
    assert lib.index(good[:2]).skipped == [(str(p.resolve()), "unchanged") for p in good[:2]]
    results = lib.search("a person on a bike", top_k=3)
    assert results and all(Path(r.video) in {p.resolve() for p in good[:2]} for r in results)
    assert results == sorted(results, key=lambda r: -r.score)
    answer = lib.ask("What is happening?", top_k=2, max_new_tokens=2)
    assert answer.generated_by == "llava-mini" and answer.evidence
    assert lib.stats()["status"]["done"] == 2 and lib.model_id == str(checkpoint)
    assert lib.remove([good[0]]) == [str(good[0].resolve())]
    assert [v["path"] for v in lib.videos()] == [str(good[1].resolve())]


def test_index_warnings_on_stderr_and_a_missing_model_in_one_line(tmp_path, checkpoint):
    clip = make_numbered_video(tmp_path / "clip.mp4", seconds=10, fps=5, faststart=True)
    hurt = damage(clip, tmp_path / "clip_b.mp4", 4.0, 5.0)
    out = run_cli("index", str(hurt), "--library", str(tmp_path / "lib"), "--model", str(checkpoint))
    assert out.returncode == 0, out.stderr
    [warning] = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: {hurt}: damaged video data between ")
    assert "damaged video data" not in out.stdout and "RuntimeWarning" not in out.stderr
    # the model is loaded only when a file needs encoding, and a missing one is one line with the way out
    missing = tmp_path / "no-such-model"
    out = run_cli("index", str(clip), "--library", str(tmp_path / "lib"), "--model", str(missing))
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(missing) in line
    assert line.endswith("(or index speech and on-screen text only: --no-visual --signals speech,ocr)")
