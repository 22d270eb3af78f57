"""Stronger models when the user has them: `index --text-model` (a sentence-transformers folder) and
`--asr-model` (a CTranslate2 Whisper folder), recorded in the library and used by `search` and `ask --library`.
Tested with tiny random models of the same architectures, built here (no download)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videomini.search import search_library
from videomini.storage import LibraryStore

from conftest import make_tiny_sentence_transformer, make_tiny_whisper


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videomini.cli", *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "VIDEOMINI_MODEL": "/nonexistent/model"})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return make_tiny_sentence_transformer(folder / "text"), make_tiny_whisper(folder / "asr")


@pytest.mark.slow
def test_index_records_the_models_and_search_embeds_with_the_recorded_one(tmp_path, models, narrated):
    text_model, asr_model = models
    library = tmp_path / "lib"
    out = cli("index", str(narrated.path), "--library", str(library), "--no-visual", "--signals", "speech,ocr",
              "--text-model", str(text_model), "--asr-model", str(asr_model), "--json")
    assert out.returncode == 0, out.stderr
    with LibraryStore(library) as lib:
        meta = lib.meta()
        assert meta["text_model"] == str(text_model) and meta["text_dim"] == "32"  # the tiny BERT's width
        assert meta["asr_model"] == str(Path(asr_model).resolve())
        # the random Whisper's words, not tiny.en's: the bundled model would have heard "London"
        assert not any("London" in s["text"] for s in lib.segments(lib.video(narrated.path)["id"]))
    # a 32-d library: search must embed the query with the recorded model (MiniLM's 384-d would not fit)
    assert search_library(library, "the train", top_k=3)
    found = cli("search", "the train", "--library", str(library), "--json")
    assert found.returncode == 0, found.stderr and json.loads(found.stdout)
    answer = cli("ask", "--library", str(library), "What time does the train leave?", "--json")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["generated_by"] == "signals"


@pytest.mark.parametrize("option, value, reason", [("--asr-model", "/nonexistent/whisper", "no such Whisper model"),
                                                   ("--text-model", "/nonexistent/embedder", "cannot load")])
def test_a_model_that_cannot_load_stops_the_run_before_any_work(tmp_path, narrated, option, value, reason):
    out = cli("index", str(narrated.path), "--library", str(tmp_path / "lib"), "--no-visual", "--signals",
              "speech", option, value)
    assert out.returncode == 2 and out.stderr.startswith(f"error: {option}:") and reason in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
