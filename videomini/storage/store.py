"""LibraryStore: a library folder on disk, composed of its catalog, shards, vector index and writer lock.

    DIR/catalog.sqlite     videos and meta (storage/catalog.py)
    DIR/shards/            one safetensors file per indexed video (storage/shards.py)
    DIR/index.json, DIR/seg-*   the published index: immutable FAISS segments (storage/segments.py)
    DIR/lock               the writer lock (storage/lock.py)

Why it survives kill -9 at any point: every file is written to a `.tmp-*` name in its final folder, fsynced,
`os.replace`d and the folder fsynced, so a file is either the old or the new one; a video becomes `done` in the
catalog only after its shard is durable; index segments are written under new names and published by replacing
one small manifest, so a reader never pairs an index with ids of another build (storage/segments.py).
On opening for writing, stale temp files are removed and `running` videos are finished from their durable shard
or sent back to `pending`. Readers (search) never take the writer lock: SQLite WAL and the manifest give them a
consistent snapshot while an indexer runs.

Integrity: the catalog records each shard's header checksum and the manifest each index file's; readers verify what
they open (storage/integrity.py checks and repairs a whole library). Every OS or SQLite error leaves a public method
as a one-line LibraryError naming the library (storage/errors.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from videomini.storage.catalog import CATALOG, FORMAT_VERSION, Catalog, PlanItem, absolute, fingerprint
from videomini.storage.errors import LibraryDamaged, LibraryError, guarded, repair_hint, storage_errors
from videomini.storage.files import durability_point, remove_temp_files
from videomini.storage.hits import Hit, TextHit, moments
from videomini.storage.integrity import check_store, rebuild_catalog, repair_store, shard_problems
from videomini.storage.lock import WriterLock
from videomini.storage.shards import (SHARDS, ShardContent, ShardStore, VideoFrames, frame_tensors, segment_tensors,
                                      shard_name, to_numpy, unit_rows)
from videomini.storage.segments import KINDS, IndexSource, SegmentedIndex, Snapshot, compaction_due
from videomini.storage.vector_index import FLAT_MAX_VECTORS, stored_vectors


class LibraryStore:
    """A video library folder. Readers (search, stats, load_frames) need no lock; writers (create, mark_*,
    write_shard, remove, update_index, compact_index) hold the folder's writer lock for the store's lifetime."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False, writer: bool = False,
                 wait_s: float = 0.0, flat_max: int = FLAT_MAX_VECTORS, repair: bool = False) -> None:
        """repair: a writer that finds the catalog damaged rebuilds it from the shards instead of refusing."""
        self.root = absolute(root)
        self.shards = ShardStore(self.root / SHARDS)
        self.index = SegmentedIndex(self.root, flat_max)
        self.writer = writer or create
        self._lock: WriterLock | None = None
        self.catalog: Catalog | None = None
        self.catalog_rebuilt: dict | None = None  # what a repairing writer rebuilt the catalog from
        self._index_problems: list[str] = []  # what the last index_is_current found wrong with the index files
        self.recovered: list[str] = []  # done videos a writer found without their shard (sent back to pending)
        has_catalog = (self.root / CATALOG).is_file()
        if not create and not has_catalog and not (repair and self._has_shards()):
            if self._has_shards():
                raise LibraryDamaged(f"{self.root}: catalog missing ({CATALOG}) while the library holds shards; "
                                     f"{repair_hint(self.root)} to rebuild it from them")
            raise LibraryError(f"{self.root}: not a videomini library (no {CATALOG}); create it by indexing into it")
        if create:
            try:
                self.shards.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LibraryError(f"{self.root}: cannot create library folder: {e.strerror or e}") from None
        try:
            with storage_errors(self.root):
                if self.writer:
                    self._lock = WriterLock(self.root, wait_s)
                self._open_catalog(repair)
                if self.writer:
                    self._recover()
        except BaseException:
            self.close()
            raise

    def _has_shards(self) -> bool:
        return self.shards.folder.is_dir() and any(self.shards.folder.glob("*.safetensors"))

    def _open_catalog(self, repair: bool) -> None:
        """Open the catalog; a writer refuses (or, repairing, rebuilds from the shards) a damaged or lost one --
        opening a fresh catalog beside existing shards would otherwise let garbage collection delete them."""
        path = self.root / CATALOG
        try:
            lost = self.writer and self._has_shards() and (not path.is_file() or path.stat().st_size == 0)
            if lost:
                raise LibraryDamaged(f"{path}: catalog missing or empty while the library holds shards; "
                                     f"{repair_hint(self.root)} to rebuild it from them")
            with storage_errors(self.root):
                self.catalog = Catalog(path, self.writer)
                if self.writer and (problems := self.catalog.integrity_problems(quick=True)):
                    raise LibraryDamaged(f"{path}: catalog damaged ({problems[0]}); {repair_hint(self.root)} to "
                                         "rebuild it from the shards")
        except LibraryDamaged:
            if not (self.writer and repair):
                raise
            if self.catalog is not None:
                self.catalog.close()
                self.catalog = None
            self.catalog_rebuilt = rebuild_catalog(self.root, self.shards)
            self.catalog = Catalog(path, True)

    @classmethod
    def create(cls, root: str | os.PathLike, **kwargs: Any) -> "LibraryStore":
        """Create (or open, if it exists) a library for writing."""
        return cls(root, create=True, **kwargs)

    @classmethod
    def open(cls, root: str | os.PathLike, *, writer: bool = False, wait_s: float = 0.0,
             **kwargs: Any) -> "LibraryStore":
        return cls(root, writer=writer, wait_s=wait_s, **kwargs)

    @classmethod
    def check(cls, root: str | os.PathLike) -> list[str]:
        """Everything wrong with the library at `root` (storage/integrity.py), one line each naming the file;
        [] when it is whole. Only reads: works on a read-only library."""
        root = absolute(root)
        try:
            store = cls(root)
        except LibraryDamaged as e:  # no usable catalog: what the shards say on their own
            return [str(e)] + shard_problems(ShardStore(root / SHARDS))
        with store:
            return check_store(store)

    @classmethod
    def repair(cls, root: str | os.PathLike, wait_s: float = 0.0) -> list[str]:
        """Fix what `check` finds (storage/integrity.py); returns what was done, one line each."""
        with cls(root, writer=True, wait_s=wait_s, repair=True) as store:
            return repair_store(store)

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "LibraryStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LibraryStore({str(self.root)!r}, writer={self.writer})"

    @property
    def shards_dir(self) -> Path:
        return self.shards.folder

    def _require_writer(self) -> None:
        if self._lock is None:
            raise LibraryError(f"{self.root}: library is open read-only; open it with writer=True to change it")

    def _recover(self) -> None:
        """After a crash: drop temp files, finish `running` videos whose shard is durable, reset the others,
        and delete files no catalog row or manifest refers to."""
        remove_temp_files(self.root, self.shards.folder)
        for row in self.catalog.db.execute("SELECT * FROM videos WHERE status = 'running'").fetchall():
            try:
                self._finish(row)
            except LibraryError:
                self.catalog.mark_pending(row["id"])
        for video_id, (shard, _) in self.catalog.done_shards().items():
            if not self.shards.exists(shard):
                self.catalog.mark_pending(video_id, "shard file missing")
                self.recovered.append(f"{self.shards.folder / shard}: shard missing "
                                      f"({self.catalog.video(video_id)['path']})")
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        manifest = self.index.read_manifest()
        keep = self.catalog.referenced_shards()
        if manifest:
            keep |= {v["shard"] for v in manifest["videos"].values()}
        self.shards.collect_garbage(keep)
        self.index.collect_garbage()

    # ------------------------------------------------------------------ catalog

    @guarded
    def meta(self) -> dict[str, str]:
        return self.catalog.meta()

    @guarded
    def video(self, key: int | str | os.PathLike) -> dict | None:
        """The catalog row of a video, by id or path, as a dict (None if absent)."""
        return self.catalog.video(key)

    @guarded
    def videos(self, status: str | None = None) -> list[dict]:
        return self.catalog.videos(status)

    @guarded
    def indexed_model_id(self) -> str:
        """The model the library was indexed with (one model per library); LibraryError when none or several."""
        ids = {v["model_id"] for v in self.videos("done") if v.get("model_id")}
        if not ids:
            raise LibraryError(f"{self.root}: no videos indexed with a vision model yet (run `videomini index ... "
                               f"--library {self.root}`)")
        if len(ids) > 1:
            raise LibraryError(f"{self.root}: indexed with several models ({', '.join(sorted(ids))}); re-index "
                               "with one")
        return ids.pop()

    @guarded
    def plan(self, paths: Iterable[str | os.PathLike], *, retry_failed: bool = False,
             model_id: str | None = None, signals: Iterable[str] = ()) -> list[PlanItem]:
        """What an indexer must do for each file: new, changed (fingerprint or model differs, or `signals` asks
        for a signal the video was not indexed with), unchanged (done), resume (pending/running), retry_failed
        (failed, asked to retry) or skip_failed (failed, not asked). model_id None: this run adds no frames
        (signals only), so the stored model does not matter."""
        return self.catalog.plan(paths, retry_failed=retry_failed, model_id=model_id, signals=signals)

    @guarded
    def mark_running(self, path: str | os.PathLike, fp: str | None = None, *, model_id: str | None = None,
                     fps: float | None = None) -> int:
        """Start (or restart) a video; returns its id. A changed file keeps its id and gets a new shard name;
        its old shard stays until the next index build no longer refers to it."""
        self._require_writer()
        path = absolute(path)
        return self.catalog.mark_running(path, fp or fingerprint(path), model_id, fps)

    @guarded
    def write_shard(self, video_id: int, frame_tokens: Any, embeddings: Any, timestamps_s: Any, *,
                    duration_s: float | None = None, model_id: str | None = None, fps: float | None = None,
                    timings: dict | None = None, signals: Iterable[str] = (), segments: list[dict] | None = None,
                    segment_embeddings: Any = None, text_model: str | None = None) -> str:
        """Write a running video's shard durably (temp + fsync + rename); returns the shard's file name.
        `info` is stored in the shard too, so a crash before `mark_done` loses nothing.

        `signals` names the signals extracted for this video (even when they found nothing); `segments` are
        their timestamped texts ({"source", "text", "start_s", "end_s"}) with one `segment_embeddings` row each.
        A shard may hold no frames when it holds signals (a library indexed without a vision model)."""
        self._require_writer()
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "running":
            state = "unknown" if row is None else row["status"]
            raise LibraryError(f"{self.root}: video {video_id} is {state}, not running; call mark_running first")
        label = row["path"]
        signals = sorted(set(signals))
        tensors = frame_tensors(label, frame_tokens, embeddings, timestamps_s, signals)
        if len(tensors["timestamps_s"]):
            tokens = tensors["frame_tokens"]
            self._check_dims(label, tokens.shape[1], tokens.shape[2], tensors["embeddings"].shape[1])
        info = {"duration_s": duration_s, "model_id": model_id, "fps": fps, "timings": timings, "signals": signals,
                "text_model": text_model or ""}
        metadata = {"format_version": str(FORMAT_VERSION), "video_id": str(video_id), "path": label,
                    "fingerprint": row["fingerprint"], "info": json.dumps(info)}
        segments = list(segments or [])
        if segments or segment_embeddings is not None:
            text_tensors, metadata["segments"] = segment_tensors(label, segments, segment_embeddings, signals)
            tensors.update(text_tensors)
            if len(segments):
                self._check_text_dims(label, text_tensors["segment_embeddings"].shape[1], text_model)
        name = shard_name(video_id, row["fingerprint"])
        self.shards.write(name, ShardContent(tensors, metadata))
        return name

    @guarded
    def record_models(self, **models: str) -> None:
        """Record in the library's meta the models a run used that no shard records (`asr_model`: the speech
        recogniser), replacing an earlier run's."""
        self._require_writer()
        self.catalog.set_meta(models)

    def _check_text_dims(self, label: str, dim: int, text_model: str | None) -> None:
        have = self.meta()
        if "text_dim" in have and (int(have["text_dim"]) != dim or have.get("text_model") != (text_model or "")):
            raise LibraryError(f"{label}: text embeddings from {text_model or 'an unnamed model'} ({dim}-d), but this "
                               f"library holds {have.get('text_model') or 'another model'}'s ({have['text_dim']}-d)")
        if "text_dim" not in have:
            self.catalog.set_meta_once({"text_dim": dim, "text_model": text_model or ""})

    def _check_dims(self, label: str, tokens_per_frame: int, token_dim: int, embed_dim: int) -> None:
        want = {"tokens_per_frame": tokens_per_frame, "token_dim": token_dim, "embed_dim": embed_dim}
        have = self.meta()
        for key, value in want.items():
            if key in have and int(have[key]) != value:
                raise LibraryError(f"{label}: {key} is {value}, but this library holds {key} {have[key]} "
                                   f"(use one model per library)")
        missing = {k: v for k, v in want.items() if k not in have}
        if missing:
            self.catalog.set_meta_once(missing)

    @guarded
    def mark_done(self, video_id: int) -> None:
        """Record a running video as done; its shard must already be durable (written by write_shard)."""
        self._require_writer()
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "running":
            state = "unknown" if row is None else row["status"]
            raise LibraryError(f"{self.root}: video {video_id} is {state}, not running")
        self._finish(row)
        durability_point("done_committed")

    def _finish(self, row: Any) -> None:
        """Mark a running video done from its durable shard, verified whole (LibraryError when the shard is
        missing, damaged or stale); the catalog records its header checksum."""
        name = shard_name(row["id"], row["fingerprint"])
        if not self.shards.exists(name):
            raise LibraryError(f"{self.shards.folder / name}: shard missing or unreadable (never written)")
        metadata, shapes = self.shards.verify(name)
        if metadata.get("fingerprint") != row["fingerprint"] or metadata.get("video_id") != str(row["id"]):
            raise LibraryError(f"{self.shards.folder / name}: shard belongs to another version of {row['path']}")
        self.catalog.mark_done(row["id"], name, shapes["timestamps_s"][0], json.loads(metadata.get("info", "{}")),
                               self.shards.header_checksum(name))

    @guarded
    def mark_failed(self, path: str | os.PathLike, error: str, fp: str | None = None) -> int:
        """Record why a file could not be indexed (one line); the batch goes on. Returns the video id."""
        self._require_writer()
        path = absolute(path)
        if fp is None:
            try:
                fp = fingerprint(path)
            except LibraryError:
                fp = ""
        return self.catalog.mark_failed(path, error, fp)

    @guarded
    def remove(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """Remove videos (any status) from the catalog, rebuild the index, delete their shards.
        Every path must be in the library; nothing is removed otherwise."""
        self._require_writer()
        wanted = [str(absolute(p)) for p in paths]
        ids = []
        for path in wanted:
            row = self.catalog.row_by_path(path)
            if row is None:
                raise LibraryError(f"{path}: not in library {self.root}")
            ids.append(row["id"])
        self.catalog.delete(ids)
        self.update_index()  # records their rows as deleted; also deletes the shards nothing refers to any more
        return wanted

    @guarded
    def stats(self) -> dict:
        """Videos per status, frames, hours, bytes on disk, failures and index state."""
        catalog = self.catalog.stats()
        manifest = self.index.read_manifest()
        return {
            "library": str(self.root),
            "videos": catalog["videos"],
            "status": catalog["status"],
            "frames": catalog["frames"],
            "hours": catalog["seconds"] / 3600.0,
            "bytes_on_disk": sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file()),
            "failures": catalog["failures"],
            "index": None if manifest is None else {
                k: manifest.get(k) for k in ("generation", "factory", "nprobe", "n_vectors", "text_n_vectors",
                                             "n_segments", "n_deleted", "text_n_deleted")},
            "signals": catalog["signals"],
            "index_current": self.index_is_current(verify=False),
            "problems": self.quick_problems(),
        }

    def quick_problems(self) -> list[str]:
        """What a glance finds wrong (no file read): done videos whose shard is missing, index files missing.
        `videomini library DIR --check` reads everything (storage/integrity.py)."""
        missing = [f"{self.shards.folder / shard}: shard missing ({self.catalog.video(video_id)['path']})"
                   for video_id, (shard, _) in self.catalog.done_shards().items() if not self.shards.exists(shard)]
        return missing + self.index.problems(deep=False)

    # ------------------------------------------------------------------ shards

    @guarded
    def load_frames(self, video_id: int) -> VideoFrames:
        """The stored frame tokens, embeddings and timestamps of a done video."""
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        t = self.shards.read_frames(row["shard"], _checksum(row))
        return VideoFrames(video_id, row["path"], t["frame_tokens"], t["embeddings"], t["timestamps_s"])

    @guarded
    def segments(self, video_id: int) -> list[dict]:
        """A done video's speech and on-screen text: [{"source", "text", "start_s", "end_s"}] in time order."""
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        texts, times = self.shards.read_segments(row["shard"], _checksum(row))
        return [{"source": source, "text": text, "start_s": float(a), "end_s": float(b)}
                for (source, text), (a, b) in zip(texts, times)]

    # ------------------------------------------------------------------ index

    @guarded
    def manifest(self) -> dict | None:
        """The published index generation's manifest (sizes, factory, videos), None before the first build."""
        return self.index.read_manifest()

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
        """True when the published index misses catalog changes, its files are missing or damaged, or its segments
        are due for compaction."""
        manifest = self.index.read_manifest()
        return not self.index_is_current() or (manifest is not None and compaction_due(manifest, self.index.flat_max))

    @guarded
    def update_index(self) -> dict:
        """Publish the catalog's changes since the published generation as a delta segment (new and changed
        videos) and deleted rows (removed ones), compacting when a threshold says so; returns the manifest.
        Index files found missing or damaged (here, or by the last index_is_current) are not built on: the index
        is rebuilt whole from the shards."""
        self._require_writer()
        if self.index.problems(deep=False) or self._index_problems:
            return self.compact_index()
        manifest = self.index.update(self._index_source())
        self._collect_garbage()
        return manifest

    @guarded
    def compact_index(self) -> dict:
        """Rebuild the index as one base segment from every done shard (dead rows purged) and publish it."""
        self._require_writer()
        manifest = self.index.compact(self._index_source())
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
        sorted by (video id, frame or segment index) -- the same for any segmentation of the same content."""
        if kind not in KINDS:
            raise LibraryError(f"{self.root}: no index of {kind!r}; choose from {', '.join(KINDS)}")
        snap = self.snapshot()
        ids, vectors = [], []
        for live in (getattr(snap, kind) if snap else []):
            alive = np.ones(len(live.part.ids), bool) if live.bitmap is None else np.unpackbits(
                live.bitmap, bitorder="little")[: len(live.part.ids)].astype(bool)
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
        return self.index.snapshot()

    @guarded
    def search_vectors(self, query: Any, top_k: int = 10, *, nprobe: int | None = None
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
        out = self.index.search(snap, q, top_k, nprobe)
        return out[0] if single else out

    @guarded
    def sample_vectors(self, kind: str = "frames", n: int = 1024, seed: int = 0) -> np.ndarray:
        """Up to `n` stored vectors of the published index ("frames" or "text"), drawn at random with a fixed
        seed: the background a query's similarities are calibrated against (`videomini.search`)."""
        snap = self.snapshot()
        return self.index.sample(snap, kind, n, seed) if snap is not None else np.zeros((0, 1), dtype=np.float32)

    @guarded
    def search_text(self, query: Any, top_k: int = 10) -> list[TextHit]:
        """Speech and on-screen text segments nearest to a query's text embedding (E,), best first."""
        q = to_numpy(query, np.float32).reshape(-1)
        snap = self.snapshot()
        if snap is None or not snap.text_n_vectors:
            return []
        if q.shape[0] != snap.manifest["text_dim"] or not np.isfinite(q).all():
            raise LibraryError(f"{self.root}: text query has shape {q.shape}, the library holds "
                               f"{snap.manifest['text_dim']}-d text embeddings")
        sums = {v["shard"]: v.get("checksum") for v in snap.videos.values()}
        return self.index.search_text(snap, unit_rows(q[None], str(self.root)), top_k,
                                      lambda shard: self.shards.read_segments(shard, sums.get(shard))[0])

    moments = staticmethod(moments)


def _checksum(row: Any) -> str | None:
    """A catalog row's shard checksum (None in a library written before shards were checksummed)."""
    return row["checksum"] if "checksum" in row.keys() else None
