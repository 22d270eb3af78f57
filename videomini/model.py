"""LLaVA-Mini in one file: CLIP vision tower -> compressor -> projector -> modality pre-fusion -> Llama.

Read it against Fig. 4 of the paper (arXiv 2501.03895). Shapes for the released model
(CLIP ViT-L/14-336, Llama-3.1-8B, C = compressor_size = 1, 4 pre-fusion layers), one frame:

    pixels                       (B, parts, 3, 336, 336)      parts = 1, or r*r + 1 for high resolution
    CLIP hidden_states[-2][:,1:] (B, parts, 576, 1024)        576 = (336/14)^2 patches, CLS dropped
    compressor (C*C queries)     (B, C*C, 1024)               cross-attention over the 576 (or 4*576) patches
    projector (mlp2x_gelu)       (B, 576 + C*C, 4096)         applied to the patches AND the compressed token
    pre-fusion (4 Llama layers)  over [patches, compressed, text] with a causal mask
        -> frame token           (B, C*C, 4096)               ONE token per frame when C = 1
        -> fused text            (B, L, 4096)                 the question, having "read" the frame's patches
    LLM                          [fused text with <image> replaced by T*C*C frame tokens]

Because the compressed token precedes the text under the causal mask, it never sees the question: frame tokens
are question-independent and can be computed once per video (`encode_frames`), while the fused text depends on
the question and is the mean over the frames (`prefuse(..., input_ids)`), exactly as the reference computes it.

The pieces are transformers' own: CLIPVisionModel, LlamaDecoderLayer + LlamaRotaryEmbedding (SDPA attention,
registered as `videomini_sdpa` by videomini/attention.py so that a prefill chunk's memory is flat in the context
on the CPU), LlamaForCausalLM. Loading official checkpoints lives in videomini/loading.py.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from videomini.attention import ATTN_IMPLEMENTATION
from videomini.config import BATCH_SIZE

IMAGE_TOKEN_INDEX = -200  # the <image> placeholder in input_ids, as in the reference
COMPRESSOR_WIDTH = 1024  # the official compressor hard-codes width 1024 and 8 heads
COMPRESSOR_HEADS = 8


@dataclass
class LlavaMiniConfig:
    """The multimodal (`mm_*`) keys of an official LLaVA-Mini config.json; the LLM keys go to LlamaConfig."""

    mm_vision_tower: str = "openai/clip-vit-large-patch14-336"
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"  # "patch" drops CLS; "cls_patch" keeps it
    mm_projector_type: str = "mlp2x_gelu"  # or "linear"
    mm_hidden_size: int = 1024
    compressor_size: int = 2  # C: C*C vision tokens per frame; the reference's value when config.json has none
    prefusion_layer_num: int = 4
    resolution_ratio: int = 1  # 2: 4 crops + the global view, compressed together
    image_aspect_ratio: str = "square"
    tokenizer_model_max_length: int | None = None

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> LlavaMiniConfig:
        # A key absent from config.json takes the reference's default, which is the field's default here.
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in known and v is not None})

    @property
    def tokens_per_frame(self) -> int:
        return self.compressor_size**2


# ---------------------------------------------------------------------------------------------------------
# Compressor: C*C learnable queries cross-attend to the patch features (one nn.MultiheadAttention).
# ---------------------------------------------------------------------------------------------------------


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos positions of a grid_size x grid_size grid -> (grid_size**2, embed_dim) (MAE recipe)."""
    grid_w, grid_h = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))

    def one_axis(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float32) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # first half of the channels encodes the (meshgrid's first) w-major axis, as the reference does
    return np.concatenate([one_axis(embed_dim // 2, grid_w), one_axis(embed_dim // 2, grid_h)], axis=1)


def resize_pos_embed(pos_embed: torch.Tensor, num_keys: int) -> torch.Tensor:
    """Bicubic-resize the C x C query positions to the sqrt(N) x sqrt(N) patch grid (align_corners=False)."""
    src, tgt = int(math.sqrt(pos_embed.shape[0])), int(math.sqrt(num_keys))
    if src == tgt:
        return pos_embed
    grid = pos_embed.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).flatten(0, 2).to(pos_embed.dtype)


class Compressor(nn.Module):
    """(B, N, 1024) patch features -> (B, C*C, 1024): queries LN_q(q) + pos attend to LN_kv(F) + resized pos."""

    def __init__(self, grid_size: int, embed_dim: int = COMPRESSOR_WIDTH, num_heads: int = COMPRESSOR_HEADS):
        super().__init__()
        self.grid_size = grid_size
        self.pos_embed = nn.Parameter(torch.from_numpy(sincos_pos_embed_2d(embed_dim, grid_size)).float(),
                                      requires_grad=False)
        self.query = nn.Parameter(torch.randn(grid_size**2, embed_dim) * 0.02)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.ln_q = nn.LayerNorm(embed_dim)
        self.ln_kv = nn.LayerNorm(embed_dim)

    def forward(self, patch_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, num_keys, _ = patch_features.shape
        kv = self.ln_kv(patch_features)
        key_pos = resize_pos_embed(self.pos_embed, num_keys).type_as(kv)  # (N, 1024)
        queries = (self.ln_q(self.query) + self.pos_embed.type_as(kv)).unsqueeze(0).expand(batch, -1, -1)
        compressed, attn_weights = self.attn(queries, kv + key_pos.unsqueeze(0), kv)  # (B, C*C, 1024)
        return compressed, attn_weights


def build_projector(cfg: LlavaMiniConfig, hidden_size: int) -> nn.Module:
    """`linear` or `mlpKx_gelu` (Linear(mm_hidden, H) then K-1 x [GELU, Linear(H, H)]), state-dict names as official."""
    if cfg.mm_projector_type == "linear":
        return nn.Linear(cfg.mm_hidden_size, hidden_size)
    if cfg.mm_projector_type.startswith("mlp") and cfg.mm_projector_type.endswith("x_gelu"):
        depth = int(cfg.mm_projector_type[3:-6])
        modules: list[nn.Module] = [nn.Linear(cfg.mm_hidden_size, hidden_size)]
        for _ in range(depth - 1):
            modules += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
        return nn.Sequential(*modules)
    raise ValueError(f"unsupported mm_projector_type {cfg.mm_projector_type!r} (expected 'linear' or 'mlpNx_gelu')")


def prefusion_layout(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-fusion attention and positions from `keep` (S,) bool (True for vision tokens and text ids > 0).

    Row q may attend column k iff k <= q and keep[k] -> allowed (S, S); position_ids (1, S) = cumsum(keep) - 1,
    set to 1 where keep is False (the reference's convention; those rows' outputs are discarded).
    """
    seq = keep.shape[0]
    allowed = torch.ones(seq, seq, dtype=torch.bool, device=keep.device).tril() & keep.unsqueeze(0)
    position_ids = (keep.long().cumsum(-1) - 1).masked_fill(~keep, 1).unsqueeze(0)
    return allowed, position_ids


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------


def image_slot(input_ids: torch.Tensor) -> int:
    """The position of the single <image> placeholder in `input_ids` (1, L) or (L,): where the frame tokens go."""
    slots = (input_ids.reshape(-1) == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
    if len(slots) != 1:
        raise ValueError(f"input_ids must contain the <image> placeholder ({IMAGE_TOKEN_INDEX}) exactly once, "
                         f"found {len(slots)}")
    return slots[0]



@dataclass
class VisionEncoding:
    """Question-independent per-frame results of one vision-tower pass.

    `prefusion_vision` is the pre-fusion input before the text: [proj(patches) (, proj(global)), proj(compressed)]
    (B, V, H); `frame_tokens` (B, C*C, H) is the compressed token after pre-fusion (what the LLM sees);
    `clip_embeddings` (B, D) the CLIP image embedding when the tower has a projection (retrieval), else None.
    """

    prefusion_vision: torch.Tensor
    frame_tokens: torch.Tensor
    clip_embeddings: torch.Tensor | None = None
    compressor_attn: torch.Tensor | None = None


class FusedText:
    """The question fused with each frame, accumulated batch by batch as a float32 sum: its mean over the frames
    is the text the LLM reads (the reference's video computation), without keeping every frame's copy."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None  # (L, H) float32
        self.count = 0

    def add(self, batch_sum: torch.Tensor, n_frames: int) -> None:
        """Add one batch: `batch_sum` (L, H), the fused text summed over its `n_frames` frames."""
        batch_sum = batch_sum.float()
        self.total = batch_sum if self.total is None else self.total + batch_sum.to(self.total.device)
        self.count += int(n_frames)

    def mean(self, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        if self.total is None or self.count == 0:
            raise ValueError("no frames were fused with the question")
        return (self.total / self.count).to(device, dtype)


class LlavaMini(nn.Module):
    """LLaVA-Mini: `encode_frames` (question-independent, batched) + `prefuse` (question-dependent) + LLM."""

    def __init__(self, config: LlavaMiniConfig, llm_config: LlamaConfig, vision_tower: nn.Module):
        super().__init__()
        self.config = config
        llm_config = copy.deepcopy(llm_config)  # the caller's config is theirs: the attention choice is ours
        self.llm_config = llm_config
        # transformers' SDPA, with a chunk's mask and keys bounded on the CPU (videomini/attention.py)
        if getattr(llm_config, "_attn_implementation", None) in (None, "sdpa"):
            llm_config._attn_implementation = ATTN_IMPLEMENTATION
        self.vision_tower = vision_tower  # CLIPVisionModel (or CLIPVisionModelWithProjection)
        self.llm = LlamaForCausalLM(llm_config)
        hidden = llm_config.hidden_size
        self.mm_projector = build_projector(config, hidden)
        self.compressor = Compressor(config.compressor_size)
        # Pre-fusion: N Llama decoder layers built from the LLM's own config (same RoPE), separate weights.
        self.prefusion_layers = nn.ModuleList(
            LlamaDecoderLayer(llm_config, layer_idx=i) for i in range(config.prefusion_layer_num))
        self.prefusion_rotary = LlamaRotaryEmbedding(config=llm_config)

    # -- conveniences --------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.llm.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype  # embeddings are never quantized

    @property
    def hidden_size(self) -> int:
        return self.llm_config.hidden_size

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids.clamp(min=0))

    # -- vision: one CLIP pass -> patch features (+ CLIP embedding) ----------------------------------------
    def vision_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, parts, 3, S, S) -> patch features (B, parts, P, 1024) and, when available, CLIP embeddings (B, D)."""
        batch, parts = pixel_values.shape[:2]
        tower_dtype = next(self.vision_tower.parameters()).dtype
        flat = pixel_values.flatten(0, 1).to(device=self.device, dtype=tower_dtype)
        out = self.vision_tower(pixel_values=flat, output_hidden_states=True)
        features = out.hidden_states[self.config.mm_vision_select_layer]
        if self.config.mm_vision_select_feature == "patch":
            features = features[:, 1:]
        elif self.config.mm_vision_select_feature != "cls_patch":
            raise ValueError(f"unexpected mm_vision_select_feature {self.config.mm_vision_select_feature!r}")
        features = features.to(self.dtype).unflatten(0, (batch, parts))
        clip_embeddings = None
        image_embeds = getattr(out, "image_embeds", None)  # CLIPVisionModelWithProjection
        if image_embeds is not None:
            # retrieval uses the global view (the last part) of each frame
            clip_embeddings = F.normalize(image_embeds.float().unflatten(0, (batch, parts))[:, -1], dim=-1)
        return features, clip_embeddings

    def compress(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch features (B, parts, P, 1024) -> pre-fusion vision input (B, V, H) and compressor attention.

        Standard (parts = 1):      V = P + C*C        [proj(F), proj(compressed)]
        High resolution (r*r + 1): V = r*r*P + P + C*C [proj(2x2 grid of crops), proj(global), proj(compressed)]
        """
        batch, parts, num_patches, width = features.shape
        if parts == 1:
            grid_features = features[:, 0]
            compressed, attn = self.compressor(grid_features)
            vision = [self.mm_projector(grid_features)]
        else:
            ratio, side = int(math.isqrt(parts - 1)), int(math.isqrt(num_patches))
            if ratio * ratio + 1 != parts:
                raise ValueError(f"pixel_values has {parts} parts per image: expected 1 or r*r + 1")
            # tile the r*r crops (row-major) into one (r*side) x (r*side) patch grid
            grid_features = (features[:, : ratio * ratio].reshape(batch, ratio, ratio, side, side, width)
                             .transpose(2, 3).reshape(batch, -1, width))
            compressed, attn = self.compressor(grid_features)
            projected = self.mm_projector(features[:, :-1])  # projector is per token: project crops, then tile
            projected = (projected.reshape(batch, ratio, ratio, side, side, -1).transpose(2, 3)
                         .reshape(batch, ratio * ratio * num_patches, -1))
            vision = [projected, self.mm_projector(features[:, -1])]
        vision.append(self.mm_projector(compressed))
        return torch.cat(vision, dim=1), attn

    # -- modality pre-fusion -------------------------------------------------------------------------------
    def prefuse(self, prefusion_vision: torch.Tensor, input_ids: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the pre-fusion layers over [vision (B, V, H), text (L)] for B frames that share one prompt.

        Returns frame tokens (B, C*C, H) and, when `input_ids` (1, L) or (L,) is given, the fused text (B, L, H):
        the layer output at text positions, the raw embedding where id <= 0 (the <image> slot, and any id 0).
        Without text the frame tokens are the same (causal mask: the vision tokens never see the text).
        """
        batch, num_vision, _ = prefusion_vision.shape
        n_compressed = self.config.tokens_per_frame
        device = prefusion_vision.device
        keep = torch.ones(num_vision, dtype=torch.bool, device=device)
        text_embeds = None
        if input_ids is not None:
            ids = input_ids.reshape(-1).to(device)
            text_embeds = self.embed_tokens(ids).to(prefusion_vision.dtype)  # (L, H)
            keep = torch.cat([keep, ids > 0])
            hidden = torch.cat([prefusion_vision, text_embeds.unsqueeze(0).expand(batch, -1, -1)], dim=1)
        else:
            hidden = prefusion_vision
        allowed, position_ids = prefusion_layout(keep)
        mask = torch.zeros(allowed.shape, dtype=hidden.dtype, device=device)
        mask = mask.masked_fill(~allowed, torch.finfo(hidden.dtype).min)[None, None]
        position_embeddings = self.prefusion_rotary(hidden, position_ids)
        for layer in self.prefusion_layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids,
                           position_embeddings=position_embeddings)
        frame_tokens = hidden[:, num_vision - n_compressed: num_vision]
        if text_embeds is None:
            return frame_tokens, None
        text_keep = keep[num_vision:].unsqueeze(-1)
        fused_text = torch.where(text_keep, hidden[:, num_vision:], text_embeds.unsqueeze(0))
        return frame_tokens, fused_text

    @torch.inference_mode()
    def encode_frames(self, pixel_values: torch.Tensor, input_ids: torch.Tensor | None = None
                      ) -> tuple[VisionEncoding, torch.Tensor | None]:
        """Frames (B, parts, 3, S, S) -> one vision-tower pass -> VisionEncoding (+ fused text (B, L, H) if ids)."""
        features, clip_embeddings = self.vision_features(pixel_values)
        prefusion_vision, attn = self.compress(features)
        frame_tokens, fused_text = self.prefuse(prefusion_vision, input_ids)
        return VisionEncoding(prefusion_vision, frame_tokens, clip_embeddings, attn), fused_text

    # -- LLM ------------------------------------------------------------------------------------------------
    def build_inputs_embeds(self, input_ids: torch.Tensor, fused_text: torch.Tensor,
                            frame_tokens: torch.Tensor) -> torch.Tensor:
        """Fused text (L, H) with the single <image> slot replaced by all frame tokens (T*C*C, H) -> (1, S, H)."""
        ids = input_ids.reshape(-1)
        slot = image_slot(ids)
        fused_text = fused_text.reshape(ids.shape[0], -1)
        frame_tokens = frame_tokens.reshape(-1, fused_text.shape[-1]).to(fused_text.dtype)
        return torch.cat([fused_text[:slot], frame_tokens, fused_text[slot + 1:]]).unsqueeze(0)

    def encode_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                      frames_per_batch: int = BATCH_SIZE) -> torch.Tensor:
        """The reference's full multimodal input: image (1, parts, 3, S, S) or video (1, T, parts, 3, S, S).

        Video frames are encoded in batches; the fused text is the float32 mean over frames.
        """
        if pixel_values.dim() == 5:
            pixel_values = pixel_values.unsqueeze(1)  # an image is a one-frame video
        one_prompt = input_ids.reshape(-1, input_ids.shape[-1]).shape[0] == 1
        if pixel_values.dim() != 6 or pixel_values.shape[0] != 1 or not one_prompt:
            raise ValueError("expected batch size 1: pixel_values (1, parts, 3, H, W) or (1, T, parts, 3, H, W)")
        frames = pixel_values[0]
        tokens, fused_text = [], FusedText()
        for start in range(0, frames.shape[0], frames_per_batch):
            encoding, fused = self.encode_frames(frames[start: start + frames_per_batch], input_ids)
            tokens.append(encoding.frame_tokens)
            fused_text.add(fused.float().sum(0), fused.shape[0])
        return self.build_inputs_embeds(input_ids, fused_text.mean(self.device, self.dtype), torch.cat(tokens))

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **llm_kwargs: Any) -> CausalLMOutputWithPast:
        """Reference-compatible call: `model(input_ids=..., pixel_values=...)` -> output with `.logits`."""
        if inputs_embeds is None:
            if pixel_values is None:
                inputs_embeds = self.embed_tokens(input_ids)
            else:
                with torch.inference_mode():
                    inputs_embeds = self.encode_inputs(input_ids, pixel_values)
        llm_kwargs.setdefault("use_cache", False)
        return self.llm(inputs_embeds=inputs_embeds, **llm_kwargs)


def build_model(mm_config: LlavaMiniConfig, llm_config: LlamaConfig,
                vision_config: CLIPVisionConfig | None = None, vision_tower: nn.Module | None = None) -> LlavaMini:
    """A randomly initialised LLaVA-Mini (tests and tiny checkpoints); real weights come from loading.py."""
    if vision_tower is None:
        vision_tower = CLIPVisionModel(vision_config or CLIPVisionConfig())
    return LlavaMini(mm_config, llm_config, vision_tower)
