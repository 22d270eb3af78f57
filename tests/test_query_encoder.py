"""The ONNX query encoders that let `search` start without torch: they must embed exactly as the torch models
they were exported from, notice a changed model, and never fail a search (a damaged or missing export means the
torch path)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from videomini import query_encoder

TEXTS = ["When does the train to London leave?", "x", "", "the weather today " * 120,  # past both max lengths
         "Ünïcödé café — naïve 東京", "WARNING WET FLOOR"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VIDEOMINI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "query-encoders"


@pytest.fixture(scope="module")
def clip_tower(checkpoint):
    from videomini.retrieval import load_text_tower

    return load_text_tower(checkpoint / "clip")


@pytest.fixture(scope="module")
def minilm():
    from videomini.signals.text import default_embedder

    return default_embedder()


def export_of(kind: str, model, name: str):
    exported = model.export_query_encoder(name) if kind == "clip" else model.export_query_encoder()
    assert exported
    return query_encoder.cached(kind, name)


@pytest.mark.parametrize("kind", ["sentence", "clip"])
def test_an_export_embeds_as_the_torch_model_does(kind, cache, clip_tower, minilm, checkpoint):
    model, name = (clip_tower, str(checkpoint)) if kind == "clip" else (minilm, minilm.label)
    exported = export_of(kind, model, name)
    assert exported is not None and exported.name == name
    ours, theirs = exported.encode(TEXTS), model.encode(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), exported.dim) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # one at a time (no padding) as in a batch; a query's vector does not depend on its neighbours
    np.testing.assert_allclose(exported.encode([TEXTS[0]])[0], ours[0], atol=1e-5)
    assert exported.encode([]).shape == (0, exported.dim)


def test_a_changed_model_reads_as_absent_and_is_exported_again(cache, checkpoint, tmp_path):
    import shutil

    from videomini.retrieval import load_text_tower

    tower_dir = tmp_path / "clip"
    shutil.copytree(checkpoint / "clip", tower_dir)
    assert export_of("clip", load_text_tower(tower_dir), "mine") is not None
    weights = next(tower_dir.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # replaced in place
    assert query_encoder.cached("clip", "mine") is None
    assert export_of("clip", load_text_tower(tower_dir), "mine") is not None


def test_a_damaged_export_means_the_torch_path_and_export_never_raises(cache, clip_tower, checkpoint):
    name = str(checkpoint)
    export_of("clip", clip_tower, name)
    graph = query_encoder.entry_folder("clip", name) / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated
    assert query_encoder.cached("clip", name) is None
    # a cache that cannot be written (a file where its folder should be): no export, no exception
    query_encoder.entry_folder("clip", name).parent.rename(cache.parent / "moved")
    cache.write_text("not a folder")
    assert clip_tower.export_query_encoder(name) is False
    assert query_encoder.cached("clip", name) is None


def test_search_runs_on_the_exports_that_index_prepared(cache, checkpoint, tmp_path):
    """`index` exports the library's query encoders; the search then uses them and gives the torch path's
    ranking (the CLI's import test checks that it imports no torch)."""
    from videomini.pipelines import index_videos
    from videomini.search import library_text_embedder, search_library, text_tower_for
    from videomini.storage import LibraryStore

    from narrated import Caption, make_narrated_video
    from synth import make_numbered_video

    clip = make_narrated_video(tmp_path / "sign.mp4", duration_s=3.0, lines=[], with_audio=False,
                               captions=[Caption(0.5, 2.5, "LOADING DOCK")]).path
    numbers = make_numbered_video(tmp_path / "numbers.mp4", seconds=3, fps=5)
    report = index_videos(tmp_path / "lib", [clip, numbers], model_id=str(checkpoint), signals=("ocr",))
    assert len(report.indexed) == 2
    with LibraryStore(tmp_path / "lib") as library:
        embedder = library_text_embedder(library)
    tower = text_tower_for(str(checkpoint))
    assert isinstance(embedder, query_encoder.OnnxTextEncoder) and isinstance(tower, query_encoder.OnnxTextEncoder)
    from videomini.retrieval import load_text_tower
    from videomini.signals.text import default_embedder

    fast = search_library(tmp_path / "lib", "the loading dock", top_k=5)
    slow = search_library(tmp_path / "lib", "the loading dock", top_k=5, text_embedder=default_embedder(),
                          text_tower=load_text_tower(checkpoint / "clip"))
    assert [(m.video, m.start_s, m.end_s) for m in fast] == [(m.video, m.start_s, m.end_s) for m in slow]
    assert any(m.get("text") == "LOADING DOCK" for r in fast for m in r.matches)
    np.testing.assert_allclose([m.score for m in fast], [m.score for m in slow], atol=1e-3)


def test_index_succeeds_when_its_query_encoders_cannot_be_prepared(cache, checkpoint, tmp_path, monkeypatch):
    """Preparing the exports runs after the videos are committed and only speeds up later searches: a failure
    there (here: a tower that cannot be loaded for any reason) is not a failure of the `index` run."""
    from videomini import search_encoders
    from videomini.pipelines import index_videos
    from videomini.search import search_library

    from synth import make_numbered_video

    def broken(model_id, device="cpu"):
        raise RuntimeError("cannot trace this tower")

    monkeypatch.setattr(search_encoders, "text_tower_for", broken)
    numbers = make_numbered_video(tmp_path / "numbers.mp4", seconds=2, fps=5)
    report = index_videos(tmp_path / "lib", [numbers], model_id=str(checkpoint))
    assert len(report.indexed) == 1 and not report.failed
    assert query_encoder.cached("clip", str(checkpoint)) is None
    monkeypatch.undo()  # the search then loads the tower the usual way, and exports it for the next one
    monkeypatch.setenv("VIDEOMINI_CACHE", str(cache.parent))
    assert search_library(tmp_path / "lib", "a number", top_k=3)
    assert query_encoder.cached("clip", str(checkpoint)) is not None
