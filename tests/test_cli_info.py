"""`videomini info`: the probe as a table or JSON; bad files give one `error:` line and a non-zero exit."""

from __future__ import annotations

import json

from typer.testing import CliRunner

try:  # `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests import synth
except ImportError:
    import synth
from videomini.cli.main import app

runner = CliRunner()


def test_info_json(tmp_path):
    path = synth.make_numbered_video(tmp_path / "clip with space.mp4", 2, 10, rotate=90, audio=True)
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["path"] == str(path)
    assert data["duration_s"] == 2.0 and data["fps"] == 10.0 and data["frame_count"] == 20
    assert (data["width"], data["height"], data["rotation"]) == (64, 96, 90)
    assert data["has_audio"] is True and data["codec"] == "h264"


def test_info_table(tmp_path):
    path = synth.make_numbered_video(tmp_path / "a.mp4", 1, 10)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0
    assert "96×64" in result.stdout and "h264" in result.stdout


def test_info_errors_are_one_line(tmp_path):
    missing = tmp_path / "missing.mp4"
    result = runner.invoke(app, ["info", str(missing)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {missing}: no such file"
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n")
    result = runner.invoke(app, ["info", str(text), "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {text}: ")
