"""Each command imports what its job needs and nothing more: a start-up is paid in imports (transformers' Llama
modelling alone is seconds), so `--help`, a missing file or a search never pay for the LLM. Each case runs the
console script in a fresh interpreter and reads `sys.modules` at its end — which modules, not how long."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synth import make_numbered_video

LLM = "transformers.models.llama.modeling_llama"  # the LLM stack
CLIP = "transformers.models.clip.modeling_clip"  # the CLIP tower (vision and text)
QUANTIZATION = ("hqq", "torchao", "optimum", "bitsandbytes")  # --quantize / --kv-cache only
OPTIONAL = ("ray", "fastapi", "uvicorn")  # --engine ray, `serve`
EXTRACTORS = ("faster_whisper", "rapidocr_onnxruntime")  # indexing / asking about a video with --signals
NOTHING_HEAVY = ("torch", "transformers", "faiss", "av", "sentence_transformers", LLM, CLIP, *QUANTIZATION,
                 *OPTIONAL, *EXTRACTORS)

# Runs the console script with the given arguments, then writes the names of the modules it imported.
PROBE = """
import json, sys
out, sys.argv = sys.argv[1], ["videomini"] + sys.argv[2:]
try:
    from videomini.cli.main import main
    main()
except SystemExit:
    pass
finally:
    with open(out, "w") as f:
        json.dump(sorted(name for name, module in sys.modules.items() if module is not None), f)
"""


def imported_by(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    out = tmp_path / "modules.json"
    out.unlink(missing_ok=True)
    run = subprocess.run([sys.executable, "-c", PROBE, str(out), *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "120", **(env or {})}, timeout=300)
    assert out.is_file(), run.stderr
    return set(json.loads(out.read_text()))


def assert_not_imported(modules: set[str], names: tuple[str, ...]) -> None:
    assert not modules & set(names), f"imported {sorted(modules & set(names))}"


@pytest.fixture(scope="module")
def libraries(tmp_path_factory, checkpoint):
    """A library with frames (tiny checkpoint) and one with on-screen text only (no vision model)."""
    from videomini.pipelines import index_videos

    from narrated import Caption, make_narrated_video

    root = tmp_path_factory.mktemp("imports")
    clip = make_numbered_video(root / "numbers.mp4", seconds=3, fps=5)
    frames = index_videos(root / "frames", [clip], model_id=str(checkpoint))
    sign = make_narrated_video(root / "sign.mp4", duration_s=3.0, lines=[], with_audio=False,
                               captions=[Caption(0.5, 2.5, "LOADING DOCK")])
    text = index_videos(root / "text", [sign.path], visual=False, signals=("ocr",))
    assert frames.indexed and text.indexed, (frames.failed, text.failed)
    return root / "frames", root / "text", clip


def test_help_and_a_missing_file_import_nothing_heavy(tmp_path):
    for args in (["--help"], ["ask", "--help"], ["ask", tmp_path / "missing.mp4", "what happens?"],
                 ["info", tmp_path / "missing.mp4"], ["search", "x", "--library", tmp_path / "no-library"]):
        assert_not_imported(imported_by(tmp_path, *args), NOTHING_HEAVY)


def test_info_and_library_import_no_model_stack(tmp_path, libraries):
    frames, _, clip = libraries
    assert_not_imported(imported_by(tmp_path, "info", clip), ("torch", "transformers", *QUANTIZATION))
    assert_not_imported(imported_by(tmp_path, "library", frames), ("torch", "transformers", *QUANTIZATION))


def test_search_imports_neither_torch_nor_transformers(tmp_path, libraries):
    """`index` exported the query encoders (ONNX): a search embeds its query with onnxruntime alone."""
    frames, text, _ = libraries
    for library, query in ((frames, "a number"), (text, "loading dock")):
        modules = imported_by(tmp_path, "search", query, "--library", library)
        assert "onnxruntime" in modules  # the query was embedded: the search really ran
        assert_not_imported(modules, ("torch", "transformers", "sentence_transformers", LLM, CLIP, *QUANTIZATION,
                                      *OPTIONAL, *EXTRACTORS))


def test_search_without_exports_loads_the_clip_text_tower_but_not_the_llm(tmp_path, libraries):
    frames, _, _ = libraries
    modules = imported_by(tmp_path, "search", "a number", "--library", frames,
                          env={"VIDEOMINI_CACHE": str(tmp_path / "empty-cache")})
    assert CLIP in modules  # the query is embedded by the CLIP text tower: the search really ran
    assert_not_imported(modules, (LLM, *QUANTIZATION, *OPTIONAL, *EXTRACTORS))
    assert any((tmp_path / "empty-cache" / "query-encoders").glob("clip-*/model.onnx"))  # exported for next time


def test_ask_a_text_only_library_imports_neither_the_llm_nor_clip(tmp_path, libraries):
    _, text, _ = libraries
    modules = imported_by(tmp_path, "ask", "--library", text, "Where is the loading dock?")
    assert "onnxruntime" in modules  # the question was embedded
    assert_not_imported(modules, (LLM, CLIP, *QUANTIZATION, *OPTIONAL, *EXTRACTORS))


def test_ask_imports_quantization_libraries_only_for_the_options_that_use_them(tmp_path, checkpoint, libraries):
    _, _, clip = libraries
    args = ["ask", clip, "What number is shown?", "--model", checkpoint, "--max-new-tokens", "2", "--no-stream"]
    modules = imported_by(tmp_path, *args)
    assert LLM in modules  # it answered with the LLM
    assert_not_imported(modules, (*QUANTIZATION, *OPTIONAL, *EXTRACTORS))
    assert "hqq" in imported_by(tmp_path, *args, "--kv-cache", "int8")  # tests/test_backends.py: and it works
