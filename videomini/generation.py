"""Generation with LLaVA-Mini: the KV cache (the model's dtype, or transformers' quantized cache), a chunked
prefill that bounds the LLM's activations by one chunk, and transformers' `generate` continuing from it.

This is the answering path's machinery (videomini/answer.py streams through it); the architecture itself is in
videomini/model.py. `generate(model, input_ids=..., pixel_values=...)` is the reference's `model.generate` call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from videomini.config import MAX_NEW_TOKENS
from videomini.errors import InvalidInput

# Positions per prefill forward: the LLM's activations are bounded by one chunk, not by the number of frames.
PREFILL_CHUNK_TOKENS = 4096
# --kv-cache: transformers' quantized cache backends that run on the CPU (HQQ for 8 bits, quanto for 4).
KV_CACHE_BACKENDS = {"int8": ("hqq", 8), "int4": ("quanto", 4)}


def check_kv_cache(kv_cache: str | None) -> None:
    """A one-line error for a cache type other than None (the model's dtype), int8 or int4."""
    if kv_cache not in (None, "none", "model") and kv_cache not in KV_CACHE_BACKENDS:
        raise InvalidInput(f"--kv-cache: unknown kv cache {kv_cache!r} (use {', '.join(KV_CACHE_BACKENDS)})")


def new_cache(model: Any, kv_cache: str | None = None) -> Any:
    """An empty KV cache for one generation with `model` (a LlavaMini): transformers' DynamicCache in the model's
    dtype, or its QuantizedCache (`kv_cache` "int8": HQQ 8-bit, "int4": quanto 4-bit; the newest 128 positions
    stay in the compute dtype until they are flushed into the quantized store)."""
    from transformers import DynamicCache, QuantizedCache

    check_kv_cache(kv_cache)
    if kv_cache in (None, "none", "model"):
        return DynamicCache(config=model.llm.config)
    from videomini.backends import enable

    enable()  # the CLI keeps the quantization libraries out until an option needs them
    backend, nbits = KV_CACHE_BACKENDS[kv_cache]
    return QuantizedCache(backend=backend, config=model.llm.config, nbits=nbits,
                          q_group_size=quantization_group(model.llm.config))


def quantization_group(config: Any, preferred: int = 64) -> int:
    """The quantized cache's group size: transformers' 64 where it divides one position's keys (kv heads x
    head_dim: Llama-3.1-8B 8 x 128 = 1024), else the largest size that does, since HQQ and quanto group the
    flattened (B, heads, T, head_dim) tensor and refuse a size that does not divide it (a tiny model's 2 x 16 at
    an odd T)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return math.gcd(preferred, heads * head_dim)


@torch.inference_mode()
def prefill(model: Any, inputs_embeds: torch.Tensor, cache: Any, chunk_tokens: int = PREFILL_CHUNK_TOKENS) -> Any:
    """Every position but the last into `cache`, `chunk_tokens` positions per forward, so that activations are
    bounded by the chunk. `generate` continues from the cache (transformers' restart-from-cache path: only the
    last position is run, and it yields the first token). A no-op for a prompt within one chunk.

    transformers' own `prefill_chunk_size` splits `input_ids` and cannot take `inputs_embeds`, which is what the
    LLM receives here (fused text + frame tokens), hence this loop over the LLM's own forward."""
    end = inputs_embeds.shape[1] - 1
    if end <= chunk_tokens:
        return cache
    for start in range(cache.get_seq_length(), end, chunk_tokens):
        chunk = inputs_embeds[:, start: min(start + chunk_tokens, end)].to(model.dtype)
        model.llm.model(inputs_embeds=chunk, cache=cache, use_cache=True)
    return cache


@torch.inference_mode()
def generate(model: Any, input_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
             inputs_embeds: torch.Tensor | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
             do_sample: bool = False, eos_token_id: int | Iterable[int] | None = None,
             prefill_chunk_tokens: int = PREFILL_CHUNK_TOKENS, kv_cache: str | None = None,
             **generate_kwargs: Any) -> Any:
    """The reference's generation: returns only the new token ids (1, <= max_new_tokens).

    Generated tokens enter the LLM as plain embeddings (they never go through pre-fusion), as in the reference.
    Uses transformers' `generate` (greedy or sampling, a streamer via `streamer=`), after a chunked prefill of
    long prompts into a `kv_cache` ("int8", "int4" or the model's dtype), or into the `cache=` given.
    """
    if inputs_embeds is None:
        inputs_embeds = (model.encode_inputs(input_ids, pixel_values) if pixel_values is not None
                         else model.embed_tokens(input_ids))
    if eos_token_id is None:
        eos_token_id = model.llm.generation_config.eos_token_id
    if not do_sample:  # greedy: drop sampling knobs a checkpoint's generation_config may carry
        generate_kwargs.update(temperature=None, top_p=None, top_k=None)
    cache = generate_kwargs.pop("cache", None) or new_cache(model, kv_cache)
    prefill(model, inputs_embeds, cache, prefill_chunk_tokens)
    attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
    return model.llm.generate(inputs_embeds=inputs_embeds.to(model.dtype), attention_mask=attention_mask,
                              cache=cache, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              eos_token_id=eos_token_id, pad_token_id=_first(eos_token_id), **generate_kwargs)


def _first(value: int | Iterable[int] | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return next(iter(value), None)
