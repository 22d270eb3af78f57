"""FAISS primitives of the library's vector index: which index for how many vectors, building, writing and
memory-mapped reading of one index file, and a filtered search. index_parts.py and published_index.py compose
them into the published index parts.

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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videomini.storage.files import FileDigest, atomic_write

FLAT_MAX_VECTORS = 20_000
IVF_MIN_NLIST, IVF_MAX_NLIST = 256, 4096
IVF_SCAN_FRACTION = 0.015  # nprobe ~ this fraction of nlist (but >= IVF_MIN_NPROBE)
IVF_MIN_NPROBE = 16
IVF_MIN_POINTS_PER_LIST = 39  # faiss warns below this many training points a list
IVF_TRAIN_PER_LIST = 64  # k-means training points per list
ADD_CHUNK = 65536  # vectors added to faiss at a time: no second full copy inside faiss
FEW_QUERIES = 8  # below this many queries a search runs single-threaded (see faiss_threads)
TRAIN_SEED = 0


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


def new_index(dim: int, spec: IndexSpec, quantizer: Any = None) -> Any:
    """An empty inner-product index for `spec`; with `quantizer` (a trained base's), an IVF that shares its
    coarse centroids and so needs no training."""
    import faiss

    if quantizer is not None:
        index = faiss.IndexIVFFlat(faiss.clone_index(quantizer), dim, quantizer.ntotal, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.index_factory(dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
    if spec.nprobe is not None and is_ivf(index):
        index.nprobe = spec.nprobe  # stored in the file: the probe count searches use unless told otherwise
    return index


def training_positions(index: Any, n_vectors: int, seed: int = TRAIN_SEED) -> np.ndarray | None:
    """Sorted row positions an untrained IVF trains on (a fixed-seed sample, IVF_TRAIN_PER_LIST a list); None
    when the index needs no training."""
    import faiss

    if index.is_trained:
        return None
    n_train = min(n_vectors, faiss.extract_index_ivf(index).nlist * IVF_TRAIN_PER_LIST)
    return np.sort(np.random.default_rng(seed).choice(n_vectors, n_train, replace=False))


def build_index(vectors: np.ndarray, spec: IndexSpec, seed: int = TRAIN_SEED) -> Any:
    """Build a FAISS inner-product index with `faiss.index_factory`; IVF trains on a fixed-seed sample."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = new_index(vectors.shape[1], spec)
    positions = training_positions(index, len(vectors), seed)
    if positions is not None:
        index.train(vectors[positions])
    for start in range(0, len(vectors), ADD_CHUNK):
        index.add(vectors[start : start + ADD_CHUNK])
    return index


def write_index(index: Any, path: Path) -> FileDigest:
    """Write an index file durably; returns its size and checksum (recorded in the manifest)."""
    import faiss

    def write(f: Any) -> None:
        writer = faiss.PyCallbackIOWriter(f.write)
        faiss.write_index(index, writer)
        del writer  # flushes its buffer into f

    return atomic_write(path, write)


def read_index(path: Path, ivf: bool) -> Any:
    """Open an index file memory-mapped (IVF lists and flat codes stay in the page cache, shared by every search
    process and not counted against its own memory). FileNotFoundError when the file is gone."""
    import faiss

    if not path.is_file():
        raise FileNotFoundError(path)
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC)


def stored_vectors(index: Any) -> np.ndarray:
    """Every vector an exact-code index holds (Flat, or IVF with Flat lists), in row order."""
    import faiss

    if not is_ivf(index):
        return index.reconstruct_n(0, index.ntotal)
    out = np.empty((index.ntotal, index.d), np.float32)
    lists = index.invlists
    for list_no in range(index.nlist):
        size = lists.list_size(list_no)
        if size:
            rows = faiss.rev_swig_ptr(lists.get_ids(list_no), size)
            codes = faiss.rev_swig_ptr(lists.get_codes(list_no), size * lists.code_size)
            out[rows] = np.frombuffer(codes, np.float32).reshape(size, index.d)
    return out


def vectors_at(index: Any, rows: np.ndarray) -> np.ndarray:
    """The stored vectors at `rows` of an exact-code index (an IVF index gets its id map the first time)."""
    import faiss

    if is_ivf(index):
        ivf = faiss.extract_index_ivf(index)
        if ivf.direct_map.no():
            ivf.make_direct_map()  # IVF lists reconstruct by id only through the map (8 bytes per vector)
    return np.asarray(index.reconstruct_batch(np.asarray(rows, dtype=np.int64)), dtype=np.float32)


def is_ivf(index: Any) -> bool:
    import faiss

    return isinstance(index, faiss.IndexIVF)


def search_index(index: Any, queries: np.ndarray, k: int, nprobe: int | None = None,
                 live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) of unit-length `queries` (Q, D); `live`: a little-endian bitmap of the rows that may be
    returned (faiss.IDSelectorBitmap), None when every row is live."""
    import faiss

    selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(live)) if live is not None else None
    if is_ivf(index):
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe or index.nprobe)
    else:
        params = faiss.SearchParameters(sel=selector)
    with faiss_threads(1 if len(queries) < FEW_QUERIES else None):
        return index.search(queries, k, params=params)


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
