"""`videomini plan` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from videomini.cli.main import app

runner = CliRunner()


def test_plan_json_default_model() -> None:
    result = runner.invoke(app, ["plan", "--gpu-mem", "24GB", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["model"] == "ICTNLP/llava-mini-llama-3.1-8b"
    assert plan["kv_bytes_per_frame"] == 131072
    assert plan["max_frames"] >= 10_000
    assert plan["context_length"] == 131072
    assert set(plan["weights_bytes"]) == {"llm", "prefusion", "vision", "compressor", "projector"}
    assert plan["hours_of_video"] == plan["max_frames"] / 3600


def test_plan_table_for_local_checkpoint(golden_dir: Path) -> None:
    result = runner.invoke(app, ["plan", "--model", str(golden_dir / "llavamini_tiny"), "--gpu-mem", "2GB",
                                 "--dtype", "int8"])
    assert result.exit_code == 0, result.output
    words = " ".join(result.stdout.split())  # the table title wraps where the checkpoint path is long
    for text in ("weights: llm", "per frame: KV", "frames that fit in memory", "frame budget", "int8 weights",
                 "129,536"):  # the context cap: 131,072 positions − 1,536 reserved
        assert text in words


def test_plan_json_local_checkpoint_and_options(golden_dir: Path) -> None:
    result = runner.invoke(app, ["plan", "-m", str(golden_dir / "llavamini_tiny"), "--device", "cpu",
                                 "--dtype", "fp32", "--prompt-tokens", "72", "--answer-tokens", "0", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["dtype"] == "fp32" and plan["kv_dtype"] == "fp32"
    assert plan["frames_fit_context"] == 131072 - 72
    assert plan["parameters"]["vision"] == 9_293_952  # clip_tiny, found through mm_vision_tower "../clip_tiny"


def test_plan_errors_are_one_line() -> None:
    for args, named in ((["--model", "nobody/nothing"], "nobody/nothing"), (["--gpu-mem", "lots"], "--gpu-mem"),
                        (["--dtype", "fp8"], "--dtype")):
        result = runner.invoke(app, ["plan", *args, "--json"])
        assert result.exit_code == 1
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0]
