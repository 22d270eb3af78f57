"""CLIP text tower: embeds a question or a search query into the space of the frames' CLIP image embeddings.

The released model's vision tower (`openai/clip-vit-large-patch14-336`) is a full CLIP checkpoint: the same
folder holds the text tower and both projections. When the tower folder has no text weights, retrieval is off
and frame selection falls back to time references and uniform coverage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from videomini.loading import has_weights, quiet_transformers


def has_text_tower(tower_dir: str | Path) -> bool:
    return has_weights(tower_dir, "text_projection.")


class TextTower:
    """CLIPTextModelWithProjection + its tokenizer: text -> L2-normalised embeddings (N, D) float32."""

    def __init__(self, tower_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import CLIPTextModelWithProjection, PreTrainedTokenizerFast

        with quiet_transformers():  # the vision keys of a full CLIP checkpoint go unused here
            self.model = CLIPTextModelWithProjection.from_pretrained(str(tower_dir), dtype=dtype,
                                                                     use_safetensors=True).to(device).eval()
        self.tokenizer: Any = PreTrainedTokenizerFast.from_pretrained(str(tower_dir))
        if self.tokenizer.pad_token is None:  # CLIP's tokenizer may have none; a batch pads with its end token
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.device = torch.device(device)
        self.name = str(tower_dir)  # names the model in caches of its embeddings (videomini.search.query_bank)
        self.max_length = self.model.config.max_position_embeddings

    @property
    def dim(self) -> int:
        return self.model.config.projection_dim

    @torch.inference_mode()
    def embed(self, texts: list[str] | str) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch.pop("token_type_ids", None)
        out = self.model(**{k: v.to(self.device) for k, v in batch.items()})
        return F.normalize(out.text_embeds.float(), dim=-1).cpu()

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 rows of unit length: the interface of the sentence embedders and ONNX query encoders."""
        return self.embed(list(texts)).numpy()

    def export_query_encoder(self, name: str) -> bool:
        """Export this tower as the ONNX query encoder of model `name` (`videomini.query_encoder`), so that a search
        of its frames starts without torch; True when one is ready."""
        from videomini.query_encoder import eager_attention, export, unit_embedding_module

        module = unit_embedding_module(self.model, lambda model, ids, mask: model(
            input_ids=ids, attention_mask=mask).text_embeds)
        with eager_attention(self.model):
            return export("clip", name, Path(self.name).resolve(), module, self.tokenizer, self.max_length)


def load_text_tower(tower_dir: str | Path | None, device: str | torch.device = "cpu") -> TextTower | None:
    """The text tower next to the vision tower, or None when the checkpoint has none (retrieval off)."""
    if tower_dir is None or not has_text_tower(tower_dir):
        return None
    return TextTower(tower_dir, device=device)
