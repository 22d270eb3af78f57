"""Jobs with policy, composed from the library: the index run and its engines, decoder processes, the server.

`index_videos` is the index run with the local engine unless another is given (engines are objects:
`LocalEngine(workers=...)`, `RayEngine(address=...)`; videomini.pipelines.index_run.Engine for your own).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any


def index_videos(library_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], model: Any = None,
                 config: Any = None, *, engine: Any = None, on_event: Any = None, **overrides: Any) -> Any:
    """Index `paths` into the library at `library_dir` with `engine` (default: a LocalEngine), the IndexConfig
    `config` with any of its fields overridden by keyword (fps=2.0, signals=("speech",), ...); see
    `Engine.index`. Returns the run's IndexReport."""
    from videomini.config import IndexConfig, configured
    from videomini.pipelines.local_engine import LocalEngine

    engine = engine if engine is not None else LocalEngine()
    return engine.index(library_dir, paths, model, configured(config, IndexConfig, overrides), on_event)
