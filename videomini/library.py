"""The Python API of a video library: `Library(dir).index(paths)`, `.search(query)`, `.ask(question)`.

A handle over the storage (`videomini.storage.LibraryStore`) and the jobs run on it: it remembers the folder and
loads each model once, when a call first needs it, so a script that indexes, searches and asks pays for one model
load. Each call opens the storage for just as long as it runs, so other processes may search while this one indexes
(and a second indexer waits or is refused).

Index engines are plug-ins: `.index(engine=NAME)` runs the callable registered under NAME in the entry-point group
`videomini.engines` (videomini registers "local" and "ray" in its pyproject.toml; another package adds an engine
by declaring one). An engine is called as `engine(library_dir, paths, model, **options)` and returns a report.

    from videomini import Library

    lib = Library("~/videos.vmlib", model="ICTNLP/llava-mini-llama-3.1-8b")
    lib.index(["~/Videos"], recursive=True, signals=["speech", "ocr"])
    for moment in lib.search("a dog catching a frisbee"):
        print(moment.video, moment.start_s, moment.matches)
    print(lib.ask("What does the speaker say about the budget?").text)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from videomini.storage import CATALOG, LibraryError, LibraryStore

ENGINE_GROUP = "videomini.engines"


def index_engine(name: str) -> Callable[..., Any]:
    """The index engine registered as `name` in the `videomini.engines` entry-point group."""
    from importlib.metadata import entry_points

    engines = {ep.name: ep for ep in entry_points(group=ENGINE_GROUP)}
    if name not in engines:
        raise LibraryError(f"unknown index engine {name!r}: installed engines are {', '.join(sorted(engines))} "
                           f"(entry points of group {ENGINE_GROUP})")
    return engines[name].load()


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

    def index(self, paths: Iterable[str | os.PathLike] | str | os.PathLike, *, signals: Iterable[str] = (),
              visual: bool = True, engine: str = "local", **options: Any) -> Any:
        """Index files and folders (incremental, resumable) with the engine registered as `engine`; see
        `videomini.pipelines.index_run.index_videos` for the options (recursive, fps, workers, retry_failed,
        timeout_s, wait_s, ray_address, on_event)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        run = index_engine(engine)
        model = self._model if visual and engine == "local" else None
        if visual and engine == "local" and model is None:
            model = LazyModel(self.model)
        return run(self.root, paths, model, model_id=self.model_id if visual else None, signals=signals,
                   visual=visual, **options)

    def search(self, query: str, top_k: int = 10, *, signals: Iterable[str] = ("visual", "speech", "ocr"),
               thumbnails_dir: str | os.PathLike | None = None) -> list:
        """The best moments for a plain-language query, fused over frames and speech / on-screen text."""
        from videomini.search import search_library

        text_tower = self._model.text_tower if self._model is not None else None
        return search_library(self.root, query, top_k=top_k, text_tower=text_tower, signals=tuple(signals),
                              thumbnails_dir=thumbnails_dir)

    def ask(self, question: str, top_k: int = 10, *, max_frames: int = 64, max_new_tokens: int = 256,
            fallback: bool = True) -> Any:
        """Answer over the library's best moments with LLaVA-Mini. When no model can be loaded and `fallback`,
        the stored speech and on-screen text answer instead (Answer.generated_by == "signals")."""
        from videomini.ask_policy import ask_library  # the one ask policy, shared with the CLI and the server

        return ask_library(self.root, question, model=self._model or self._model_id, top_k=top_k,
                           max_frames=max_frames, max_new_tokens=max_new_tokens, fallback=fallback,
                           load=lambda _: self.model())

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


class LazyModel:
    """Loads the model only when some file needs encoding (a re-run with nothing to do loads nothing)."""

    def __init__(self, load: Any) -> None:
        self._load = load

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)
