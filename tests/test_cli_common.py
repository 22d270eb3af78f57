"""What every command shares: warnings and errors as one line each on stderr."""

from __future__ import annotations

import os
import subprocess
import sys

from synth import damage, make_numbered_video


def test_ask_shows_a_decoder_warning_as_one_cli_line(tmp_path, checkpoint):
    # the decoder's warning about a damaged file used to come out as Python's RuntimeWarning plus a source line
    clip = make_numbered_video(tmp_path / "clip.mp4", seconds=10, fps=5, faststart=True)
    hurt = damage(clip, tmp_path / "clip_b.mp4", 4.0, 5.0)
    out = subprocess.run([sys.executable, "-m", "videomini.cli", "ask", str(hurt), "What number is shown?",
                          "--model", str(checkpoint), "--max-new-tokens", "2"], capture_output=True, text=True,
                         env=dict(os.environ), timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"warning: {hurt}: damaged video data between " in out.stderr
    assert "RuntimeWarning" not in out.stderr and ".py:" not in out.stderr
