"""The answering path (videomini.answer): the attention evidence equals what an eager forward returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("score_bytes,chunk", [(64 << 20, 4096), (1, 40)])
def test_attention_evidence_equals_eager_attention(golden_model, golden_cases, monkeypatch, score_bytes, chunk):
    """The evidence (each frame's attention mass, recomputed from the layer inputs and the KV cache after an SDPA
    generation) equals the attention weights an eager forward over the same sequence returns; also when the
    prompt is prefilled in chunks and the scores are computed one answer step at a time."""
    from videomini import answer as answer_module
    from videomini.answer import generate_with_evidence
    from videomini.model import image_slot

    monkeypatch.setattr(answer_module, "EVIDENCE_SCORE_BYTES", score_bytes)

    model, tokenizer, _ = golden_model
    tensors, _ = golden_cases
    ids = tensors["video.input_ids"]
    encoding, fused = model.encode_frames(tensors["video.pixel_values"][0], ids)
    generated = generate_with_evidence(model, tokenizer, ids, fused.float().mean(0), encoding.frame_tokens,
                                       max_new_tokens=6, prefill_chunk_tokens=chunk)
    steps = len(generated.token_ids)
    assert steps >= 2 and generated.frame_scores.shape == (5,)
    with torch.inference_mode():
        prompt = model.build_inputs_embeds(ids, fused.float().mean(0), encoding.frame_tokens)
        answered = model.embed_tokens(torch.tensor(generated.token_ids[: steps - 1]))[None]
        sequence = torch.cat([prompt, answered], dim=1)
        implementation, model.llm.config._attn_implementation = model.llm.config._attn_implementation, "eager"
        try:
            attentions = model.llm(inputs_embeds=sequence, output_attentions=True, use_cache=False).attentions
        finally:
            model.llm.config._attn_implementation = implementation
    slot, tokens_per_frame = image_slot(ids), model.config.tokens_per_frame
    frames = slice(slot, slot + 5 * tokens_per_frame)
    # rows: the positions that produced each answer token (the last prompt position, then each answer token)
    per_token = torch.stack([a[0, :, -steps:, frames] for a in attentions]).mean(dim=(0, 1, 2))
    expected = per_token.reshape(-1, tokens_per_frame).sum(-1).numpy()
    assert np.abs(generated.frame_scores - expected).max() <= 1e-5
    assert 0 < expected.sum() < 1  # the rest of the mass is on the text
