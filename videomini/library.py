"""The Python API of a video library: `Library(dir).index(paths)`, `.search(query)`, `.ask(question)`.

A handle over the storage (`videomini.storage.LibraryStore`) and the jobs run on it: it remembers the folder and
loads each model once, when a call first needs it, so a script that indexes, searches and asks pays for one model
load. Each call opens the storage for just as long as it runs, so other processes may search while this one indexes
(and a second indexer waits or is refused).

Index engines are objects passed to `.index(engine=...)` (videomini.config.IndexEngine: `LocalEngine`,
`RayEngine` from videomini.pipelines, or your own). The library cannot import its own pipelines (imports run
cli -> pipelines -> videomini), so an engine given by name, and the default ("local"), are found in the
entry-point group `videomini.engines`, where another package adds an engine by declaring one.

    from videomini import Library
    from videomini.pipelines.ray_engine import RayEngine

    lib = Library("~/videos.vmlib", model="ICTNLP/llava-mini-llama-3.1-8b")
    lib.index(["~/Videos"], recursive=True, signals=["speech", "ocr"])
    lib.index(["~/More"], engine=RayEngine(address="head:6379"))
    for moment in lib.search("a dog catching a frisbee"):
        print(moment.video, moment.start_s, moment.matches)
    print(lib.ask("What does the speaker say about the budget?").text)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from videomini.config import TOP_K, AskConfig, Event, IndexConfig, IndexEngine, configured
from videomini.storage import CATALOG, LibraryError, LibraryStore

ENGINE_GROUP = "videomini.engines"


def load_engine(name: str) -> IndexEngine:
    """A new engine of the class registered as `name` in the `videomini.engines` entry-point group."""
    from importlib.metadata import entry_points

    engines = {ep.name: ep for ep in entry_points(group=ENGINE_GROUP)}
    if name not in engines:
        raise LibraryError(f"unknown index engine {name!r}: installed engines are {', '.join(sorted(engines))} "
                           f"(entry points of group {ENGINE_GROUP})")
    return engines[name].load()()


class Library:
    """A library folder (created by the first `index`) and the models used on it, loaded when first needed."""

    def __init__(self, root: str | os.PathLike, model: Any = None, *, device: str | None = None,
                 dtype: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.device, self.dtype = device, dtype
        self._model = None if isinstance(model, (str, os.PathLike)) or model is None else model
        self._model_id = str(model) if isinstance(model, (str, os.PathLike)) else None

    def __repr__(self) -> str:
        return f"Library({str(self.root)!r})"

    # ------------------------------------------------------------------ models

    @property
    def model_id(self) -> str | None:
        """The model given, else the one the library was indexed with, else the default (VIDEOMINI_MODEL)."""
        if self._model is not None:
            return str(self._model.model_id)
        if self._model_id:
            return self._model_id
        if (self.root / CATALOG).is_file():
            with LibraryStore(self.root) as store:
                try:
                    return store.indexed_model_id()
                except LibraryError:
                    pass
        from videomini.loading import default_model_id

        return default_model_id()

    def model(self) -> Any:
        """The VideoMini (LLaVA-Mini + its CLIP text tower), loaded once."""
        if self._model is None:
            from videomini.ask import VideoMini

            self._model = VideoMini.from_pretrained(self.model_id, device=self.device, dtype=self.dtype)
        return self._model

    # ------------------------------------------------------------------ jobs

    def index(self, paths: Iterable[str | os.PathLike] | str | os.PathLike, config: IndexConfig | None = None, *,
              engine: IndexEngine | str = "local", on_event: Event | None = None, **overrides: Any) -> Any:
        """Index files and folders (incremental, resumable) with `engine` (an engine object, or the name of one
        registered in `videomini.engines`). `config` and keyword `overrides` of its fields (signals, visual,
        recursive, fps, retry_failed, timeout_s, wait_s ...): see videomini.config.IndexConfig. The model is
        this library's, loaded only if the engine encodes here."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        config = configured(config, IndexConfig, overrides)
        model, model_id = None, self.model_id  # (may read the catalog: once)
        if config.visual and config.model_id in (None, model_id):  # another model_id: the run loads that one
            config = configured(config, IndexConfig, {"model_id": model_id})
            from videomini.loading import LazyModel  # torch: only when a run indexes frames

            model = self._model if self._model is not None else LazyModel(self.model, config.model_id)
        run = load_engine(engine) if isinstance(engine, str) else engine
        return run.index(self.root, paths, model, config, on_event)

    def search(self, query: str, top_k: int = TOP_K, *, signals: Iterable[str] = ("visual", "speech", "ocr"),
               thumbnails_dir: str | os.PathLike | None = None) -> list:
        """The best moments for a plain-language query, fused over frames and speech / on-screen text."""
        from videomini.search import search_library

        text_tower = self._model.text_tower if self._model is not None else None
        return search_library(self.root, query, top_k=top_k, text_tower=text_tower, signals=tuple(signals),
                              thumbnails_dir=thumbnails_dir)

    def ask(self, question: str, config: AskConfig | None = None, **overrides: Any) -> Any:
        """Answer over the library's best moments with LLaVA-Mini; `config` and keyword `overrides` of its fields
        (top_k, max_frames, max_new_tokens, fallback ...): see videomini.config.AskConfig. When no model can be
        loaded and `fallback`, the stored speech and on-screen text answer (Answer.generated_by == "signals")."""
        from videomini.ask_policy import ask_library  # the one ask policy, shared with the CLI and the server

        config = configured(config, AskConfig, overrides)
        if config.model_id is None and self._model_id:
            config = configured(config, AskConfig, {"model_id": self._model_id})
        return ask_library(self.root, question, config, model=self._model, load=lambda _: self.model())

    # ------------------------------------------------------------------ the catalog

    def stats(self) -> dict:
        """Videos per status, frames, hours, bytes on disk, failures, index state."""
        with LibraryStore(self.root) as store:
            return store.stats()

    def videos(self, status: str | None = None) -> list[dict]:
        with LibraryStore(self.root) as store:
            return store.videos(status)

    def check(self) -> list[str]:
        """Everything wrong with the library (catalog, shards and index files against their checksums, and their
        agreement), one line each naming the file; [] when whole. Only reads."""
        return LibraryStore.check(self.root)

    def repair(self, wait_s: float = 0.0) -> list[str]:
        """Fix what `check` finds: rebuild a damaged catalog from the shards, send videos whose shard is missing
        or damaged back to be indexed again (by the next `index`), rebuild the index. Returns what was done."""
        return LibraryStore.repair(self.root, wait_s)

    def remove(self, paths: Iterable[str | os.PathLike], wait_s: float = 0.0) -> list[str]:
        """Remove videos from the catalog, the index and the shards."""
        with LibraryStore(self.root, writer=True, wait_s=wait_s) as store:
            return store.remove(paths)

    def compact(self, wait_s: float = 0.0) -> dict:
        """Merge the index's segments into one base now (dead rows of removed videos purged); returns the
        manifest. `index` runs compact on their own when deltas or deletions pass their thresholds."""
        with LibraryStore(self.root, writer=True, wait_s=wait_s) as store:
            return store.compact_index()
