"""Which encoder embeds a search's query: the ONNX export of the library's model when one is cached
(`videomini.query_encoder`: no torch, no transformers), else the torch model, exported then for the next search.
`index` calls `prepare_query_encoders`, so that a library's first search is as quick as the next."""

from __future__ import annotations

import logging
from typing import Any

from videomini.query_encoder import cached, current_meta

log = logging.getLogger(__name__)


def text_tower_for(model_id: str, device: str = "cpu") -> Any:
    """The query encoder of the frames: the CLIP text tower beside the checkpoint's vision tower — search needs
    only that, not the LLM. Its ONNX export when one is cached (no torch, no transformers), else
    the tower loaded with transformers and exported for the next search."""
    exported = cached("clip", model_id)
    if exported is not None:
        return exported
    text_tower = _load_text_tower(model_id, device)
    text_tower.export_query_encoder(model_id)
    return text_tower


def _load_text_tower(model_id: str, device: str) -> Any:
    from videomini.loading import CheckpointError, read_config, resolve_checkpoint, resolve_vision_tower
    from videomini.retrieval import load_text_tower

    folder = resolve_checkpoint(model_id)
    tower = resolve_vision_tower(read_config(folder)["mm_vision_tower"], folder)
    text_tower = load_text_tower(tower, device)
    if text_tower is None:
        raise CheckpointError(f"{tower}: the vision tower has no CLIP text tower, so text search is not possible")
    return text_tower


def prepare_query_encoders(model_id: str | None, text_embedder: Any = None) -> None:
    """Export the query encoders a library's search will need (called by `index`), so that the first search is
    as quick as the next: the CLIP text tower of `model_id`'s frames, the sentence embedder of its text. Best
    effort, after the videos are committed: whatever fails here (no checkpoint on this machine, an architecture
    that does not trace) leaves the search to load the model the usual way, and never fails the `index`."""
    try:
        if model_id and current_meta("clip", model_id) is None:
            text_tower_for(model_id)
        if text_embedder is not None and hasattr(text_embedder, "export_query_encoder"):
            text_embedder.export_query_encoder()
    except Exception as exc:  # noqa: BLE001 -- an optimisation of later searches, never an error of this run
        log.debug("query encoders not prepared for %s: %s", model_id, exc)


def library_text_embedder(library: Any) -> Any:
    """The sentence embedder the library's text was indexed with (its `text_model`; the bundled MiniLM when none
    is recorded): a query must be embedded by the model that embedded what it is compared with. Its ONNX export
    when one is cached, else the model loaded with sentence-transformers and exported for the next search."""
    from videomini.signals.text import MINILM, TextEmbedder, default_embedder

    name = str(library.meta().get("text_model") or "") or MINILM
    exported = cached("sentence", name)
    if exported is not None:
        return exported
    embedder = default_embedder() if name == MINILM else TextEmbedder.shared(name)
    embedder.export_query_encoder()
    return embedder
