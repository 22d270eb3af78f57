"""Limits on every input (videomini/limits.py), checked at the CLI's edge before any model loads and before the
catalog is touched: issue 23's rows 1 (CLI), 10, 11 and 12, and property tests of the flag parsing."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from videomini import limits
from videomini.cli.main import app
from videomini.errors import InvalidInput, LimitExceeded

MISSING_MODEL = "/nonexistent/videomini-model"  # a run that gets past the checks fails here, with exit 2


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The one `error:` line of a failed command, with no traceback."""
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def clip(golden_dir) -> Path:
    return golden_dir / "video_10f_2fps.mp4"


# ----------------------------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("fps", [1e9, math.inf, -math.inf, math.nan, 0.0, -1.0, 1e-9])
def test_fps_outside_its_range_is_refused(fps):
    with pytest.raises(InvalidInput, match="--fps"):
        limits.check_fps(fps)


@pytest.mark.parametrize("fps", [limits.FPS_MIN, 0.5, 1, 30, limits.FPS_MAX])
def test_fps_within_its_range_is_kept(fps):
    assert limits.check_fps(fps) == fps


@pytest.mark.parametrize("value", ["99999999999999999999999", "²", "-1", "1e3", " ", "0x10", 2**63, -1, 1.5,
                                   math.inf, True])
def test_ids_are_bounded_integers(value):
    with pytest.raises(InvalidInput, match="video id"):
        limits.check_id(value, "video id")


def test_ids_within_bounds():
    assert limits.check_id("42") == 42 and limits.check_id(limits.ID_MAX) == limits.ID_MAX and limits.check_id(0) == 0


def test_questions_are_non_blank_and_bounded():
    assert limits.check_question("  What happens?\n") == "What happens?"
    for blank in ("", "   ", "\n\t"):
        with pytest.raises(InvalidInput, match="empty question"):
            limits.check_question(blank)
    with pytest.raises(LimitExceeded, match="QUESTION_MAX_CHARS"):
        limits.check_question("x" * (limits.QUESTION_MAX_CHARS + 1))
    with pytest.raises(LimitExceeded, match="QUESTION_MAX_TOKENS"):
        limits.check_question_tokens(limits.QUESTION_MAX_TOKENS + 1)


def test_image_pixels_and_the_decoded_pixel_budget():
    assert limits.check_image_pixels(4096, 4096) == limits.IMAGE_MAX_PIXELS
    with pytest.raises(LimitExceeded, match="IMAGE_MAX_PIXELS"):
        limits.check_image_pixels(12000, 12000)
    budget = limits.PixelBudget(total=100)
    assert budget.take(60) == 60
    with pytest.raises(limits.DecodeBudgetFull) as busy:  # fits alone, not beside what is held: retry later
        budget.take(50)
    assert busy.value.http_status == 503 and busy.value.http_headers()["Retry-After"]
    with pytest.raises(LimitExceeded, match="SERVER_DECODED_PIXELS"):  # never fits: over the limit
        budget.take(101)
    budget.give_back(60)
    assert budget.take(100) == 100


# -------------------------------------------------------------------------------------------- the CLI (rows 1, 10, 12)


@pytest.mark.parametrize("fps", ["1e9", "inf", "nan", "0", "-1", "1e-9"])
def test_row10_ask_with_a_bad_fps_is_one_line_before_any_model_loads(clip, fps):
    result = cli("ask", clip, "What is shown?", "--fps", fps, "--model", MISSING_MODEL, "--no-fallback")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "--fps" in line and MISSING_MODEL not in line  # refused before the model was looked for


@pytest.mark.parametrize("fps", ["nan", "inf", "0", "-1", "1e9"])
def test_row10_index_with_a_bad_fps_touches_no_library(tmp_path, clip, fps):
    library = tmp_path / "lib"
    result = cli("index", clip, "--library", library, "--fps", fps, "--model", MISSING_MODEL)
    assert result.exit_code == 1 and "--fps" in one_error_line(result)
    assert not library.exists()  # nothing marked running or failed: the next normal run indexes everything


@pytest.mark.parametrize("fps", [math.nan, math.inf, 0.0, 1e9])
def test_row10_the_python_api_refuses_a_bad_fps_before_the_catalog(tmp_path, clip, fps):
    import videomini
    from videomini.config import AskConfig

    with pytest.raises(InvalidInput, match="fps"):
        videomini.Library(tmp_path / "lib", model=MISSING_MODEL).index([clip], fps=fps)
    assert not (tmp_path / "lib" / "catalog.sqlite").exists()
    with pytest.raises(InvalidInput, match="fps"):
        AskConfig(fps=fps)


@pytest.mark.parametrize("flags, field", [
    (["--max-frames", "0"], "--max-frames"), (["--max-frames", "-3"], "--max-frames"), (["--top-k", "0"], "--top-k"),
    (["--max-new-tokens", "0"], "--max-new-tokens")])
def test_counts_must_be_positive(clip, flags, field):
    result = cli("ask", clip, "What is shown?", *flags, "--model", MISSING_MODEL, "--no-fallback")
    assert result.exit_code == 1 and field in one_error_line(result)


@pytest.mark.parametrize("question", ["", "   ", "\n"])
def test_row12_blank_questions_are_refused(tmp_path, clip, question):
    for args in (["ask", clip, question], ["ask", "--library", tmp_path, question],
                 ["search", question, "--library", tmp_path]):
        result = cli(*args, "--model", MISSING_MODEL) if args[0] == "ask" else cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "empty" in one_error_line(result)


def test_row1_a_100k_character_question_is_one_line_at_once(clip, tmp_path):
    question = "why " * 25_000
    for args in (["ask", clip, question], ["ask", "--library", tmp_path, question]):
        result = cli(*args, "--model", MISSING_MODEL, "--no-fallback")
        assert result.exit_code == 1
        assert "QUESTION_MAX_CHARS" in one_error_line(result)
    result = cli("search", "why " * 1000, "--library", tmp_path)
    assert result.exit_code == 1 and "QUERY_MAX_CHARS" in one_error_line(result)


def test_row1_a_question_over_the_token_limit_is_refused_before_fusion(clip, checkpoint):
    """Under the character limit but over QUESTION_MAX_TOKENS (single letters: one token each)."""
    question = " ".join("abcdefghij"[i % 10] for i in range(1500))
    assert len(question) <= limits.QUESTION_MAX_CHARS
    result = cli("ask", clip, question, "--model", checkpoint, "--device", "cpu", "--no-fallback")
    assert result.exit_code == 1 and "QUESTION_MAX_TOKENS" in one_error_line(result)


# ----------------------------------------------------------------------------------------------- row 11


def test_row11_a_relative_model_is_stored_absolute(tmp_path, checkpoint, clip, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(checkpoint, tmp_path)
    result = cli("index", clip, "--library", "lib", "--model", relative, "--workers", "1")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "lib" / "catalog.sqlite") as db:
        [(model_id,)] = db.execute("SELECT DISTINCT model_id FROM videos").fetchall()
    assert Path(model_id).is_absolute() and Path(model_id) == Path(checkpoint).resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the library's model is found from another folder
    result = cli("search", "a number", "--library", tmp_path / "lib", "--json")
    assert result.exit_code == 0, result.output
    matched = {m["signal"] for moment in json.loads(result.stdout) for m in moment["matches"]}
    assert "visual" in matched  # the frames were searched (a relative id would have found no model here)


# ----------------------------------------------------------------------------------------------- properties

CHECK = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@CHECK
@given(fps=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, limits.FPS_MIN, limits.FPS_MAX]))
def test_property_ask_fps_is_refused_exactly_outside_its_range(clip, fps):
    """Any float on the command line: within [FPS_MIN, FPS_MAX] the run goes on (to the missing model, exit 2);
    outside, exit 1 with one line naming --fps. Never a traceback."""
    result = cli("ask", clip, "Q?", "--fps", repr(fps), "--model", MISSING_MODEL, "--no-fallback")
    valid = math.isfinite(fps) and limits.FPS_MIN <= fps <= limits.FPS_MAX
    assert result.exit_code == (2 if valid else 1), (fps, result.output)
    line = one_error_line(result)
    assert (MISSING_MODEL in line) if valid else ("--fps" in line)


@CHECK
@given(max_frames=st.integers(min_value=-10**6, max_value=10**7), top_k=st.integers(min_value=-5, max_value=500))
def test_property_counts_are_refused_exactly_outside_their_range(clip, max_frames, top_k):
    result = cli("ask", clip, "Q?", "--max-frames", max_frames, "--top-k", top_k, "--model", MISSING_MODEL,
                 "--no-fallback")
    frames_ok, top_k_ok = 1 <= max_frames <= limits.FRAMES_MAX, 1 <= top_k <= limits.TOP_K_MAX
    assert result.exit_code == (2 if frames_ok and top_k_ok else 1), result.output
    line = one_error_line(result)
    if not frames_ok:
        assert "--max-frames" in line
    elif not top_k_ok:
        assert "--top-k" in line


@CHECK
@given(text=st.text(max_size=60))
@example(text="--")
@example(text="-0")
@example(text="\u2028")
def test_property_any_question_text_is_taken_or_refused_in_one_line(clip, text):
    result = cli("ask", "--model", MISSING_MODEL, "--no-fallback", "--", clip, text)  # "--": text like "-0" too
    assert result.exit_code in (1, 2), result.output
    line = one_error_line(result)
    assert (result.exit_code == 1) == (not text.strip()), line


def test_row11_the_python_api_records_a_relative_model_absolute(tmp_path, checkpoint, monkeypatch):
    from videomini.config import IndexConfig

    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(checkpoint, tmp_path)
    assert IndexConfig(model_id=relative).model_id == str(Path(checkpoint).resolve())
    assert IndexConfig(model_id="ICTNLP/llava-mini-llama-3.1-8b").model_id == "ICTNLP/llava-mini-llama-3.1-8b"


@pytest.mark.parametrize("args", [
    ["plan", "--fps", "nan", "--gpu-mem", "24GB"], ["plan", "--fps", "inf", "--gpu-mem", "24GB"],
    ["watch", "SOURCE", "--alert", "   "], ["watch", "SOURCE", "--alert", "x" * 5000]])
def test_plan_and_watch_flags_are_checked_before_anything_runs(clip, args):
    result = cli(*[clip if a == "SOURCE" else a for a in args], "--model", MISSING_MODEL) if args[0] == "watch" \
        else cli(*args)
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    assert ("--fps" in line) or ("--alert" in line), line


def test_a_live_question_over_the_limits_is_answered_with_its_reason():
    """A question typed into `watch` that is over the limits gets its one line; the stream and later questions
    go on."""
    from videomini.pipelines.watch import answer_questions

    class Session:
        options = type("Options", (), {"timeout_s": 1.0})()

        def wait_for_frames(self, n, timeout_s):
            return True

        def ask(self, question, **_):
            limits.check_question_tokens(len(question.split()))
            return f"answer to {question}"

    answers = []
    answer_questions(Session(), ["word " * 2000, "short?"], lambda q, a: answers.append(a))
    assert isinstance(answers[0], LimitExceeded) and answers[1] == "answer to short?"
