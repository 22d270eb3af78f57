"""Shards: one safetensors file per indexed video, written once, durably, and read by search and answer.

    shards/<id>-<fp12>.safetensors   embeddings fp32 (N, D), timestamps_s f64 (N,) and, when indexed with
                                     signals, segment_embeddings fp32 (S, E) and segment_times_s f64 (S, 2);
                                     metadata: format_version, video id, path, fingerprint, info (duration, model,
                                     fps, timings, signals, text model), the segments' source and text, the
                                     checksum of each tensor's bytes and the metadata's own checksum

What a shard holds is what its readers read: the index build reads the embeddings and times, `ask --library` the
times only (`read_times`), search the segments' texts. Frame tokens (fp16 (N, T, H)) are not stored by `index`:
an answer fuses the question with each frame's full vision tokens (LLaVA-Mini's pre-fusion), so it re-decodes the
frames it answers from whatever is stored, and the compressed tokens alone cannot answer. Format 2 still accepts
them (`write_shard(frame_tokens=...)`): a caller that needs them (a live archive) stores them contiguous in the
safetensors file, where np.memmap at the header's data offsets maps them without reading. Format-1 shards (with
frame tokens) read as they are.

The name carries the file's fingerprint, so a changed video gets a new shard while the published index still
reads the old one. Integrity: the catalog records the checksum of a shard's header (the safetensors length + JSON,
which holds the tensors' checksums), so a reader verifies the header and then only the tensors it reads; a shard
alone (no catalog) still verifies its tensors, and holds what a catalog row needs (see catalog rebuild)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videomini.storage.errors import LibraryDamaged, LibraryError
from videomini.storage.files import FileDigest, atomic_write, checksum_bytes, durability_point

SHARDS = "shards"
SHARD_FORMAT_VERSION = "2"  # 2: frame tokens optional (format 1 always held them)
READABLE_SHARD_FORMATS = ("1", "2")
FINGERPRINT_IN_NAME = 12  # hex digits of the fingerprint in a shard's file name
VECTOR_TENSORS = ("embeddings", "timestamps_s", "segment_embeddings", "segment_times_s")
FRAME_TENSORS = ("frame_tokens", "embeddings", "timestamps_s")  # frame_tokens only when stored
HEADER_MAX_BYTES = 100_000_000  # safetensors' own limit on a header
METADATA_CHECKSUM = "metadata_checksum"  # format 2: the metadata's own checksum (format 1 shards have none)


@dataclass
class VideoFrames:
    """Everything stored for one video: what the answer step needs without re-encoding."""

    video_id: int
    path: str
    frame_tokens: np.ndarray | None  # fp16 (N, T, H), None when not stored (what `index` writes)
    embeddings: np.ndarray  # fp32 (N, D), L2-normalised
    timestamps_s: np.ndarray  # f64 (N,)


@dataclass
class ShardContent:
    """A validated shard, ready to write: tensors and metadata as safetensors stores them."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]


def metadata_checksum(metadata: dict[str, str]) -> str:
    """The checksum of a shard's metadata (canonical JSON, without this checksum): with the tensors' own checksums it
    lets a shard prove itself whole without the catalog, so repair can tell a wrong catalog record (the shard
    verifies: repair the record) from a damaged header (it does not: quarantine the shard)."""
    body = {k: v for k, v in metadata.items() if k != METADATA_CHECKSUM}
    return checksum_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def shard_name(video_id: int, fp: str) -> str:
    return f"{video_id}-{fp[:FINGERPRINT_IN_NAME]}.safetensors"


def to_numpy(x: Any, dtype: np.dtype) -> np.ndarray:
    """A contiguous numpy array of `dtype` from a numpy array or a torch tensor (any device, bf16 included)."""
    if hasattr(x, "detach"):  # torch tensor (bf16 has no numpy dtype: convert on the torch side first)
        import torch

        x = x.detach().to("cpu", {np.float16: torch.float16, np.float32: torch.float32,
                                  np.float64: torch.float64}[np.dtype(dtype).type]).numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


def unit_rows(vectors: np.ndarray, label: str) -> np.ndarray:
    """Rows scaled to unit length, so inner product is cosine similarity; a zero row is an error."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise LibraryError(f"{label}: zero embedding vector")
    return (vectors / norms).astype(np.float32)


def frame_tensors(label: str, frame_tokens: Any, embeddings: Any, timestamps_s: Any,
                  signals: list[str]) -> dict[str, np.ndarray]:
    """Validated frame tensors of one video (embeddings made unit length; frame tokens only when given);
    one-line LibraryError otherwise."""
    embeddings = to_numpy(embeddings, np.float32)
    timestamps_s = to_numpy(timestamps_s, np.float64)
    tokens = None if frame_tokens is None else to_numpy(frame_tokens, np.float16)
    if tokens is not None and tokens.ndim == 2:
        tokens = tokens[:, None, :]
    n = len(timestamps_s)
    if (tokens is not None and tokens.ndim != 3) or embeddings.ndim != 2 or timestamps_s.ndim != 1:
        raise LibraryError(f"{label}: expected frame_tokens (N, T, H) or None, embeddings (N, D), timestamps_s (N,); "
                           f"got {None if tokens is None else tokens.shape}, {embeddings.shape}, {timestamps_s.shape}")
    if (n == 0 and not signals) or len(embeddings) != n or (tokens is not None and len(tokens) != n):
        raise LibraryError(f"{label}: frame counts differ or are zero: {'-' if tokens is None else len(tokens)} "
                           f"tokens, {len(embeddings)} embeddings, {n} timestamps")
    if not (np.isfinite(embeddings).all() and np.isfinite(timestamps_s).all() and
            (tokens is None or np.isfinite(tokens).all())):
        raise LibraryError(f"{label}: non-finite values in frame tokens, embeddings or timestamps")
    if np.any(np.diff(timestamps_s) < 0):
        raise LibraryError(f"{label}: timestamps_s are not sorted")
    out = {"embeddings": unit_rows(embeddings, label), "timestamps_s": timestamps_s}
    return out if tokens is None else {"frame_tokens": tokens, **out}


def segment_tensors(label: str, segments: list[dict], segment_embeddings: Any,
                    signals: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """Validated text segments: their tensors and their (source, text) list as JSON for the shard's metadata."""
    unknown = {seg.get("source") for seg in segments} - set(signals)
    if unknown:
        raise LibraryError(f"{label}: segments from {sorted(map(str, unknown))} but signals {signals}")
    vectors = to_numpy(segment_embeddings, np.float32) if segment_embeddings is not None else None
    if vectors is None or vectors.ndim != 2 or len(vectors) != len(segments):
        raise LibraryError(f"{label}: {len(segments)} segments need as many segment_embeddings rows, got "
                           f"{None if vectors is None else vectors.shape}")
    times = np.array([[seg["start_s"], seg["end_s"]] for seg in segments], dtype=np.float64).reshape(-1, 2)
    texts = json.dumps([[seg["source"], seg["text"]] for seg in segments])
    return {"segment_embeddings": unit_rows(vectors, label), "segment_times_s": times}, texts


class ShardStore:
    """The shards folder of a library: durable writes, and verified reads of what each consumer needs.
    `checksum` arguments are the header checksum the catalog (or manifest) recorded; None: not recorded
    (a library written before checksums), then only the tensors are verified against the shard's own checksums."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, name: str, content: ShardContent) -> FileDigest:
        """Write a shard durably (temp + fsync + rename); a crash leaves the old file or none."""
        from safetensors.numpy import save

        metadata = dict(content.metadata, checksums=json.dumps({k: checksum_bytes(v)
                                                                 for k, v in content.tensors.items()}))
        metadata[METADATA_CHECKSUM] = metadata_checksum(metadata)
        blob = save(content.tensors, metadata=metadata)
        self.folder.mkdir(exist_ok=True)
        digest = atomic_write(self.folder / name, lambda f: f.write(blob), point="shard_tmp_written")
        durability_point("shard_durable")
        return digest

    def exists(self, name: str | None) -> bool:
        return bool(name) and (self.folder / name).is_file()

    def damaged(self, name: str, what: str) -> LibraryDamaged:
        root = self.folder.parent
        return LibraryDamaged(f"{self.folder / name}: shard damaged ({what}); run `videomini library {root} "
                              "--repair` to re-index its video")

    def missing(self, name: str) -> LibraryDamaged:
        return LibraryDamaged(f"{self.folder / name}: shard missing; run `videomini library {self.folder.parent} "
                              "--repair` to re-index its video")

    def header_checksum(self, name: str) -> str:
        """The checksum of a shard's header: 8 length bytes and the JSON they announce."""
        path = self.folder / name
        try:
            with open(path, "rb") as f:
                head = f.read(8)
                size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
                if not 0 < size <= HEADER_MAX_BYTES:
                    raise self.damaged(name, "no safetensors header")
                header = f.read(size)
        except FileNotFoundError:
            raise self.missing(name) from None
        if len(header) != size:
            raise self.damaged(name, "file ends inside its header")
        return checksum_bytes(head + header)

    def _open(self, name: str, read: Any, checksum: str | None) -> Any:
        from safetensors import safe_open

        path = self.folder / name
        if not path.is_file():
            raise self.missing(name)
        if checksum is not None and self.header_checksum(name) != checksum:
            raise self.damaged(name, "header checksum mismatch")
        try:
            with safe_open(path, framework="np") as f:
                metadata = f.metadata() or {}
                version = metadata.get("format_version", "1")  # first: a newer format may checksum otherwise
                if version not in READABLE_SHARD_FORMATS:
                    raise LibraryError(f"{path}: shard format {version}, this videomini reads formats "
                                       f"{', '.join(READABLE_SHARD_FORMATS)}; upgrade videomini to read this library")
                if METADATA_CHECKSUM in metadata and metadata_checksum(metadata) != metadata[METADATA_CHECKSUM]:
                    raise self.damaged(name, "metadata checksum mismatch")
                return read(f)
        except LibraryError:
            raise
        except FileNotFoundError:
            raise self.missing(name) from None
        except OSError:
            raise  # permission denied, I/O error: not damage (storage_errors says what it is)
        except Exception as e:
            raise self.damaged(name, f"cannot read: {e}") from None

    def _tensors(self, name: str, f: Any, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The tensors `keys` present in the open shard `f`, each verified against the shard's own checksum."""
        sums = json.loads((f.metadata() or {}).get("checksums", "{}"))
        out = {}
        for key in keys:
            if key not in f.keys():
                continue
            tensor = f.get_tensor(key)
            if key in sums and checksum_bytes(tensor) != sums[key]:
                raise self.damaged(name, f"checksum mismatch in {key}")
            out[key] = tensor
        return out

    def read_frames(self, name: str, checksum: str | None = None) -> dict[str, np.ndarray]:
        """embeddings, timestamps_s and (when stored) frame_tokens of a shard."""
        return self._open(name, lambda f: self._tensors(name, f, FRAME_TENSORS), checksum)

    def read_times(self, name: str, checksum: str | None = None) -> np.ndarray:
        """A shard's frame times alone (N f64 values: what `ask --library` picks frames by), never the rest."""
        return self._open(name, lambda f: self._tensors(name, f, ("timestamps_s",))["timestamps_s"], checksum)

    def read_vectors(self, name: str, checksum: str | None = None) -> dict[str, np.ndarray]:
        """What the index is built from: embeddings, timestamps_s and, when stored, segment_embeddings and
        segment_times_s -- never the frame tokens, the bulk of a shard."""
        return self._open(name, lambda f: self._tensors(name, f, VECTOR_TENSORS), checksum)

    def read_segments(self, name: str, checksum: str | None = None) -> tuple[list, np.ndarray]:
        """A shard's text segments: [(source, text)] and their (S, 2) start/end times."""
        def read(f):
            texts = json.loads((f.metadata() or {}).get("segments", "[]"))
            times = self._tensors(name, f, ("segment_times_s",)).get("segment_times_s", np.empty((0, 2)))
            return texts, times

        return self._open(name, read, checksum)

    def verify(self, name: str, checksum: str | None = None) -> tuple[dict[str, str], dict[str, list[int]]]:
        """Read and verify a whole shard (header, then every tensor); returns its metadata and tensor shapes."""
        def read(f):
            self._tensors(name, f, tuple(f.keys()))
            return f.metadata() or {}, {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

        return self._open(name, read, checksum)

    def collect_garbage(self, keep: set[str]) -> None:
        """Delete the shards neither the catalog nor the published index refers to."""
        for shard in self.folder.glob("*.safetensors"):
            if shard.name not in keep:
                shard.unlink(missing_ok=True)
