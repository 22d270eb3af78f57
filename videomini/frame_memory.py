"""One video's frame tokens, timestamps and CLIP embeddings, held on the host."""

from __future__ import annotations

import numpy as np
import torch


class FrameMemory:
    """One video's frame tokens, timestamps and (optional) CLIP embeddings, appended batch by batch.

    Tokens stay in host memory in the dtype they arrive in (7,200 frames of an 8B model in bf16:
    7,200 × 4096 × 2 bytes = 59 MB), so hours of video fit; embeddings are kept L2-normalised, so one matrix
    product with a normalised query gives every frame's cosine similarity (`relevance`): 7,200 × 768 floats,
    a millisecond, which no index would beat.
    """

    def __init__(self) -> None:
        self._token_batches: list[torch.Tensor] = []
        self._timestamp_batches: list[np.ndarray] = []
        self._tokens: torch.Tensor | None = None
        self._timestamps: np.ndarray | None = None
        self._embeddings: list[np.ndarray] = []
        self._has_embeddings: bool | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, frame_tokens: torch.Tensor | np.ndarray, timestamps_s: np.ndarray | torch.Tensor | list[float],
               embeddings: torch.Tensor | np.ndarray | None = None) -> None:
        """Add a batch: `frame_tokens` (B, T, H), `timestamps_s` (B,), `embeddings` (B, D) or None."""
        tokens = torch.from_numpy(np.asarray(frame_tokens)) if not isinstance(frame_tokens, torch.Tensor) \
            else frame_tokens.detach().to("cpu")
        if tokens.ndim != 3:
            raise ValueError(f"frame_tokens must be (batch, tokens, hidden), got shape {tuple(tokens.shape)}")
        if self._token_batches and tokens.shape[1:] != self._token_batches[0].shape[1:]:
            raise ValueError(f"frame_tokens shape {tuple(tokens.shape[1:])} per frame differs from the memory's "
                             f"{tuple(self._token_batches[0].shape[1:])}")
        if isinstance(timestamps_s, torch.Tensor):
            timestamps_s = timestamps_s.detach().cpu().numpy()
        timestamps = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
        batch = tokens.shape[0]
        if len(timestamps) != batch:
            raise ValueError(f"{len(timestamps)} timestamps for {batch} frames")
        has = embeddings is not None
        if self._has_embeddings is not None and has != self._has_embeddings:
            raise ValueError("embeddings must be given for every batch or for none")
        if has:
            vectors = self._as_float32(embeddings)
            if vectors.ndim != 2 or vectors.shape[0] != batch:
                raise ValueError(f"embeddings must be ({batch}, dim), got shape {vectors.shape}")
            if self._embeddings and vectors.shape[1] != self._embeddings[0].shape[1]:
                raise ValueError(f"embedding dim {vectors.shape[1]} differs from the memory's "
                                 f"{self._embeddings[0].shape[1]}")
            self._embeddings.append(_normalised(vectors))
        self._has_embeddings = has
        self._token_batches.append(tokens)
        self._timestamp_batches.append(timestamps)
        self._tokens = self._timestamps = None
        self._count += batch

    @staticmethod
    def _as_float32(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().to("cpu", torch.float32).numpy()
        return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)).copy()

    @property
    def frame_tokens(self) -> torch.Tensor:
        """All frame tokens, (N, T, H), in append order."""
        if not self._token_batches:
            raise ValueError("the frame memory is empty")
        if self._tokens is None:
            self._token_batches = [torch.cat(self._token_batches)]
            self._tokens = self._token_batches[0]
        return self._tokens

    @property
    def timestamps_s(self) -> np.ndarray:
        if self._timestamps is None:
            self._timestamps = (np.concatenate(self._timestamp_batches) if self._timestamp_batches
                                else np.zeros(0, dtype=np.float64))
        return self._timestamps

    @property
    def embeddings(self) -> np.ndarray | None:
        """All embeddings, (N, D), L2-normalised; None when none were given."""
        if not self._has_embeddings:
            return None
        if len(self._embeddings) > 1:
            self._embeddings = [np.concatenate(self._embeddings)]
        return self._embeddings[0]

    def tokens_at(self, indices: np.ndarray | list[int]) -> torch.Tensor:
        """The frame tokens of the selected frames, (k, T, H), in the order given."""
        return self.frame_tokens[torch.as_tensor(np.asarray(indices, dtype=np.int64))]

    def relevance(self, query_embedding: torch.Tensor | np.ndarray) -> np.ndarray:
        """The cosine similarity of every frame to the query, (N,), in frame order (for `select_frames`)."""
        embeddings = self.embeddings
        if embeddings is None:
            raise ValueError("this frame memory holds no embeddings (the vision tower has no projection, or none "
                             "were appended)")
        query = self._as_float32(query_embedding).reshape(-1)
        if len(query) != embeddings.shape[1]:
            raise ValueError(f"query dim {len(query)} differs from the memory's {embeddings.shape[1]}")
        return (embeddings @ _normalised(query[None])[0]).astype(np.float64)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)
