"""A live session's rolling frame memory, bounded however long the stream runs.

Every encoded frame is appended to an on-disk archive chunk (frame tokens as raw bytes, memory-mapped when read
back; the frame itself as a JPEG, which the question is fused with at ask time); its CLIP embedding goes into one
FAISS index (ids = the frame's sequence number) for question-aware selection over everything retained. The
newest `window_frames` frames also stay in RAM. Chunks older than `retain_s` behind the newest frame are deleted
and their ids removed from FAISS, so resident memory is bounded by the window plus the retained embeddings and
per-frame times (a 768-d CLIP embedding: 3 KB a frame, 11 MB per retained hour at 1 fps)."""

from __future__ import annotations

import io
import shutil
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CHUNK_S = 60.0  # one archive file set per minute of stream


@dataclass
class _Chunk:
    """One archive file set: frames [first_seq, first_seq + len(times)) of the stream."""

    folder: Path
    first_seq: int
    times: list[float] = field(default_factory=list)
    jpeg_spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) in frames.jpg
    jpeg_bytes: int = 0

    @property
    def tokens_path(self) -> Path:
        return self.folder / "tokens.bin"

    @property
    def frames_path(self) -> Path:
        return self.folder / "frames.jpg"


class RollingMemory:
    """Frame tokens, CLIP embeddings, JPEG frames and stream times of the retained part of a stream.

    Thread-safe: the encoder appends while questions read. Frames are in stream-time order."""

    def __init__(self, folder: str | Path, window_frames: int, retain_s: float, chunk_s: float = CHUNK_S,
                 jpeg_quality: int = 90):
        if window_frames < 1 or retain_s <= 0:
            raise ValueError(f"window_frames ({window_frames}) and retain_s ({retain_s}) must be positive")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.window_frames, self.retain_s, self.chunk_s = window_frames, float(retain_s), float(chunk_s)
        self.jpeg_quality = jpeg_quality
        self._chunks: deque[_Chunk] = deque()
        self._recent: deque[tuple[int, torch.Tensor, bytes]] = deque()  # (seq, tokens (T, H), jpeg)
        self._index = None  # faiss IndexIDMap2 over IndexFlatIP
        self._token_shape: tuple[int, ...] | None = None
        self._token_dtype: torch.dtype | None = None
        self._next_seq = 0
        self._lock = threading.RLock()
        self.dropped_frames = 0  # frames deleted past the retention

    # -- writing ----------------------------------------------------------------------------------------------
    def append(self, frame_tokens: torch.Tensor, embeddings: torch.Tensor | np.ndarray | None,
               times_s: np.ndarray, frames: np.ndarray) -> None:
        """Add a batch: tokens (B, T, H), CLIP embeddings (B, D) or None, stream times (B,), frames (B, h, w, 3)."""
        jpegs = [self._jpeg(frame) for frame in frames]  # outside the lock: the slow part
        tokens = frame_tokens.detach().cpu().contiguous()
        with self._lock:
            if self._token_shape is None:
                self._token_shape, self._token_dtype = tuple(tokens.shape[1:]), tokens.dtype
            seqs = np.arange(self._next_seq, self._next_seq + len(times_s), dtype=np.int64)
            self._next_seq += len(times_s)
            for i, (seq, t) in enumerate(zip(seqs.tolist(), np.asarray(times_s, dtype=np.float64).tolist())):
                chunk = self._chunk_for(seq, t)
                self._write(chunk, tokens[i], jpegs[i], t)
                self._recent.append((seq, tokens[i].clone(), jpegs[i]))
            if embeddings is not None:
                self._add_embeddings(embeddings, seqs)
            while len(self._recent) > self.window_frames:
                self._recent.popleft()
            self._expire(float(times_s[-1]))

    def _jpeg(self, frame: np.ndarray) -> bytes:
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(out, format="JPEG", quality=self.jpeg_quality)
        return out.getvalue()

    def _chunk_for(self, seq: int, t: float) -> _Chunk:
        last = self._chunks[-1] if self._chunks else None
        if last is None or t - last.times[0] >= self.chunk_s:
            last = _Chunk(self.folder / f"chunk-{seq:012d}", seq)
            last.folder.mkdir(parents=True, exist_ok=True)
            self._chunks.append(last)
        return last

    @staticmethod
    def _write(chunk: _Chunk, tokens: torch.Tensor, jpeg: bytes, t: float) -> None:
        with open(chunk.tokens_path, "ab") as f:
            f.write(tokens.view(torch.uint8).numpy().tobytes())  # raw bytes of any dtype (bf16 included)
        with open(chunk.frames_path, "ab") as f:
            f.write(jpeg)
        chunk.jpeg_spans.append((chunk.jpeg_bytes, len(jpeg)))
        chunk.jpeg_bytes += len(jpeg)
        chunk.times.append(t)

    def _add_embeddings(self, embeddings: torch.Tensor | np.ndarray, seqs: np.ndarray) -> None:
        import faiss

        vectors = embeddings.detach().float().cpu().numpy() if isinstance(embeddings, torch.Tensor) else embeddings
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).copy()
        faiss.normalize_L2(vectors)
        if self._index is None:
            self._index = faiss.IndexIDMap2(faiss.index_factory(vectors.shape[1], "Flat", faiss.METRIC_INNER_PRODUCT))
        self._index.add_with_ids(vectors, seqs)

    def _expire(self, newest_s: float) -> None:
        """Delete whole chunks whose last frame is more than `retain_s` behind the newest (never the newest)."""
        while len(self._chunks) > 1 and newest_s - self._chunks[0].times[-1] > self.retain_s:
            chunk = self._chunks.popleft()
            if self._index is not None:
                ids = np.arange(chunk.first_seq, chunk.first_seq + len(chunk.times), dtype=np.int64)
                self._index.remove_ids(ids)
            self.dropped_frames += len(chunk.times)
            shutil.rmtree(chunk.folder, ignore_errors=True)

    # -- reading ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return sum(len(c.times) for c in self._chunks)

    @property
    def recent_count(self) -> int:
        return len(self._recent)

    def latest_jpeg(self) -> tuple[int, bytes] | None:
        """The newest frame as JPEG, with its sequence number (a live view); None before the first frame."""
        with self._lock:
            return (self._recent[-1][0], self._recent[-1][2]) if self._recent else None

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(sequence numbers, stream times) of every retained frame, in order: what a question selects from."""
        with self._lock:
            seqs = [np.arange(c.first_seq, c.first_seq + len(c.times), dtype=np.int64) for c in self._chunks]
            times = [np.asarray(c.times, dtype=np.float64) for c in self._chunks]
        if not seqs:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(seqs), np.concatenate(times)

    def relevance(self, query_embedding: torch.Tensor | np.ndarray, seqs: np.ndarray) -> np.ndarray | None:
        """Cosine of each frame in `seqs` to the query (-inf for a frame expired since); None without embeddings."""
        import faiss

        with self._lock:
            if self._index is None or self._index.ntotal == 0:
                return None
            query = np.asarray(query_embedding.detach().float().cpu() if isinstance(query_embedding, torch.Tensor)
                               else query_embedding, dtype=np.float32).reshape(1, -1).copy()
            faiss.normalize_L2(query)
            scores, ids = self._index.search(query, int(self._index.ntotal))
        by_seq = dict(zip(ids[0].tolist(), scores[0].tolist()))
        return np.array([by_seq.get(int(s), -np.inf) for s in seqs], dtype=np.float64)

    def load(self, seqs: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Frame tokens (k, T, H) and decoded frames (k, h, w, 3) of the frames `seqs` (recent ones from RAM,
        older ones memory-mapped from the archive); KeyError for a frame no longer retained."""
        from PIL import Image

        with self._lock:
            recent = {seq: (tokens, jpeg) for seq, tokens, jpeg in self._recent}
            found = [recent.get(int(s)) or self._from_archive(int(s)) for s in seqs]
        tokens = torch.stack([t for t, _ in found])
        frames = np.stack([np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")) for _, jpeg in found])
        return tokens, frames

    def _from_archive(self, seq: int) -> tuple[torch.Tensor, bytes]:
        for chunk in self._chunks:
            index = seq - chunk.first_seq
            if 0 <= index < len(chunk.times):
                frame_bytes = int(np.prod(self._token_shape)) * torch.tensor([], dtype=self._token_dtype).element_size()
                mapped = np.memmap(chunk.tokens_path, dtype=np.uint8, mode="r", offset=index * frame_bytes,
                                   shape=(frame_bytes,))
                tokens = torch.from_numpy(np.array(mapped)).view(self._token_dtype).reshape(self._token_shape)
                del mapped
                offset, length = chunk.jpeg_spans[index]
                with open(chunk.frames_path, "rb") as f:
                    f.seek(offset)
                    return tokens, f.read(length)
        raise KeyError(f"frame {seq} is no longer retained")

    def close(self, delete: bool = True) -> None:
        with self._lock:
            self._recent.clear()
            self._index = None
            if delete:
                shutil.rmtree(self.folder, ignore_errors=True)
