"""What asking and indexing are given (videomini.config): each field checked when the config is made, keyword
overrides, and the engine contract `Library.index(engine=...)` relies on."""

from __future__ import annotations

import pytest

from videomini.config import AskConfig, ConfigError, IndexConfig, configured


@pytest.mark.parametrize("make, field", [
    (lambda: AskConfig(fps=0), "fps=0"),
    (lambda: AskConfig(fusion="some"), "fusion='some'"),
    (lambda: AskConfig(sampling="random"), "sampling='random'"),
    (lambda: AskConfig(max_frames=0), "max_frames=0"),
    (lambda: AskConfig(signals=("smell",)), "signals='smell'"),
    (lambda: IndexConfig(batch_size=0), "batch_size=0"),
    (lambda: IndexConfig(timeout_s=0), "timeout_s=0"),
    (lambda: IndexConfig(visual=False), "nothing to index: without the vision model (--no-visual)"),
])
def test_a_bad_field_is_one_line_naming_it(make, field):
    with pytest.raises(ConfigError) as caught:
        make()
    assert str(caught.value).startswith(field) and "\n" not in str(caught.value)


def test_the_cli_names_the_option_not_the_field():
    with pytest.raises(ConfigError) as caught:
        IndexConfig(timeout_s=-1)
    assert caught.value.for_cli({"timeout_s": "timeout"}) == "--timeout=-1: must be positive"
    with pytest.raises(ConfigError) as caught:
        AskConfig(max_new_tokens=0)
    assert caught.value.for_cli() == "--max-new-tokens=0: must be >= 1"


def test_overrides_replace_fields_and_unknown_names_are_refused():
    base = AskConfig(max_new_tokens=8)
    assert configured(base, AskConfig, {"fps": 2.0}) == AskConfig(max_new_tokens=8, fps=2.0)
    assert configured(None, IndexConfig, {}) == IndexConfig()
    assert configured(None, IndexConfig, {"signals": ["speech", "ocr", "ocr"]}).signals == ("ocr", "speech")
    with pytest.raises(ConfigError, match="'workers' is not a field of IndexConfig"):
        configured(None, IndexConfig, {"workers": 2})  # an engine's setting: LocalEngine(workers=2)


def test_the_library_budget_applies_when_no_frame_cap_is_given():
    assert AskConfig().library_max_frames == 64 and AskConfig(max_frames=8).library_max_frames == 8


class RecordingEngine:
    """An engine object as a third-party package would write one: `Library.index` hands it everything."""

    def __init__(self):
        self.calls = []

    def index(self, library_dir, paths, model, config, on_event=None):
        self.calls.append((library_dir, list(paths), model, config))
        return "report"


def test_library_index_calls_the_engine_given_without_loading_a_model(tmp_path):
    from videomini.library import Library

    engine = RecordingEngine()
    library = Library(tmp_path / "lib", model="some/model-id")
    assert library.index(tmp_path / "v.mp4", engine=engine, fps=2.0) == "report"
    root, paths, model, config = engine.calls[0]
    assert root == (tmp_path / "lib").resolve() and paths == [tmp_path / "v.mp4"]
    assert config == IndexConfig(model_id="some/model-id", fps=2.0)
    assert model.model_id == "some/model-id"  # known without loading: the model loads only if the engine encodes
    library.index([tmp_path / "v.mp4"], engine=engine, visual=False, signals=["ocr"])
    assert engine.calls[1][2] is None and engine.calls[1][3].model_id is None
    library.index([tmp_path / "v.mp4"], engine=engine, model_id="other/model")  # not the library's: the run loads it
    assert engine.calls[2][2] is None and engine.calls[2][3].model_id == "other/model"


def test_engines_by_name_are_the_registered_ones(tmp_path):
    from videomini.library import Library, load_engine
    from videomini.pipelines.local_engine import LocalEngine
    from videomini.pipelines.ray_engine import RayEngine
    from videomini.storage import LibraryError

    assert isinstance(load_engine("local"), LocalEngine) and isinstance(load_engine("ray"), RayEngine)
    with pytest.raises(LibraryError, match="unknown index engine 'spark': installed engines are local, ray"):
        Library(tmp_path / "lib", model="m").index([], engine="spark")
