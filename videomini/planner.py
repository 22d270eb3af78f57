"""The memory budget: how many frames one model holds in its context on one device.

Frames that fit = min(what device memory leaves after the weights, the activations and the prompt's KV cache,
what the LLM's context leaves after the prompt). Configs are read as the loader reads them
(`loading.find_config`, `LlavaMiniConfig.from_dict`, `loading.llm_config_from`) and parameters are counted on
the model that `model.py` builds, on the meta device: no weights, no GPU, and the plan cannot disagree with the
model about a config's shapes.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from videomini.loading import DEFAULT_VISION_TOWER, find_config, find_vision_config, llm_config_from
from videomini.model import LlavaMini, LlavaMiniConfig

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                  "fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "8bit": "int8"}
_TORCH_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# Activations beyond the weights and the KV cache: the CUDA context and allocator slack, plus the largest
# transient of one step (a prefill chunk through the MLP, a batch through the vision tower).
DEFAULT_RUNTIME_RESERVE_BYTES = 1 << 30
PREFILL_CHUNK_TOKENS = 4096
_REQUIRED_LLM_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclass
class MemoryPlan:
    """How many frames one model can hold in its context on one device (all sizes in bytes)."""

    model: str
    dtype: str  # weights
    kv_dtype: str  # the KV cache
    device_memory_bytes: int
    weights_bytes: dict[str, int]  # llm, prefusion, vision, compressor, projector
    parameters: dict[str, int]
    activation_overhead_bytes: int
    tokens_per_frame: int  # compressor_size²
    kv_bytes_per_token: int
    kv_bytes_per_frame: int
    context_length: int  # the LLM's max_position_embeddings
    prompt_tokens_reserved: int  # prompt + answer
    prompt_kv_bytes: int
    frames_fit_memory: int
    frames_fit_context: int
    max_frames: int
    limited_by: str  # "memory" or "context"
    notes: list[str] = field(default_factory=list)

    @property
    def total_weights_bytes(self) -> int:
        return sum(self.weights_bytes.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_weights_bytes": self.total_weights_bytes}


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes in "24GB" (10⁹), "80GiB" (2³⁰), "512MB", "16G" (a bare letter is binary, as in `free -g`), "1024"."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m or (m.group(3) and not m.group(2)):
        raise ValueError(f"invalid size {text!r}: expected e.g. 24GB, 80GiB, 512MB")
    number, prefix, binary, b = m.groups()
    power = "kmgtp".find(prefix.lower()) + 1 if prefix else 0
    base = 1024 if (binary or (prefix and not b)) else 1000
    return int(float(number) * base ** power)


def device_memory(device: str | torch.device) -> int:
    """Memory a plan may use on `device`: a CUDA device's total memory; for the CPU, the RAM available now."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{device}: no CUDA device on this machine")
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    if device.type == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    raise ValueError(f"{device}: memory planning supports cpu and cuda devices")


def normalize_dtype(dtype: str | torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.").lower()
    if name not in _DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {dtype!r} (use bf16, fp16, fp32 or int8)")
    return _DTYPE_ALIASES[name]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def part_parameters(model: LlavaMini) -> dict[str, int]:
    """Parameters per part of a built LlavaMini (on any device, meta included)."""
    return {"llm": _count(model.llm), "prefusion": _count(model.prefusion_layers), "vision": _count(model.vision_tower),
            "compressor": _count(model.compressor), "projector": _count(model.mm_projector)}


def _vision_tower(vision_config: dict[str, Any]) -> torch.nn.Module:
    """The CLIP vision tower a config describes (with its projection when the config is a full CLIP's)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    vision_config = dict(vision_config)
    with_projection = bool(vision_config.pop("_with_projection", False))
    if "vision_config" in vision_config:  # a full CLIP config: the image tower plus its projection
        with_projection = True
        projection_dim = vision_config.get("projection_dim")
        vision_config = {**vision_config["vision_config"]}
        if projection_dim is not None:
            vision_config.setdefault("projection_dim", projection_dim)
    vision_config = {k: v for k, v in vision_config.items() if k not in ("model_type", "architectures")}
    tower_class = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    return tower_class(CLIPVisionConfig(**vision_config))


def _checked_config(config: dict[str, Any] | str | os.PathLike) -> tuple[dict[str, Any], str, Any]:
    cfg, name, folder = find_config(config)
    for key in _REQUIRED_LLM_KEYS:
        if key not in cfg:
            raise ValueError(f"{name}: config has no {key!r} (not a LLaVA-Mini / Llama config)")
    if "prefusion_layer_num" not in cfg:
        raise ValueError(f"{name}: config has no 'prefusion_layer_num' (not a LLaVA-Mini config)")
    return cfg, name, folder


def plan_memory(
    config: dict[str, Any] | str | os.PathLike,
    device_memory_bytes: int | str,
    dtype: str = "bf16",
    prompt_tokens: int = 1024,
    answer_tokens: int = 512,
    vision_config: dict[str, Any] | None = None,
    activation_overhead: int | str | None = None,
    kv_dtype: str | None = None,
) -> MemoryPlan:
    """How many frames fit: min(what memory leaves after weights, what the LLM's context leaves after the prompt).

    `config` is a LLaVA-Mini config dict, a checkpoint folder, its config.json, a hub id in the cache, or a key
    of `KNOWN_CONFIGS`. The model is built from it on the meta device exactly as the loader builds it (a missing
    `compressor_size` is the reference's 2), so parameters and tokens per frame are the model's own. Weights take
    `dtype`'s bytes per parameter (int8 counts every weight as one byte; bitsandbytes keeps embeddings, norms and
    lm_head in 16 bit, about 1 GB more for an 8B). The KV cache stays 16-bit (bf16) for int8 weights unless
    `kv_dtype` says otherwise; it is the weights' dtype for fp32/fp16/bf16. Each frame is `tokens_per_frame`
    tokens, each token 2 × layers × kv_heads × head_dim × bytes of KV.

    The context cap is the LLM's `max_position_embeddings` (131,072 for Llama-3.1) minus the prompt and the
    answer. The official `tokenizer_model_max_length` (4096) truncation is not applied: it would cut the
    question off a long video's prompt; videomini selects frames instead.

    `activation_overhead` (bytes or a size string) defaults to 1 GiB (CUDA context, allocator slack, the
    vision batch) plus one prefill chunk of `PREFILL_CHUNK_TOKENS` tokens through the widest layer.
    """
    cfg, name, folder = _checked_config(config)
    notes: list[str] = []
    if vision_config is None:
        vision_config, vision_source = find_vision_config(cfg.get("mm_vision_tower"), folder)
        if not vision_source:
            notes.append(f"vision tower {cfg.get('mm_vision_tower')!r} not found on disk: counted as "
                         f"{DEFAULT_VISION_TOWER}")
    mm_config, llm_config = LlavaMiniConfig.from_dict(cfg), llm_config_from(cfg)
    with torch.device("meta"):
        parameters = part_parameters(LlavaMini(mm_config, llm_config, vision_tower=_vision_tower(vision_config)))
    tokenizer_max = cfg.get("tokenizer_model_max_length")
    if tokenizer_max and tokenizer_max < llm_config.max_position_embeddings:
        notes.append(f"tokenizer_model_max_length {tokenizer_max} is not applied (it would cut the question off "
                     f"long prompts); the cap is max_position_embeddings {llm_config.max_position_embeddings}")
    return _plan(name, parameters, mm_config, llm_config, device_memory_bytes, dtype, kv_dtype, prompt_tokens,
                 answer_tokens, activation_overhead, notes)


def plan_for_model(model: LlavaMini, device_memory_bytes: int | str, prompt_tokens: int = 1024,
                   answer_tokens: int = 512) -> MemoryPlan:
    """The plan for a loaded model in its own dtype (what `ask` uses to size its frame budget)."""
    return _plan(getattr(model, "name_or_path", "llava-mini"), part_parameters(model), model.config,
                 model.llm_config, device_memory_bytes, _TORCH_DTYPES[model.dtype], None, prompt_tokens,
                 answer_tokens, None, [])


def _plan(name: str, parameters: dict[str, int], mm_config: LlavaMiniConfig, llm_config: Any,
          device_memory_bytes: int | str, dtype: str, kv_dtype: str | None, prompt_tokens: int, answer_tokens: int,
          activation_overhead: int | str | None, notes: list[str]) -> MemoryPlan:
    dtype = normalize_dtype(dtype)
    kv_dtype = normalize_dtype(kv_dtype) if kv_dtype is not None else ("bf16" if dtype == "int8" else dtype)
    device_memory_bytes = parse_size(device_memory_bytes)
    weights = {part: count * DTYPE_BYTES[dtype] for part, count in parameters.items()}
    hidden = int(llm_config.hidden_size)
    head_dim = int(getattr(llm_config, "head_dim", None) or hidden // llm_config.num_attention_heads)
    kv_heads = int(llm_config.num_key_value_heads or llm_config.num_attention_heads)
    kv_bytes_per_token = 2 * llm_config.num_hidden_layers * kv_heads * head_dim * DTYPE_BYTES[kv_dtype]
    tokens_per_frame = mm_config.tokens_per_frame
    kv_bytes_per_frame = kv_bytes_per_token * tokens_per_frame
    if activation_overhead is None:
        activation_bytes = DTYPE_BYTES["fp32" if kv_dtype == "fp32" else "bf16"]
        widest = 4 * hidden + 3 * int(llm_config.intermediate_size)  # residual, q/k/v/o + gate, up, act
        activation_overhead = DEFAULT_RUNTIME_RESERVE_BYTES + PREFILL_CHUNK_TOKENS * widest * activation_bytes
    activation_overhead = parse_size(activation_overhead)

    context_length = int(llm_config.max_position_embeddings)
    reserved = int(prompt_tokens) + int(answer_tokens)
    prompt_kv_bytes = reserved * kv_bytes_per_token
    free = device_memory_bytes - sum(weights.values()) - activation_overhead - prompt_kv_bytes
    frames_fit_memory = max(0, free // kv_bytes_per_frame)
    frames_fit_context = max(0, (context_length - reserved) // tokens_per_frame)
    if free < 0:
        notes.append("the weights alone do not fit in this device memory")
    if dtype == "int8":
        notes.append("int8 counts every weight as 1 byte; the KV cache stays " + kv_dtype)
    return MemoryPlan(
        model=name, dtype=dtype, kv_dtype=kv_dtype, device_memory_bytes=device_memory_bytes,
        weights_bytes=weights, parameters=parameters, activation_overhead_bytes=activation_overhead,
        tokens_per_frame=tokens_per_frame, kv_bytes_per_token=kv_bytes_per_token,
        kv_bytes_per_frame=kv_bytes_per_frame, context_length=context_length, prompt_tokens_reserved=reserved,
        prompt_kv_bytes=prompt_kv_bytes, frames_fit_memory=int(frames_fit_memory),
        frames_fit_context=int(frames_fit_context), max_frames=int(min(frames_fit_memory, frames_fit_context)),
        limited_by="memory" if frames_fit_memory < frames_fit_context else "context", notes=notes,
    )
