"""The LLM's attention on the CPU: a prefill chunk's memory does not grow with the context it attends to.

transformers' `sdpa` path, for a chunk of c queries after L cached positions, builds a (c, L) boolean causal mask
and, because a mask is passed, copies one layer's keys and values from the KV heads to all heads (`repeat_kv`:
32 / 8 heads on Llama-3.1-8B, 4× the layer's cache). Both grow with L. Registered through transformers' own
interfaces under the name `ATTN_IMPLEMENTATION`, this replaces them with:

- the mask: torch's `causal_lower_right(c, L)` (`torch.nn.attention.bias.CausalBias`, no storage) instead of the
  (c, L) tensor, whenever the mask is plain causal with the queries at the end of the keys (`AttentionMaskInterface`);
  any other mask (padding, sliding windows, …) is transformers' own `sdpa_mask`;
- the attention: torch SDPA with `enable_gqa=True` (the KV heads are read as they are, no copy), over blocks of
  query rows so that each block's additive mask holds at most `MASK_BLOCK_BYTES` (its rows × L); rows are
  independent, so the blocks give the chunk's attention. On this CPU build SDPA runs its flash kernel
  (`_scaled_dot_product_flash_attention_for_cpu`) with a mask and GQA and never materialises the scores; a
  boolean mask would be converted to the query dtype inside SDPA, which is why the block is built additive.

On other devices both functions are transformers' `sdpa` as is (transformers gives SDPA GQA there only without
a mask: with both, CUDA's fused kernels fall back to the math kernel). A mask of `None` (decoding one token, a
prompt in one forward) goes to transformers' `sdpa`, which then passes `enable_gqa` itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import CausalBias, CausalVariant, causal_lower_right
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, prepare_padding_mask, sdpa_mask

ATTN_IMPLEMENTATION = "videomini_sdpa"
MASK_BLOCK_BYTES = 16 << 20  # the largest additive mask one SDPA call of a chunk is given (rows × context × dtype)


def mask_block_rows(query_length: int, kv_length: int, element_size: int) -> int:
    """Query rows per SDPA call: as many as keep the block's mask within MASK_BLOCK_BYTES (at least one)."""
    return max(1, min(query_length, MASK_BLOCK_BYTES // max(1, kv_length * element_size)))


def lower_right_causal_mask(**kwargs: Any) -> torch.Tensor | None:
    """The mask for `ATTN_IMPLEMENTATION` (transformers' mask-interface call): `None` where SDPA's own causal
    flag suffices, a storage-less `causal_lower_right` for a plain causal chunk after cached positions on the CPU,
    else transformers' `sdpa_mask`."""
    q_length, kv_length = kwargs["q_length"], kwargs["kv_length"]
    q_offset, kv_offset = kwargs.get("q_offset", 0), kwargs.get("kv_offset", 0)
    plain = (torch.device(kwargs.get("device", "cpu")).type == "cpu" and kwargs.get("local_size") is None
             and kwargs.get("mask_function", causal_mask_function) is causal_mask_function
             and isinstance(q_offset, int) and q_offset + q_length == kv_offset + kv_length)
    if plain:
        padding = prepare_padding_mask(kwargs.get("attention_mask"), kv_length, kv_offset)
        plain = padding is None or bool(padding.all())
    if not plain:
        return sdpa_mask(**kwargs)
    if kwargs.get("allow_is_causal_skip", True) and q_length in (1, kv_length):
        return None
    return causal_lower_right(q_length, kv_length)


def _block_mask(mask: torch.Tensor, start: int, stop: int, query: torch.Tensor, kv_length: int) -> torch.Tensor:
    """Rows [start, stop) of the chunk's mask: built additive (0 / -inf) for a lower-right causal mask, a view of a
    given mask's rows otherwise (a mask broadcast over the rows as it is)."""
    if isinstance(mask, CausalBias):
        diagonal = kv_length - mask.seq_len_q + start + 1  # row r sees keys <= r + kv_length - q_length
        full = torch.full((stop - start, kv_length), float("-inf"), dtype=query.dtype, device=query.device)
        return full.triu_(diagonal)
    return mask[..., start:stop, :] if mask.shape[-2] > 1 else mask


def gqa_sdpa_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attention_mask: torch.Tensor | None, dropout: float = 0.0,
                               scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (B, H, q, d), key / value (B, H_kv, L, d) -> (B, q, H, d).

    On the CPU with a mask: SDPA with `enable_gqa=True` over blocks of query rows (`mask_block_rows`); elsewhere
    transformers' `sdpa_attention_forward`."""
    if attention_mask is None or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if isinstance(attention_mask, CausalBias) and attention_mask.variant != CausalVariant.LOWER_RIGHT:
        raise ValueError("only lower-right causal biases are produced by lower_right_causal_mask")
    batch, heads, q_length, head_dim = query.shape
    kv_length = key.shape[2]
    output = query.new_empty(batch, q_length, heads, value.shape[-1])
    rows = mask_block_rows(q_length, kv_length, query.element_size())
    for start in range(0, q_length, rows):
        stop = min(start + rows, q_length)
        block = F.scaled_dot_product_attention(
            query[:, :, start:stop], key, value, attn_mask=_block_mask(attention_mask, start, stop, query, kv_length),
            dropout_p=dropout, scale=scaling, enable_gqa=True)
        output[:, start:stop] = block.transpose(1, 2)
    return output, None


AttentionInterface.register(ATTN_IMPLEMENTATION, gqa_sdpa_attention_forward)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, lower_right_causal_mask)
