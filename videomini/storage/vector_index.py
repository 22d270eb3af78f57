"""The vector index: FAISS over every done video's frame embeddings (and text segments' embeddings), published as
numbered generations named by one small manifest -- the only file a reader trusts.

    DIR/index.json                manifest naming the current generation, its files, factory and videos
    DIR/index-<gen>.faiss         FAISS index over the frame embeddings (inner product = cosine)
    DIR/index_ids-<gen>.npy       row -> (video_id, frame_idx, timestamp_s)
    DIR/text_index-<gen>.faiss    FAISS index over the speech / on-screen text segments' MiniLM embeddings
    DIR/text_ids-<gen>.npy        row -> (video_id, segment_idx, start_s, end_s)

Index choice (bench/search.py on this 2-core machine: 768-d clustered vectors, one query at a time, recall@10
against exact search): exact "Flat" search costs ~0.15-0.25 ms per 1k vectors per query on one thread (~1.4 ms at
10k, ~45 ms at 200k on a busy machine), so up to FLAT_MAX_VECTORS (20k frames, ~5.5 hours at 1 fps) the library
keeps exact search (a few ms). Past it: "IVF{nlist},Flat", nlist = 2*sqrt(N) rounded to a power of two in
[256, 4096] (1M -> 2048; k-means on 64 points a list keeps the 1M build under a minute), nprobe = max(16, 1.5% of
nlist). Measured: 100k IVF512 nprobe 16 -> recall@10 0.98, p50 1.3 ms; 1M IVF2048 nprobe 31 -> recall@10 1.00,
p50 4.8 ms (nprobe 8: 0.97, 1.9 ms). HNSW32 was rejected: on these video-like vectors (long chains of
near-duplicate frames) its inner-product graph stayed inside a few videos (recall@10 < 0.35 at efSearch 128) and
it built slower than IVF trains. SQ8 codes quarter the index (768 B/frame instead of 3 KB) but cost 5-10 points of
recall@10; the index is small next to the shards (8 KB of frame tokens a frame), so it keeps exact codes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from videomini.storage.errors import LibraryError, one_line
from videomini.storage.files import atomic_write, durability_point
from videomini.storage.hits import Hit, TextHit

INDEX_FORMAT_VERSION = 1
MANIFEST = "index.json"
FLAT_MAX_VECTORS = 20_000
IVF_MIN_NLIST, IVF_MAX_NLIST = 256, 4096
IVF_SCAN_FRACTION = 0.015  # nprobe ~ this fraction of nlist (but >= IVF_MIN_NPROBE)
IVF_MIN_NPROBE = 16
IVF_MIN_POINTS_PER_LIST = 39  # faiss warns below this many training points a list
IVF_TRAIN_PER_LIST = 64  # k-means training points per list
ADD_CHUNK = 65536  # vectors added to faiss at a time: no second full copy inside faiss
FEW_QUERIES = 8  # below this many queries a search runs single-threaded (see faiss_threads)
OPEN_RETRIES = 5  # a writer may publish and delete between a reader's manifest read and file open
ERROR_DETAIL_CHARS = 200

IDS_DTYPE = np.dtype([("video_id", "<i8"), ("frame_idx", "<i8"), ("timestamp_s", "<f8")])
TEXT_IDS_DTYPE = np.dtype([("video_id", "<i8"), ("segment_idx", "<i8"), ("start_s", "<f8"), ("end_s", "<f8")])
GENERATION_FILES = ("index-*.faiss", "index_ids-*.npy", "text_index-*.faiss", "text_ids-*.npy")


@dataclass(frozen=True)
class IndexSpec:
    """How to build the FAISS index for a library of a given size."""

    factory: str
    nprobe: int | None = None


def index_spec_for(n_vectors: int, flat_max: int = FLAT_MAX_VECTORS) -> IndexSpec:
    """Exact search while small; IVF past `flat_max` (see the module docstring for the measurements)."""
    if n_vectors <= flat_max:
        return IndexSpec("Flat")
    nlist = 2 ** round(math.log2(2 * math.sqrt(n_vectors)))
    nlist = min(max(IVF_MIN_NLIST, min(IVF_MAX_NLIST, nlist)), max(1, n_vectors // IVF_MIN_POINTS_PER_LIST))
    nprobe = min(nlist, max(IVF_MIN_NPROBE, round(nlist * IVF_SCAN_FRACTION)))
    return IndexSpec(f"IVF{nlist},Flat", nprobe=nprobe)


def build_index(vectors: np.ndarray, spec: IndexSpec, seed: int = 0) -> Any:
    """Build a FAISS inner-product index with `faiss.index_factory`; IVF trains on a fixed-seed sample."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.index_factory(vectors.shape[1], spec.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        n_train = min(len(vectors), faiss.extract_index_ivf(index).nlist * IVF_TRAIN_PER_LIST)
        sample = np.random.default_rng(seed).choice(len(vectors), n_train, replace=False)
        index.train(vectors[np.sort(sample)])
    for start in range(0, len(vectors), ADD_CHUNK):
        index.add(vectors[start : start + ADD_CHUNK])
    set_nprobe(index, spec.nprobe)
    return index


def set_nprobe(index: Any, nprobe: int | None) -> None:
    """Apply the IVF probe count; a no-op for exact indexes."""
    import faiss

    if nprobe is not None and isinstance(index, faiss.IndexIVF):
        index.nprobe = nprobe
    elif nprobe is not None:
        with contextlib.suppress(RuntimeError):  # not an IVF index (or a wrapper without one)
            faiss.extract_index_ivf(index).nprobe = nprobe


@contextlib.contextmanager
def faiss_threads(n: int | None):
    """Run faiss with `n` OpenMP threads inside the block. One query cannot be split usefully, and on a busy
    machine OpenMP's idle-waiting threads made a 10k exact search 16 ms instead of 1.4 ms (bench/search.py)."""
    if n is None:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class Snapshot(NamedTuple):
    """One published generation, as a reader holds it: whatever the writer does next, it stays whole."""

    generation: int
    index: Any
    ids: np.ndarray  # IDS_DTYPE
    videos: dict[int, dict]
    manifest: dict
    text_index: Any = None
    text_ids: np.ndarray | None = None  # TEXT_IDS_DTYPE
    segments: dict | None = None  # video_id -> [(source, text)], filled as searches need them


class IndexContent(NamedTuple):
    """What a generation is built from, gathered from the done videos' shards."""

    vectors: np.ndarray  # fp32 (N, D)
    ids: np.ndarray  # IDS_DTYPE (N,)
    text_vectors: np.ndarray  # fp32 (S, E)
    text_ids: np.ndarray  # TEXT_IDS_DTYPE (S,)
    videos: dict[str, dict]  # video id -> path, shard, n_frames


class VectorIndex:
    """The index files of a library folder: build and publish generations (writer), open and search (readers)."""

    def __init__(self, root: Path, flat_max: int = FLAT_MAX_VECTORS) -> None:
        self.root = root
        self.flat_max = flat_max
        self._snapshot: Snapshot | None = None

    def read_manifest(self) -> dict | None:
        """The published generation's manifest (sizes, factory, videos), None before the first build."""
        try:
            return json.loads((self.root / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LibraryError(f"{self.root / MANIFEST}: unreadable index manifest: {e}") from None

    # ------------------------------------------------------------------ writing

    def publish(self, content: IndexContent, started: float) -> dict:
        """Build the indexes of `content`, write them under a new generation's names and publish its manifest."""
        import faiss

        spec = index_spec_for(len(content.ids), self.flat_max)
        text_spec = index_spec_for(len(content.text_ids), self.flat_max)
        previous = self.read_manifest()
        generation = (previous["generation"] if previous else 0) + 1
        files = {}
        for kind, prefix, vectors, ids, kind_spec in (
                ("", "index", content.vectors, content.ids, spec),
                ("text_", "text_index", content.text_vectors, content.text_ids, text_spec)):
            index = build_index(vectors, kind_spec) if len(ids) else None
            index_file = f"{prefix}-{generation:06d}.faiss" if index is not None else None
            ids_file = f"{kind or 'index_'}ids-{generation:06d}.npy" if kind == "" or index is not None else None
            if index is not None:
                atomic_write(self.root / index_file, lambda tmp: faiss.write_index(index, tmp), by_name=True)
            if ids_file:
                atomic_write(self.root / ids_file, lambda f: np.save(f, ids, allow_pickle=False))
            files[f"{kind}index_file"], files[f"{kind}ids_file"] = index_file, ids_file
        durability_point("index_files_written")
        manifest = {
            "format_version": INDEX_FORMAT_VERSION, "generation": generation, **files,
            "factory": spec.factory, "nprobe": spec.nprobe, "n_vectors": len(content.ids),
            "embed_dim": int(content.vectors.shape[1]), "built_at": time.time(),
            "text_factory": text_spec.factory, "text_nprobe": text_spec.nprobe,
            "text_n_vectors": int(len(content.text_ids)), "text_dim": int(content.text_vectors.shape[1]),
            "build_s": round(time.perf_counter() - started, 3), "videos": content.videos,
        }
        atomic_write(self.root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        durability_point("manifest_published")
        return manifest

    def collect_garbage(self) -> None:
        """Delete index files of generations older than the previous one (a reader may still hold that one)."""
        manifest = self.read_manifest()
        generation = manifest["generation"] if manifest else 0
        for pattern in GENERATION_FILES:
            for f in self.root.glob(pattern):
                gen = f.name.split("-")[-1].split(".")[0]
                if not gen.isdigit() or int(gen) not in (generation, generation - 1):
                    f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> Snapshot | None:
        """The published generation (cached until the manifest names a newer one)."""
        for _ in range(OPEN_RETRIES):
            manifest = self.read_manifest()
            if manifest is None:
                return None
            if self._snapshot is not None and self._snapshot.generation == manifest["generation"]:
                return self._snapshot
            try:
                opened = self._open_files(manifest)
            except FileNotFoundError:
                continue  # published and deleted by a writer since we read the manifest: read it again
            self._snapshot = Snapshot(manifest["generation"], opened[0], opened[1],
                                      {int(k): v for k, v in manifest["videos"].items()}, manifest, opened[2],
                                      opened[3], {})
            return self._snapshot
        raise LibraryError(f"{self.root}: index changed repeatedly while opening it; retry")

    def _open_files(self, manifest: dict) -> tuple:
        import faiss

        def read_index(name: str) -> Any:
            try:
                return faiss.read_index(str(self.root / name))
            except RuntimeError as e:
                if not (self.root / name).exists() or "No such file" in str(e):
                    raise FileNotFoundError(name) from None
                raise LibraryError(f"{self.root}: cannot read index generation {manifest['generation']}: "
                                   f"{one_line(str(e), ERROR_DETAIL_CHARS)}") from None

        ids = np.load(self.root / manifest["ids_file"], allow_pickle=False)
        index = read_index(manifest["index_file"]) if manifest["index_file"] else None
        if len(ids) != manifest["n_vectors"] or (index is not None and index.ntotal != len(ids)):
            raise LibraryError(f"{self.root}: index generation {manifest['generation']} does not match its ids")
        set_nprobe(index, manifest["nprobe"])
        text_index = text_ids = None
        if manifest.get("text_index_file"):
            text_ids = np.load(self.root / manifest["text_ids_file"], allow_pickle=False)
            text_index = read_index(manifest["text_index_file"])
            if text_index.ntotal != len(text_ids):
                raise LibraryError(f"{self.root}: text index generation {manifest['generation']} does not "
                                   "match its ids")
            set_nprobe(text_index, manifest["text_nprobe"])
        return index, ids, text_index, text_ids

    def search(self, snap: Snapshot, queries: np.ndarray, top_k: int, nprobe: int | None = None) -> list[list[Hit]]:
        """Nearest frames of unit-length `queries` (Q, D) in one snapshot, best first."""
        if nprobe is not None:  # per-call override of the IVF probe count (ignored by exact indexes)
            set_nprobe(snap.index, nprobe)
        try:
            with faiss_threads(1 if len(queries) < FEW_QUERIES else None):
                scores, rows = snap.index.search(queries, min(top_k, snap.index.ntotal))
        finally:
            if nprobe is not None:
                set_nprobe(snap.index, snap.manifest["nprobe"])
        out = []
        for score_row, idx_row in zip(scores, rows):
            hits = []
            for score, i in zip(score_row, idx_row):
                if i < 0:
                    continue
                rec = snap.ids[i]
                video_id = int(rec["video_id"])
                hits.append(Hit(snap.videos[video_id]["path"], float(rec["timestamp_s"]), int(rec["frame_idx"]),
                                float(score), video_id))
            out.append(hits)
        return out

    @staticmethod
    def sample(snap: Snapshot, kind: str, n: int, seed: int = 0) -> np.ndarray:
        """Up to `n` vectors of the snapshot's "frames" or "text" index, drawn at random with a fixed seed."""
        import faiss

        index = snap.index if kind == "frames" else snap.text_index
        if index is None or index.ntotal == 0:
            return np.zeros((0, 1), dtype=np.float32)
        rows = np.sort(np.random.default_rng(seed).choice(index.ntotal, size=min(n, index.ntotal), replace=False))
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and ivf.direct_map.no():
            ivf.make_direct_map()  # IVF lists reconstruct by id only through the map (8 bytes per vector)
        return np.asarray(index.reconstruct_batch(rows.astype(np.int64)), dtype=np.float32)

    def search_text(self, snap: Snapshot, query: np.ndarray, top_k: int,
                    segment_texts: Callable[[str], list]) -> list[TextHit]:
        """Text segments nearest a unit-length query (1, E); `segment_texts(shard)` reads a shard's texts."""
        with faiss_threads(1):
            scores, rows = snap.text_index.search(query, min(top_k, snap.text_index.ntotal))
        hits = []
        for score, i in zip(scores[0], rows[0]):
            if i < 0:
                continue
            rec = snap.text_ids[i]
            video_id = int(rec["video_id"])
            if video_id not in snap.segments:  # read once per snapshot, from the shard's metadata
                snap.segments[video_id] = [tuple(x) for x in segment_texts(snap.videos[video_id]["shard"])]
            source, text = snap.segments[video_id][int(rec["segment_idx"])]
            hits.append(TextHit(snap.videos[video_id]["path"], float(rec["start_s"]), float(rec["end_s"]), source,
                                text, float(score), video_id))
        return hits
