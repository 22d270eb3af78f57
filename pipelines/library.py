"""The Python API of a video library: `Library(dir).index(paths)`, `.search(query)`, `.ask(question)`.

A thin handle over the jobs in this package (index, search, ask --library) and the on-disk storage in
`videomini.library`: it remembers the folder and loads each model once, when a call first needs it, so a script
that indexes, searches and asks pays for one model load. Each call opens the storage for just as long as it runs,
so other processes may search while this one indexes (and a second indexer waits or is refused).

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
from typing import Any, Iterable

from videomini.answer import Answer
from videomini.library import Library as Storage
from videomini.library import LibraryError
from videomini.pipelines.index import IndexReport, index_videos
from videomini.evidence import answer_library_from_signals
from videomini.pipelines.search import ask_library, search_library
from videomini.search import SearchMoment, library_model_id


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
        if (self.root / "catalog.sqlite").is_file():
            with Storage(self.root) as storage:
                try:
                    return library_model_id(storage)
                except LibraryError:
                    pass
        from videomini.pipelines.ask import default_model_id

        return default_model_id()

    def model(self) -> Any:
        """The VideoMini (LLaVA-Mini + its CLIP text tower), loaded once."""
        if self._model is None:
            from videomini.pipelines.ask import VideoMini

            self._model = VideoMini.from_pretrained(self.model_id, device=self.device, dtype=self.dtype)
        return self._model

    # ------------------------------------------------------------------ jobs

    def index(self, paths: Iterable[str | os.PathLike] | str | os.PathLike, *, signals: Iterable[str] = (),
              visual: bool = True, engine: str = "local", **options: Any) -> IndexReport:
        """Index files and folders (incremental, resumable); see `videomini.pipelines.index.index_videos` for
        the options (recursive, fps, workers, retry_failed, timeout_s, wait_s, ray_address, on_event)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        model = self._model if visual and engine == "local" else None
        if visual and engine == "local" and model is None:
            model = LazyModel(self.model)
        return index_videos(self.root, paths, model, model_id=self.model_id if visual else None, signals=signals,
                            visual=visual, engine=engine, **options)

    def search(self, query: str, top_k: int = 10, *, signals: Iterable[str] = ("visual", "speech", "ocr"),
               thumbnails_dir: str | os.PathLike | None = None) -> list[SearchMoment]:
        """The best moments for a plain-language query, fused over frames and speech / on-screen text."""
        text_tower = self._model.text_tower if self._model is not None else None
        return search_library(self.root, query, top_k=top_k, text_tower=text_tower, signals=tuple(signals),
                              thumbnails_dir=thumbnails_dir)

    def ask(self, question: str, top_k: int = 10, *, max_frames: int = 64, max_new_tokens: int = 256,
            fallback: bool = True) -> Answer:
        """Answer over the library's best moments with LLaVA-Mini. When no model can be loaded and `fallback`,
        the stored speech and on-screen text answer instead (Answer.generated_by == "signals")."""
        from videomini.loading import CheckpointError

        try:
            vm = self.model()
        except CheckpointError:
            if not fallback:
                raise
            return answer_library_from_signals(self.root, question, top_k=min(top_k, 3))
        return ask_library(vm, self.root, question, top_k=top_k, max_frames=max_frames, max_new_tokens=max_new_tokens)

    # ------------------------------------------------------------------ the catalog

    def stats(self) -> dict:
        """Videos per status, frames, hours, bytes on disk, failures, index state."""
        with Storage(self.root) as storage:
            return storage.stats()

    def videos(self, status: str | None = None) -> list[dict]:
        with Storage(self.root) as storage:
            return storage.videos(status)

    def remove(self, paths: Iterable[str | os.PathLike], wait_s: float = 0.0) -> list[str]:
        """Remove videos from the catalog, the index and the shards."""
        with Storage(self.root, writer=True, wait_s=wait_s) as storage:
            return storage.remove(paths)


class LazyModel:
    """Loads the model only when some file needs encoding (a re-run with nothing to do loads nothing)."""

    def __init__(self, load: Any) -> None:
        self._load = load

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)
