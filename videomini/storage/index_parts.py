"""Writing index parts: the immutable FAISS files of one base or delta part, built from the done videos' shards.

    DIR/part-<n>.frames.faiss          a part's FAISS index over frame embeddings (inner product = cosine)
    DIR/part-<n>.frames.ids.npy        row -> (video_id, frame_idx, timestamp_s)
    DIR/part-<n>.text.faiss / .ids.npy the same for speech / on-screen text spans (video_id, segment_idx, start, end)

A base part holds the library as of its last compaction (IVF past FLAT_MAX_VECTORS); a delta part holds only the
new or changed videos' shards (Flat, or past FLAT_MAX_VECTORS an IVF sharing the base's trained centroids, so it
needs no training). Files are written under new names, durably; the manifest publishes them (manifest.py).
Libraries written before the rename name their parts `seg-<n>.*` ("segments"); they are read as they are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from videomini.storage.errors import LibraryDamaged, repair_hint
from videomini.storage.files import atomic_write, durability_point
from videomini.storage.index_snapshot import IDS_DTYPE, TEXT_IDS_DTYPE
from videomini.storage.manifest import KINDS, PART_PREFIX
from videomini.storage.shards import SHARDS
from videomini.storage.vector_index import (
    ADD_CHUNK,
    IndexSpec,
    index_spec_for,
    new_index,
    training_positions,
    write_index,
)


class IndexSource(NamedTuple):
    """What parts are built from: the done videos (catalog rows, id order) and a reader of their shards."""

    rows: list[dict]  # id, path, shard, n_frames, version, checksum
    read_vectors: Callable[[str], dict[str, np.ndarray]]  # shard name -> embeddings, timestamps_s, segment_*
    dims: dict[str, int]  # kind -> embedding dimension


@dataclass
class _PartIndexBuilder:
    """One kind (frames or text) of a part under construction."""

    kind: str
    index: Any
    spec: IndexSpec
    ids: list[np.ndarray] = field(default_factory=list)
    pending: list[np.ndarray] = field(default_factory=list)  # vectors waiting for a chunked add
    n_pending: int = 0

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.pending.append(vectors)
        self.ids.append(ids)
        self.n_pending += len(vectors)
        if self.n_pending >= ADD_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.index.add(np.ascontiguousarray(np.concatenate(self.pending), dtype=np.float32))
        self.pending, self.n_pending = [], 0


def _frame_ids(video_id: int, times: np.ndarray) -> np.ndarray:
    rec = np.empty(len(times), dtype=IDS_DTYPE)
    rec["video_id"], rec["frame_idx"], rec["timestamp_s"] = video_id, np.arange(len(times)), times
    return rec


def _text_ids(video_id: int, times: np.ndarray) -> np.ndarray:
    rec = np.empty(len(times), dtype=TEXT_IDS_DTYPE)
    rec["video_id"], rec["segment_idx"] = video_id, np.arange(len(times))
    rec["start_s"], rec["end_s"] = times[:, 0], times[:, 1]
    return rec


class PartWriter:
    """Builds one part's files in a library folder. `base_quantizer(record)` opens a base part's trained IVF
    centroids, which a large delta shares."""

    def __init__(self, root: Path, flat_max: int, base_quantizer: Callable[[dict], Any]) -> None:
        self.root, self.flat_max, self.base_quantizer = root, flat_max, base_quantizer

    def build(self, source: IndexSource, rows: list[dict], generation: int,
              base: dict | None) -> tuple[dict, dict[str, dict]]:
        """Write one part's files from `rows`' shards: a base (base None) sized by `index_spec_for`, or a delta
        sharing `base`'s trained centroids past `flat_max`. Returns its manifest record and its videos' entries."""
        part_id = f"{PART_PREFIX}{generation:06d}"
        n_frames = sum(r["n_frames"] for r in rows)
        # a small build reads each shard once; a large one (a compaction) reads them twice rather than hold them
        stored = {r["shard"]: source.read_vectors(r["shard"]) for r in rows} if n_frames <= ADD_CHUNK else None
        builders = {"frames": self._builder("frames", n_frames, source, base)}
        if builders["frames"] is not None and not builders["frames"].index.is_trained:
            self._train(builders["frames"], rows, source, stored)
        videos, text_vectors, text_ids = {}, [], []
        for r in rows:
            vectors = stored[r["shard"]] if stored is not None else source.read_vectors(r["shard"])
            emb, times = vectors["embeddings"], vectors["timestamps_s"]
            if len(times) != r["n_frames"] or (len(times) and emb.shape[1] != source.dims["frames"]):
                raise LibraryDamaged(f"{self.root / SHARDS / r['shard']}: shard does not match the catalog "
                                     f"({len(times)} frames, the catalog's {r['n_frames']}); {repair_hint(self.root)}")
            if len(times):
                builders["frames"].add(emb, _frame_ids(r["id"], times))
            n_text = len(vectors.get("segment_times_s", ()))
            if n_text:
                text_vectors.append(vectors["segment_embeddings"])
                text_ids.append(_text_ids(r["id"], vectors["segment_times_s"]))
            videos[str(r["id"])] = {"path": r["path"], "shard": r["shard"], "version": r["version"],
                                    "n_frames": r["n_frames"], "n_text": n_text, "part": part_id,
                                    "checksum": r.get("checksum")}
        if text_ids:
            text = np.concatenate(text_vectors)
            builders["text"] = self._builder("text", len(text), source, base)
            if not builders["text"].index.is_trained:
                builders["text"].index.train(text[training_positions(builders["text"].index, len(text))])
            builders["text"].add(text, np.concatenate(text_ids))
        record = {"id": part_id, "kind": "base" if base is None else "delta"}
        for kind in KINDS:
            record[kind] = self._write(part_id, builders.get(kind))
        durability_point("index_files_written")
        return record, videos

    def _builder(self, kind: str, n: int, source: IndexSource, base: dict | None) -> _PartIndexBuilder | None:
        if n == 0:
            return None
        spec = index_spec_for(n, self.flat_max)
        base_index = (base or {}).get(kind)
        if base_index is not None and spec.factory != "Flat" and base_index["factory"].startswith("IVF"):
            quantizer = self.base_quantizer(base_index)
            spec = IndexSpec(f"IVF{quantizer.ntotal},Flat", base_index["nprobe"])
            return _PartIndexBuilder(kind, new_index(source.dims[kind], spec, quantizer), spec)
        return _PartIndexBuilder(kind, new_index(source.dims[kind], spec), spec)

    @staticmethod
    def _train(builder: _PartIndexBuilder, rows: list[dict], source: IndexSource, stored: dict | None) -> None:
        """Train an IVF on the fixed-seed sample of the rows' frame embeddings (a first pass over the shards that
        keeps only the sampled rows, so a million frames never sit in memory twice)."""
        n = sum(r["n_frames"] for r in rows)
        positions = training_positions(builder.index, n)
        sample, start = [], 0
        for r in rows:
            end = start + r["n_frames"]
            lo, hi = np.searchsorted(positions, [start, end])
            if hi > lo:
                emb = (stored[r["shard"]] if stored is not None else source.read_vectors(r["shard"]))["embeddings"]
                sample.append(emb[positions[lo:hi] - start])
            start = end
        builder.index.train(np.ascontiguousarray(np.concatenate(sample), dtype=np.float32))

    def _write(self, part_id: str, builder: _PartIndexBuilder | None) -> dict | None:
        if builder is None:
            return None
        builder.flush()
        ids = np.concatenate(builder.ids)
        index_file, ids_file = f"{part_id}.{builder.kind}.faiss", f"{part_id}.{builder.kind}.ids.npy"
        files = {index_file: write_index(builder.index, self.root / index_file),
                 ids_file: atomic_write(self.root / ids_file, lambda f: np.save(f, ids, allow_pickle=False))}
        return {"factory": builder.spec.factory, "nprobe": builder.spec.nprobe, "n_vectors": int(len(ids)),
                "index_file": index_file, "ids_file": ids_file,
                "files": {name: digest._asdict() for name, digest in files.items()}}
