"""The search-index side of LibraryStore: publish the catalog's changes as index parts, check the published
manifest against the catalog, and search it (storage/published_index.py holds the files; this, the library's view).

A missing manifest is damage, not "nothing indexed yet", once the library has published an index (the catalog's
meta records it, or index files remain); the manifest entries of the videos a search names are checked against
their catalog rows (once per video and generation), so a manifest whose paths were changed or swapped never names
a hit."""

from __future__ import annotations

from typing import Any

import numpy as np

from videomini.config import TOP_K
from videomini.storage.errors import LibraryDamaged, LibraryError, guarded, repair_hint
from videomini.storage.hits import Hit, TextHit
from videomini.storage.index_parts import IndexSource
from videomini.storage.index_snapshot import Snapshot, sample, search_frames, search_text
from videomini.storage.manifest import INDEX_FILE_PATTERNS, KINDS, MANIFEST, compaction_due, entry_problems
from videomini.storage.shards import to_numpy, unit_rows
from videomini.storage.vector_index import stored_vectors


class StoreIndex:
    """LibraryStore's search index (a mixin: LibraryStore supplies root, catalog, shards, index and the writer
    lock)."""

    root: Any
    catalog: Any
    shards: Any
    index: Any
    _index_problems: list[str]
    _checked_generation: int | None
    _checked_videos: set[int]


    @guarded
    def manifest(self) -> dict | None:
        """The published index generation's manifest (sizes, factory, videos), None before the first build;
        LibraryDamaged when it is damaged, or missing although an index was published."""
        manifest = self.index.read_manifest()
        if manifest is None and self.index_was_published():
            raise self._manifest_missing()
        return manifest

    def index_was_published(self) -> bool:
        """True when this library has published a search index (the catalog records it, or index files remain):
        a missing manifest is then damage, not a library still being indexed for the first time."""
        if self.catalog.meta().get("index_published"):
            return True
        return bool(self.catalog.done_shards()) and any(
            True for pattern in INDEX_FILE_PATTERNS for _ in self.root.glob(pattern))

    def _manifest_missing(self) -> LibraryDamaged:
        n = len(self.catalog.done_shards())
        return LibraryDamaged(f"{self.root / MANIFEST}: index manifest missing although {n} videos are indexed; "
                              f"{repair_hint(self.root)} to rebuild it (or re-run `videomini index`)")

    @guarded
    def index_is_current(self, verify: bool = True) -> bool:
        """True when the published index covers exactly the catalog's done videos and their shards, and its files
        are whole (verify: checked against their checksums; else only present)."""
        manifest = self.index.read_manifest()
        indexed = {int(k): (v["shard"], v.get("version")) for k, v in (manifest or {"videos": {}})["videos"].items()}
        done = self.catalog.done_shards()
        self._index_problems = self.index.problems(deep=verify)
        return indexed == done and (manifest is not None or not done) and not self._index_problems

    @guarded
    def index_needs_update(self) -> bool:
        """True when the published index misses catalog changes, its files are missing or damaged, or its parts
        are due for compaction."""
        manifest = self.index.read_manifest()
        return not self.index_is_current() or (manifest is not None and compaction_due(manifest, self.index.flat_max))

    @guarded
    def update_index(self) -> dict:
        """Publish the catalog's changes since the published generation as a delta part (new and changed
        videos) and deleted rows (removed ones), compacting when a threshold says so; returns the manifest.
        Index files found missing or damaged (here, or by the last index_is_current) are not built on: the index
        is rebuilt whole from the shards."""
        self._require_writer()
        if self.index.problems(deep=False) or self._index_problems:
            return self.compact_index()
        manifest = self.index.update(self._index_source())
        self.catalog.set_meta_once({"index_published": 1})
        self._collect_garbage()
        return manifest

    @guarded
    def compact_index(self) -> dict:
        """Rebuild the index as one base part from every done shard (dead rows purged) and publish it."""
        self._require_writer()
        manifest = self.index.compact(self._index_source())
        self.catalog.set_meta_once({"index_published": 1})
        self._collect_garbage()
        return manifest

    def _index_source(self) -> IndexSource:
        meta = self.meta()
        dims = {"frames": int(meta.get("embed_dim", 0)), "text": int(meta.get("text_dim", 0))}
        rows = [dict(r) for r in self.catalog.done_rows()]
        sums = {r["shard"]: r["checksum"] for r in rows}
        return IndexSource(rows, lambda shard: self.shards.read_vectors(shard, sums.get(shard)), dims)

    @guarded
    def indexed_vectors(self, kind: str = "frames") -> tuple[np.ndarray, np.ndarray]:
        """The published snapshot's live rows of `kind` ("frames" or "text"): their ids records and vectors,
        sorted by (video id, frame or segment index) -- the same for any split into parts of the same content."""
        if kind not in KINDS:
            raise LibraryError(f"{self.root}: no index of {kind!r}; choose from {', '.join(KINDS)}")
        snap = self.snapshot()
        ids, vectors = [], []
        for live in (getattr(snap, kind) if snap else []):
            alive = live.alive()
            ids.append(np.asarray(live.part.ids)[alive])
            vectors.append(stored_vectors(live.part.index)[alive])
        if not ids:
            return np.empty(0), np.empty((0, 0), np.float32)
        ids, vectors = np.concatenate(ids), np.concatenate(vectors)
        order = np.lexsort((ids[ids.dtype.names[1]], ids["video_id"]))
        return ids[order], vectors[order]

    @guarded
    def snapshot(self) -> Snapshot | None:
        """The published index generation a search runs on (whole, whatever a writer publishes meanwhile)."""
        snap = self.index.snapshot()
        if snap is None and self.index_was_published():
            raise self._manifest_missing()
        return snap

    def _check_entries(self, snap: Snapshot, video_ids: set[int]) -> None:
        """The manifest entries of the videos a search is about to name, against their catalog rows (a primary-key
        lookup each, once per generation): LibraryDamaged when a path was changed or swapped."""
        if snap.generation != self._checked_generation:
            self._checked_generation, self._checked_videos = snap.generation, set()
        wanted = video_ids - self._checked_videos
        rows = {i: row for i in wanted if (row := self.catalog.row(i)) is not None and row["status"] == "done"}
        found = entry_problems({"videos": {str(i): snap.videos[i] for i in wanted}}, rows)
        if found:
            raise LibraryDamaged(f"{self.root / MANIFEST}: index manifest contradicts the catalog ({found[0]}); "
                                 f"{repair_hint(self.root)} to rebuild it")
        self._checked_videos |= wanted

    @guarded
    def search_vectors(self, query: Any, top_k: int = TOP_K, *, nprobe: int | None = None
                       ) -> list[Hit] | list[list[Hit]]:
        """Nearest frames by cosine similarity. query (D,) -> list[Hit]; (Q, D) -> one list[Hit] per query."""
        q = to_numpy(query, np.float32)
        single = q.ndim == 1
        q = q[None] if single else q
        snap = self.snapshot()
        dim = snap.manifest["embed_dim"] if snap and snap.n_vectors else int(self.meta().get("embed_dim", q.shape[-1]))
        if q.ndim != 2 or q.shape[1] != dim:
            raise LibraryError(f"{self.root}: query has shape {tuple(np.shape(query))}, the library holds "
                               f"{dim}-d embeddings")
        if top_k < 1:
            raise LibraryError(f"{self.root}: top_k must be >= 1, got {top_k}")
        if not np.isfinite(q).all():
            raise LibraryError(f"{self.root}: query has non-finite values")
        if snap is None or not snap.n_vectors:
            return [] if single else [[] for _ in q]
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.ascontiguousarray(q / np.where(norms == 0, 1, norms), dtype=np.float32)
        out = search_frames(snap, q, top_k, nprobe)
        self._check_entries(snap, {hit.video_id for hits in out for hit in hits})
        return out[0] if single else out

    @guarded
    def sample_vectors(self, kind: str = "frames", n: int = 1024, seed: int = 0) -> np.ndarray:
        """Up to `n` stored vectors of the published index ("frames" or "text"), drawn at random with a fixed
        seed: the background a query's similarities are calibrated against (`videomini.search`)."""
        snap = self.snapshot()
        return sample(snap, kind, n, seed) if snap is not None else np.zeros((0, 1), dtype=np.float32)

    @guarded
    def search_text(self, query: Any, top_k: int = TOP_K) -> list[TextHit]:
        """Speech and on-screen text segments nearest to a query's text embedding (E,), best first."""
        q = to_numpy(query, np.float32).reshape(-1)
        snap = self.snapshot()
        if snap is None or not snap.text_n_vectors:
            return []
        if q.shape[0] != snap.manifest["text_dim"] or not np.isfinite(q).all():
            raise LibraryError(f"{self.root}: text query has shape {q.shape}, the library holds "
                               f"{snap.manifest['text_dim']}-d text embeddings")
        sums = {v["shard"]: v.get("checksum") for v in snap.videos.values()}
        hits = search_text(snap, unit_rows(q[None], str(self.root)), top_k,
                           lambda shard: self.shards.read_segments(shard, sums.get(shard))[0])
        self._check_entries(snap, {hit.video_id for hit in hits})
        return hits
