"""One video's frame memory (videomini.frame_memory): tokens, times and the relevance of every frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videomini.frame_memory import FrameMemory

# ---------------------------------------------------------------------------------------------------------
# FrameMemory
# ---------------------------------------------------------------------------------------------------------

def test_frame_memory_appends_and_scores_relevance() -> None:
    generator = torch.Generator().manual_seed(0)
    memory = FrameMemory()
    assert len(memory) == 0
    embeddings = torch.randn(40, 32, generator=generator)
    tokens = torch.randn(40, 1, 16, generator=generator).to(torch.bfloat16)
    for start in range(0, 40, 16):  # batches of 16, 16, 8; numpy and torch
        batch = slice(start, start + 16)
        frame_tokens = tokens[batch] if start else tokens[batch].float().numpy()
        memory.append(frame_tokens if start else torch.from_numpy(frame_tokens).to(torch.bfloat16),
                      np.arange(40)[batch] * 0.5, embeddings[batch] * 3.0)  # not normalised on purpose
    assert len(memory) == 40
    assert memory.frame_tokens.shape == (40, 1, 16)
    assert torch.equal(memory.frame_tokens, tokens)
    assert np.array_equal(memory.timestamps_s, np.arange(40) * 0.5)
    assert np.allclose(np.linalg.norm(memory.embeddings, axis=1), 1.0, atol=1e-5)
    assert torch.equal(memory.tokens_at([7, 3]), tokens[[7, 3]])

    relevance = memory.relevance(embeddings[23].numpy() * 0.1)  # the query's scale does not matter either
    assert relevance.shape == (40,) and int(np.argmax(relevance)) == 23
    assert relevance[23] == pytest.approx(1.0, abs=1e-5)
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    np.testing.assert_allclose(relevance, (unit @ unit[23]).numpy(), atol=1e-5)  # cosine similarity, frame order


def test_frame_memory_rejects_inconsistent_batches() -> None:
    memory = FrameMemory()
    memory.append(torch.zeros(2, 1, 8), [0.0, 1.0])
    with pytest.raises(ValueError, match="timestamps"):
        memory.append(torch.zeros(2, 1, 8), [0.0])
    with pytest.raises(ValueError, match="differs"):
        memory.append(torch.zeros(2, 1, 4), [2.0, 3.0])
    with pytest.raises(ValueError, match="every batch or for none"):
        memory.append(torch.zeros(1, 1, 8), [2.0], np.ones((1, 4)))
    with pytest.raises(ValueError, match="no embeddings"):
        memory.relevance(np.ones(4))
