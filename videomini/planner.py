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

from videomini.attention import mask_block_rows
from videomini.generation import PREFILL_CHUNK_TOKENS
from videomini.loading import DEFAULT_VISION_TOWER, find_config, find_vision_config, llm_config_from
from videomini.model import LlavaMini, LlavaMiniConfig

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "nf4": 0.5, "int4": 0.5}
QUANTIZED = ("int8", "nf4", "int4")
# Bytes per quantized value including its group's scale and zero point (fp16, one pair per 64 values), as measured
# in transformers' quantized caches (tests/test_planner.py; bench/capacity.py): HQQ 8-bit 1.0625, quanto 4-bit 0.5625.
GROUP_OVERHEAD_BYTES = 4 / 64
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                  "fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "8bit": "int8", "nf4": "nf4",
                  "4bit": "nf4", "int4": "int4"}
_TORCH_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# Activations beyond the weights and the KV cache: the CUDA context and allocator slack, plus the largest
# transient of one step (a prefill chunk through the MLP, a batch through the vision tower).
DEFAULT_RUNTIME_RESERVE_BYTES = 1 << 30
MASK_BYTES = 1  # transformers' sdpa mask (CUDA): one boolean per (chunk position, context position) pair
# The KV cache's own transient while a chunk is appended to one layer, in multiples of that layer's compute-dtype
# KV per context token. transformers' DynamicCache concatenates the layer's keys, then its values, with the chunk's:
# one of the two (half the layer) exists twice for a moment. Its QuantizedCache dequantizes the layer's whole cache
# on every update, concatenates it with its full-precision window and the new keys/values, and re-quantizes the lot
# when the window (128 positions) flushes, as every prefill chunk does, which costs more (HQQ 8-bit's optimiser
# works on float32 copies): as measured by bench/capacity.py on the 8B-wide slice, HQQ 8-bit at 4,096 frames and
# quanto 4-bit at 16,384 (at 4,096 the chunk's MLP is still the wider moment).
CACHE_APPEND_TRANSIENT_LAYERS = {"int8": 11.0, "int4": 3.3}
COMPUTE_CACHE_APPEND_TRANSIENT_LAYERS = 0.5
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
    embedding_bytes_per_frame: int  # the frame tokens on the device and their copy in the prompt embeddings
    prefill_chunk_tokens: int
    runtime_reserve_bytes: int  # CUDA context, allocator slack, the vision batch
    context_length: int  # the LLM's max_position_embeddings
    prompt_tokens_reserved: int  # prompt + answer
    prompt_kv_bytes: int
    frames_fit_memory: int
    frames_fit_context: int
    max_frames: int
    limited_by: str  # "memory" or "context"
    notes: list[str] = field(default_factory=list)
    device: str = "cuda"  # the attention the chunk runs: videomini's on "cpu", transformers' sdpa elsewhere
    _activation_width: int = 0  # values per token in one prefill chunk's widest moment
    _activation_bytes: int = 2
    _cache_transient_bytes_per_token: float = 0.0
    _dequantized_weight_bytes: int = 0  # quantized weights: the largest linear's weight in the compute dtype
    _attention_width: int = 0  # values per token in one chunk's attention (residual, normed, q, k, v, output)
    _expanded_kv_bytes_per_token: int = 0  # one layer's keys and values at all heads (transformers' repeat_kv)

    @property
    def total_weights_bytes(self) -> int:
        return sum(self.weights_bytes.values())

    def chunk_activation_bytes(self, context_tokens: int) -> int:
        """Peak transient of prefilling one chunk at the end of a `context_tokens` context: the wider of its two
        moments in one decoder layer. The MLP: residual, normed input, gate, up and their product, plus, with
        quantized weights, the largest linear's weight dequantized to the compute dtype for its matmul (torchao's
        int8 weight-only CPU path; bitsandbytes 4-bit dequantizes likewise). The attention: the chunk's q/k/v/o
        and the wider of the cache's append transient (`CACHE_APPEND_TRANSIENT_LAYERS`), which comes first, and
        what the attention itself adds. On the CPU (videomini/attention.py) that is one block of query rows' mask,
        within `attention.MASK_BLOCK_BYTES`, the keys being read at the KV heads: with a compute-dtype cache only
        the append grows with the context, and at the default chunk it stays below the MLP moment over
        Llama-3.1's whole context, so the activations are flat in the number of frames. Elsewhere transformers'
        sdpa adds the chunk's boolean mask against the whole context and one layer's keys and values expanded to
        all heads (repeat_kv, whenever a mask is passed). A prompt prefilled in one forward runs causal, without a
        mask, on both."""
        chunk = min(self.prefill_chunk_tokens, context_tokens)
        mlp = chunk * self._activation_width * self._activation_bytes + self._dequantized_weight_bytes
        masked = context_tokens > self.prefill_chunk_tokens
        append = context_tokens * self._cache_transient_bytes_per_token
        if self.device == "cpu":
            mask = masked * mask_block_rows(chunk, context_tokens, self._activation_bytes) * context_tokens
            attention = mask * self._activation_bytes
        else:
            attention = masked * context_tokens * (chunk * MASK_BYTES + self._expanded_kv_bytes_per_token)
        # the append comes first, the attention after it: the wider of the two
        return int(max(mlp, chunk * self._attention_width * self._activation_bytes + max(attention, append)))

    def peak_bytes_for(self, frames: int) -> int:
        """Memory while answering over `frames` frames (weights, KV cache, frame embeddings, one prefill chunk),
        without the runtime reserve."""
        context = self.prompt_tokens_reserved + frames * self.tokens_per_frame
        return (self.total_weights_bytes + self.prompt_kv_bytes + frames * (self.kv_bytes_per_frame
                + self.embedding_bytes_per_frame) + self.chunk_activation_bytes(context))

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {**out, "total_weights_bytes": self.total_weights_bytes}


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
        raise ValueError(f"unknown dtype {dtype!r} (use bf16, fp16, fp32, int8, nf4 or int4)")
    return _DTYPE_ALIASES[name]


def stored_bytes(dtype: str) -> float:
    """Bytes one value takes in memory: its dtype's, plus the group scale / zero point when quantized."""
    return DTYPE_BYTES[dtype] + (GROUP_OVERHEAD_BYTES if dtype in QUANTIZED else 0.0)


def tensor_bytes(obj: Any) -> int:
    """Bytes of every distinct tensor storage reachable from a module, a cache, a tensor or containers of them;
    quantized tensor subclasses (torchao, quanto) are counted by their inner tensors. What a plan is checked with."""
    seen: set[tuple[int, int]] = set()

    def walk(value: Any) -> int:
        if isinstance(value, torch.nn.Module):
            return sum(walk(t) for t in value.parameters())
        if isinstance(value, torch.Tensor):
            if hasattr(value, "__tensor_flatten__") and type(value) not in (torch.Tensor, torch.nn.Parameter):
                names, _ = value.__tensor_flatten__()
                return sum(walk(getattr(value, name)) for name in names)
            storage = value.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key in seen or value.device.type == "meta":
                return 0
            seen.add(key)
            return storage.nbytes()
        if isinstance(value, (list, tuple)):
            return sum(walk(v) for v in value)
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if hasattr(value, "layers"):  # a transformers Cache
            return sum(walk({k: v for k, v in vars(layer).items()}) for layer in value.layers)
        return 0

    return walk(obj)


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
    prefill_chunk_tokens: int = PREFILL_CHUNK_TOKENS,
    device: str = "cuda",
) -> MemoryPlan:
    """How many frames fit: min(what memory leaves after weights, what the LLM's context leaves after the prompt),
    and which of the two binds.

    `config` is a LLaVA-Mini config dict, a checkpoint folder, its config.json, a hub id in the cache, or a key
    of `KNOWN_CONFIGS`. The model is built from it on the meta device exactly as the loader builds it (a missing
    `compressor_size` is the reference's 2), so parameters and tokens per frame are the model's own.

    `dtype` is the weights': bf16, fp16, fp32, or int8 / nf4 (`--quantize`: the LLM's decoder linears at 1 or
    0.5 byte plus a scale per 64 values; embeddings, lm_head, norms and the vision side stay bf16). `kv_dtype`
    (`--kv-cache`) is the cache's: the compute dtype by default, or int8 / int4 at the bytes measured in
    transformers' quantized caches. Each frame costs its KV (`tokens_per_frame` tokens × 2 × layers × kv_heads
    × head_dim values) plus its embedding twice (the frame tokens and the prompt built from them).

    Activations: one prefill chunk of `prefill_chunk_tokens` through one decoder layer, with the attention that
    runs on `device` ("cpu": videomini's, flat in the context; else transformers' sdpa, whose mask and expanded
    keys grow with it; `MemoryPlan.chunk_activation_bytes`), checked against measured peaks by
    bench/capacity.py; `activation_overhead` replaces the 1 GiB runtime reserve (CUDA context, allocator slack,
    the vision batch). The context cap is the LLM's `max_position_embeddings` (131,072 for Llama-3.1) minus the
    prompt and the answer; the official `tokenizer_model_max_length` (4096) truncation is not applied (it would
    cut the question off a long video's prompt; videomini selects frames instead).
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
        model = LlavaMini(mm_config, llm_config, vision_tower=_vision_tower(vision_config) if vision_config
                          else torch.nn.Identity())
        parameters = part_parameters(model)
        weights = _weights_bytes(model, parameters, normalize_dtype(dtype))
    tokenizer_max = cfg.get("tokenizer_model_max_length")
    if tokenizer_max and tokenizer_max < llm_config.max_position_embeddings:
        notes.append(f"tokenizer_model_max_length {tokenizer_max} is not applied (it would cut the question off "
                     f"long prompts); the cap is max_position_embeddings {llm_config.max_position_embeddings}")
    return _plan(name, parameters, weights, mm_config, llm_config, device_memory_bytes, dtype, kv_dtype,
                 prompt_tokens, answer_tokens, activation_overhead, prefill_chunk_tokens, notes, device=device)


def _weights_bytes(model: LlavaMini, parameters: dict[str, int], dtype: str) -> dict[str, int]:
    """Bytes per part in `dtype`; quantized, only the LLM's decoder linears are (the rest stays bf16)."""
    if dtype not in QUANTIZED:
        return {part: count * DTYPE_BYTES[dtype] for part, count in parameters.items()}
    linear = sum(p.numel() for p in model.llm.model.layers.parameters() if p.dim() == 2)
    weights = {part: count * DTYPE_BYTES["bf16"] for part, count in parameters.items()}
    weights["llm"] = int(linear * stored_bytes(dtype) + (parameters["llm"] - linear) * DTYPE_BYTES["bf16"])
    return weights


def plan_for_model(model: LlavaMini, device_memory_bytes: int | str, prompt_tokens: int = 1024,
                   answer_tokens: int = 512, kv_cache: str | None = None) -> MemoryPlan:
    """The plan for a loaded model: its weights as they are in memory (quantized or not), its compute dtype,
    the given KV cache type. What `ask` sizes its frame budget with."""
    weights = {part: tensor_bytes(module) for part, module in (
        ("llm", model.llm), ("prefusion", model.prefusion_layers), ("vision", model.vision_tower),
        ("compressor", model.compressor), ("projector", model.mm_projector))}
    return _plan(getattr(model, "name_or_path", "llava-mini"), part_parameters(model), weights, model.config,
                 model.llm_config, device_memory_bytes, _TORCH_DTYPES[model.dtype], kv_cache, prompt_tokens,
                 answer_tokens, None, PREFILL_CHUNK_TOKENS, [], _has_quantized_weights(model.llm),
                 device=model.device.type)


def _has_quantized_weights(llm: torch.nn.Module) -> bool:
    """Whether a loaded LLM's linears hold quantized tensors (torchao, bitsandbytes, quanto subclasses)."""
    return any(type(p) not in (torch.Tensor, torch.nn.Parameter) or p.dtype in (torch.int8, torch.uint8)
               for p in llm.model.layers.parameters())


def _frames_that_fit(plan: MemoryPlan) -> int:
    """The most frames whose whole peak (`peak_bytes_for`, which grows with the context) plus the runtime reserve
    fits in device memory: a binary search, since the activations depend on the context they are planned for."""
    def fits(frames: int) -> bool:
        return plan.peak_bytes_for(frames) + plan.runtime_reserve_bytes <= plan.device_memory_bytes

    low, high = 0, max(1, plan.device_memory_bytes // max(1, plan.kv_bytes_per_frame + plan.embedding_bytes_per_frame))
    if not fits(0):
        return 0
    while low < high:  # invariant: fits(low)
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def _plan(name: str, parameters: dict[str, int], weights: dict[str, int], mm_config: LlavaMiniConfig,
          llm_config: Any, device_memory_bytes: int | str, dtype: str, kv_dtype: str | None, prompt_tokens: int,
          answer_tokens: int, reserve: int | str | None, chunk_tokens: int, notes: list[str],
          quantized_weights: bool = False, device: str = "cuda") -> MemoryPlan:
    dtype = normalize_dtype(dtype)
    compute = "bf16" if dtype in QUANTIZED else dtype
    kv_dtype = normalize_dtype(kv_dtype) if kv_dtype is not None else compute
    hidden, layers = int(llm_config.hidden_size), int(llm_config.num_hidden_layers)
    head_dim = int(getattr(llm_config, "head_dim", None) or hidden // llm_config.num_attention_heads)
    kv_heads = int(llm_config.num_key_value_heads or llm_config.num_attention_heads)
    kv_bytes_per_token = int(round(2 * layers * kv_heads * head_dim * stored_bytes(kv_dtype)))
    tokens_per_frame = mm_config.tokens_per_frame
    plan = MemoryPlan(
        model=name, dtype=dtype, kv_dtype=kv_dtype, device_memory_bytes=parse_size(device_memory_bytes),
        weights_bytes=weights, parameters=parameters, activation_overhead_bytes=0, tokens_per_frame=tokens_per_frame,
        kv_bytes_per_token=kv_bytes_per_token, kv_bytes_per_frame=kv_bytes_per_token * tokens_per_frame,
        embedding_bytes_per_frame=2 * tokens_per_frame * hidden * DTYPE_BYTES[compute],
        prefill_chunk_tokens=int(chunk_tokens), runtime_reserve_bytes=parse_size(
            reserve if reserve is not None else DEFAULT_RUNTIME_RESERVE_BYTES),
        context_length=int(llm_config.max_position_embeddings),
        prompt_tokens_reserved=int(prompt_tokens) + int(answer_tokens),
        prompt_kv_bytes=(int(prompt_tokens) + int(answer_tokens)) * kv_bytes_per_token, frames_fit_memory=0,
        frames_fit_context=0, max_frames=0, limited_by="", notes=notes, device=torch.device(device).type,
        _activation_width=4 * hidden + 3 * int(llm_config.intermediate_size), _activation_bytes=DTYPE_BYTES[compute],
        _attention_width=4 * hidden + 2 * kv_heads * head_dim,
        _cache_transient_bytes_per_token=CACHE_APPEND_TRANSIENT_LAYERS.get(
            kv_dtype, COMPUTE_CACHE_APPEND_TRANSIENT_LAYERS) * 2 * kv_heads * head_dim * DTYPE_BYTES[compute],
        _expanded_kv_bytes_per_token=2 * int(llm_config.num_attention_heads) * head_dim * DTYPE_BYTES[compute])
    if dtype in QUANTIZED or quantized_weights:  # the widest linear (Llama's MLP) dequantized for its matmul
        plan._dequantized_weight_bytes = int(llm_config.intermediate_size) * hidden * DTYPE_BYTES[compute]
    plan.frames_fit_context = max(0, (plan.context_length - plan.prompt_tokens_reserved) // tokens_per_frame)
    plan.frames_fit_memory = _frames_that_fit(plan)
    plan.max_frames = min(plan.frames_fit_memory, plan.frames_fit_context)
    plan.limited_by = "memory" if plan.frames_fit_memory < plan.frames_fit_context else "context"
    context = plan.prompt_tokens_reserved + plan.max_frames * tokens_per_frame
    plan.activation_overhead_bytes = plan.runtime_reserve_bytes + plan.chunk_activation_bytes(context)
    if plan.peak_bytes_for(0) + plan.runtime_reserve_bytes > plan.device_memory_bytes:
        notes.append("the weights alone do not fit in this device memory")
    if dtype in QUANTIZED:
        notes.append(f"{dtype} weights: the LLM's decoder linears quantized, embeddings, lm_head and the vision side "
                     f"bf16; KV cache {kv_dtype}")
    return plan
