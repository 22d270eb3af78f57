"""An offline user without any LLaVA-Mini checkpoint: the README's commands, run exactly as written, build a
library of the example video's speech and on-screen text, search it and ask it; the tiny checkpoint then adds
the frames without transcribing again."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_block(marker: str) -> list[str]:
    """The commands of the README's fenced block after `<!-- marker: ... -->`, one a line."""
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- {marker}:.*?-->\n```bash\n(.*?)```", text, re.S)
    assert found, f"README.md: no block marked {marker}"
    return [line for line in found.group(1).splitlines() if line.strip() and not line.startswith("#")]


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """One README line in a shell, with this interpreter's `python` and `videomini` first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    env.pop("VIDEOMINI_MODEL", None)
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_readme_offline_library_then_the_tiny_checkpoint(tmp_path):
    # the commands run from a copy of the repository's example folder (and the test video maker it uses)
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.mp4"))
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "narrated.py", tmp_path / "tests" / "narrated.py")
    make, index, search, ask = readme_block("offline-library")
    assert run(make, tmp_path).returncode == 0
    out = run(index, tmp_path)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: frames are not indexed"), out.stderr
    assert "1 indexed (0 frames" in out.stdout
    out = run(search, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "The train to London depart at noon" in out.stdout
    out = run(ask, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("The train to London depart at noon") == 1  # the answer is printed once
    assert out.stdout.index("The train to London depart at noon") < out.stdout.index("feed the cat")

    tiny, with_frames, listing = readme_block("tiny-checkpoint")
    out = run(tiny, tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("wrote a tiny random LLaVA-Mini"), out.stderr
    assert not out.stderr.strip(), out.stderr  # no progress bars, no quantization libraries failing to load
    out = run(with_frames, tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"1 indexed \(19 frames, \d+ text segments\)", out.stdout), out.stdout
    out = run(listing, tmp_path)
    assert out.returncode == 0 and "tiny-checkpoint" in out.stdout and "19" in out.stdout, out.stdout


def test_adding_frames_keeps_the_stored_text_and_refused_runs_leave_nothing(tmp_path, checkpoint, monkeypatch):
    from videomini.pipelines import index_videos, local_engine
    from videomini.pipelines.index_run import IndexRunError
    from videomini.storage import LibraryStore

    from narrated import Caption, make_narrated_video

    sign = make_narrated_video(tmp_path / "sign.mp4", duration_s=3.0, lines=[], with_audio=False,
                               captions=[Caption(0.5, 2.5, "LOADING DOCK")]).path
    library = tmp_path / "lib"
    assert index_videos(library, [sign], visual=False, signals=("ocr",)).indexed
    with LibraryStore(library) as store:
        text_before = store.segments(store.video(sign)["id"])
    asked: list[list[str]] = []
    job = local_engine.DecodeJob

    def recording_job(ctx, path, fps, batch_size, timeout_s, signals, *rest):
        asked.append(list(signals))
        return job(ctx, path, fps, batch_size, timeout_s, signals, *rest)

    monkeypatch.setattr(local_engine, "DecodeJob", recording_job)
    report = index_videos(library, [sign], model_id=str(checkpoint))
    assert report.indexed and report.frames == 3 and asked == [[]]  # frames decoded; no OCR again
    with LibraryStore(library) as store:
        row = store.video(sign)
        assert row["n_frames"] == 3 and store.segments(row["id"]) == text_before
    # a later run without --model uses the model the library was indexed with: nothing to redo (the default
    # model, not on this machine, would have made the file "changed" and failed to load)
    again = index_videos(library, [sign])
    assert again.indexed == [] and again.skipped == [(str(sign.resolve()), "unchanged")], again
    # a run refused for want of a model leaves no library folder behind
    missing = tmp_path / "no-such-model"
    with pytest.raises(IndexRunError, match="no-such-model"):
        index_videos(tmp_path / "new", [sign], model_id=str(missing))
    assert not (tmp_path / "new").exists()
