"""The LLM's attention on the CPU (videomini.attention): a prefill chunk reads the KV heads as they are and masks in
bounded blocks, and still gives the whole prompt's logits."""

from __future__ import annotations

import torch

from videomini.generation import new_cache, prefill

from conftest import assert_close


def test_chunk_attention_reads_kv_heads_and_a_bounded_mask(golden_model, golden_cases, monkeypatch):
    """A prefill chunk's attention never expands the keys to all heads and never holds a mask beyond
    attention.MASK_BLOCK_BYTES, however long the context: SDPA reads the KV heads as they are, over blocks of
    query rows, and the chunked prefill still gives the whole prompt's logits."""
    import transformers.integrations.sdpa_attention as sdpa_module

    from videomini import attention

    model = golden_model.model
    tensors, _ = golden_cases
    assert model.llm.config._attn_implementation == attention.ATTN_IMPLEMENTATION
    with torch.inference_mode():
        embeds = model.encode_inputs(tensors["video.input_ids"], tensors["video.pixel_values"])
    config = model.llm.config
    budget = 16 * 4 * 20  # 16 query rows of a 20-position context in float32: blocks of fewer rows beyond it
    monkeypatch.setattr(attention, "MASK_BLOCK_BYTES", budget)

    def no_repeat_kv(*args, **kwargs):
        raise AssertionError("repeat_kv: the keys were copied to all heads")

    monkeypatch.setattr(sdpa_module, "repeat_kv", no_repeat_kv)
    calls, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append((query.shape[2], key.shape[1], key.shape[2], attn_mask))
        return sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.inference_mode():
        whole = model.llm(inputs_embeds=embeds).logits[:, -1]
        cache = prefill(model, embeds, new_cache(model), chunk_tokens=16)
        chunked = model.llm(inputs_embeds=embeds[:, -1:], cache=cache, use_cache=True).logits[:, -1]
    assert_close(chunked, whole, 2e-5)
    masked = [(rows, length, mask) for rows, heads, length, mask in calls if mask is not None]
    assert {heads for _, heads, _, _ in calls} == {config.num_key_value_heads}  # 2 KV heads, 4 query heads
    assert config.num_key_value_heads < config.num_attention_heads
    assert max(length for _, length, _ in masked) == embeds.shape[1] - 1 > 2 * 16  # contexts up to the prompt
    assert all(mask.numel() * mask.element_size() <= budget and mask.shape[-1] == length
               for _, length, mask in masked)
    assert min(rows for rows, _, _ in masked) < 16  # long contexts split the chunk's rows
