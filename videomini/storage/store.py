"""LibraryStore: a library folder on disk, composed of its catalog, shards, vector index and writer lock.

    DIR/catalog.sqlite     videos and meta (storage/catalog.py)
    DIR/shards/            one safetensors file per indexed video (storage/shards.py)
    DIR/index.json + index files     the published FAISS generation (storage/vector_index.py)
    DIR/lock               the writer lock (storage/lock.py)

Why it survives kill -9 at any point: every file is written to a `.tmp-*` name in its final folder, fsynced,
`os.replace`d and the folder fsynced, so a file is either the old or the new one; a video becomes `done` in the
catalog only after its shard is durable; the index and its row ids are written under generation-numbered names
and published by replacing one small manifest, so a reader never pairs an index with ids of another build.
On opening for writing, stale temp files are removed and `running` videos are finished from their durable shard
or sent back to `pending`. Readers (search) never take the writer lock: SQLite WAL and the manifest give them a
consistent snapshot while an indexer runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from videomini.storage.catalog import CATALOG, FORMAT_VERSION, Catalog, PlanItem, absolute, fingerprint
from videomini.storage.errors import LibraryError
from videomini.storage.files import durability_point, remove_temp_files
from videomini.storage.hits import Hit, TextHit, moments
from videomini.storage.lock import WriterLock
from videomini.storage.shards import (SHARDS, ShardContent, ShardStore, VideoFrames, frame_tensors, segment_tensors,
                                      shard_name, to_numpy, unit_rows)
from videomini.storage.vector_index import (FLAT_MAX_VECTORS, IDS_DTYPE, TEXT_IDS_DTYPE, IndexContent, Snapshot,
                                            VectorIndex)


class LibraryStore:
    """A video library folder. Readers (search, stats, load_frames) need no lock; writers (create, mark_*,
    write_shard, remove, rebuild_index) hold the folder's writer lock for the store's lifetime."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False, writer: bool = False,
                 wait_s: float = 0.0, flat_max: int = FLAT_MAX_VECTORS) -> None:
        self.root = absolute(root)
        self.shards = ShardStore(self.root / SHARDS)
        self.index = VectorIndex(self.root, flat_max)
        self.writer = writer or create
        self._lock: WriterLock | None = None
        self.catalog: Catalog | None = None
        if not create and not (self.root / CATALOG).is_file():
            raise LibraryError(f"{self.root}: not a videomini library (no {CATALOG}); create it by indexing into it")
        if create:
            try:
                self.shards.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LibraryError(f"{self.root}: cannot create library folder: {e.strerror or e}") from None
        try:
            if self.writer:
                self._lock = WriterLock(self.root, wait_s)
            self.catalog = Catalog(self.root / CATALOG, self.writer)
            if self.writer:
                self._recover()
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, root: str | os.PathLike, **kwargs: Any) -> "LibraryStore":
        """Create (or open, if it exists) a library for writing."""
        return cls(root, create=True, **kwargs)

    @classmethod
    def open(cls, root: str | os.PathLike, *, writer: bool = False, wait_s: float = 0.0,
             **kwargs: Any) -> "LibraryStore":
        return cls(root, writer=writer, wait_s=wait_s, **kwargs)

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
        for video_id, shard in self.catalog.done_shards().items():
            if not self.shards.exists(shard):
                self.catalog.mark_pending(video_id, "shard file missing")
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        manifest = self.index.read_manifest()
        keep = self.catalog.referenced_shards()
        if manifest:
            keep |= {v["shard"] for v in manifest["videos"].values()}
        self.shards.collect_garbage(keep)
        self.index.collect_garbage()

    # ------------------------------------------------------------------ catalog

    def meta(self) -> dict[str, str]:
        return self.catalog.meta()

    def video(self, key: int | str | os.PathLike) -> dict | None:
        """The catalog row of a video, by id or path, as a dict (None if absent)."""
        return self.catalog.video(key)

    def videos(self, status: str | None = None) -> list[dict]:
        return self.catalog.videos(status)

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

    def plan(self, paths: Iterable[str | os.PathLike], *, retry_failed: bool = False,
             model_id: str | None = None, signals: Iterable[str] = ()) -> list[PlanItem]:
        """What an indexer must do for each file: new, changed (fingerprint or model differs, or `signals` asks
        for a signal the video was not indexed with), unchanged (done), resume (pending/running), retry_failed
        (failed, asked to retry) or skip_failed (failed, not asked). model_id None: this run adds no frames
        (signals only), so the stored model does not matter."""
        return self.catalog.plan(paths, retry_failed=retry_failed, model_id=model_id, signals=signals)

    def mark_running(self, path: str | os.PathLike, fp: str | None = None, *, model_id: str | None = None,
                     fps: float | None = None) -> int:
        """Start (or restart) a video; returns its id. A changed file keeps its id and gets a new shard name;
        its old shard stays until the next index build no longer refers to it."""
        self._require_writer()
        path = absolute(path)
        return self.catalog.mark_running(path, fp or fingerprint(path), model_id, fps)

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
        info = {"duration_s": duration_s, "model_id": model_id, "fps": fps, "timings": timings, "signals": signals}
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
        """Mark a running video done from its durable shard (LibraryError when the shard is missing or stale)."""
        name = shard_name(row["id"], row["fingerprint"])
        metadata, n_frames = self.shards.read_header(name)
        if metadata.get("fingerprint") != row["fingerprint"] or metadata.get("video_id") != str(row["id"]):
            raise LibraryError(f"{self.shards.folder / name}: shard belongs to another version of {row['path']}")
        self.catalog.mark_done(row["id"], name, n_frames, json.loads(metadata.get("info", "{}")))

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
        self.rebuild_index()  # also deletes the shards nothing refers to any more
        return wanted

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
                k: manifest.get(k) for k in ("generation", "factory", "nprobe", "n_vectors", "text_n_vectors")},
            "signals": catalog["signals"],
            "index_current": self.index_is_current(),
        }

    # ------------------------------------------------------------------ shards

    def load_frames(self, video_id: int) -> VideoFrames:
        """The stored frame tokens, embeddings and timestamps of a done video."""
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        t = self.shards.read_frames(row["shard"])
        return VideoFrames(video_id, row["path"], t["frame_tokens"], t["embeddings"], t["timestamps_s"])

    def segments(self, video_id: int) -> list[dict]:
        """A done video's speech and on-screen text: [{"source", "text", "start_s", "end_s"}] in time order."""
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        texts, times = self.shards.read_segments(row["shard"])
        return [{"source": source, "text": text, "start_s": float(a), "end_s": float(b)}
                for (source, text), (a, b) in zip(texts, times)]

    # ------------------------------------------------------------------ index

    def manifest(self) -> dict | None:
        """The published index generation's manifest (sizes, factory, videos), None before the first build."""
        return self.index.read_manifest()

    def index_is_current(self) -> bool:
        """True when the published index covers exactly the catalog's done videos and their shards."""
        manifest = self.index.read_manifest()
        indexed = {int(k): v["shard"] for k, v in (manifest or {"videos": {}})["videos"].items()}
        done = self.catalog.done_shards()
        return indexed == done and (manifest is not None or not done)

    def rebuild_index(self) -> dict:
        """Rebuild the FAISS index from every done shard and publish it as a new generation; returns the manifest."""
        self._require_writer()
        started = time.perf_counter()
        manifest = self.index.publish(self._index_content(), started)
        self._collect_garbage()
        return manifest

    def _index_content(self) -> IndexContent:
        """Every done video's embeddings and text-segment embeddings, read from the shards once each."""
        rows = self.catalog.done_rows()
        meta = self.meta()
        embed_dim, text_dim = int(meta.get("embed_dim", 0)), int(meta.get("text_dim", 0))
        n_total = sum(r["n_frames"] for r in rows)
        vectors = np.empty((n_total, embed_dim), np.float32)
        ids = np.empty(n_total, dtype=IDS_DTYPE)
        text_vectors, text_ids = [], []
        pos = 0
        for r in rows:
            stored = self.shards.read_vectors(r["shard"])
            emb, ts = stored["embeddings"], stored["timestamps_s"]
            n = len(ts)
            if n != r["n_frames"] or (n and emb.shape[1] != embed_dim):
                raise LibraryError(f"{self.shards.folder / r['shard']}: shard does not match the catalog")
            vectors[pos : pos + n] = emb
            ids["video_id"][pos : pos + n] = r["id"]
            ids["frame_idx"][pos : pos + n] = np.arange(n)
            ids["timestamp_s"][pos : pos + n] = ts
            pos += n
            if "segment_embeddings" in stored:
                times = stored["segment_times_s"]
                rec = np.empty(len(times), dtype=TEXT_IDS_DTYPE)
                rec["video_id"], rec["segment_idx"] = r["id"], np.arange(len(times))
                rec["start_s"], rec["end_s"] = times[:, 0], times[:, 1]
                text_vectors.append(stored["segment_embeddings"])
                text_ids.append(rec)
        videos = {str(r["id"]): {"path": r["path"], "shard": r["shard"], "n_frames": r["n_frames"]} for r in rows}
        return IndexContent(
            vectors, ids,
            np.concatenate(text_vectors) if text_vectors else np.empty((0, text_dim), np.float32),
            np.concatenate(text_ids) if text_ids else np.empty(0, dtype=TEXT_IDS_DTYPE), videos)

    def snapshot(self) -> Snapshot | None:
        """The published index generation a search runs on (whole, whatever a writer publishes meanwhile)."""
        return self.index.snapshot()

    def search_vectors(self, query: Any, top_k: int = 10, *, nprobe: int | None = None
                       ) -> list[Hit] | list[list[Hit]]:
        """Nearest frames by cosine similarity. query (D,) -> list[Hit]; (Q, D) -> one list[Hit] per query."""
        q = to_numpy(query, np.float32)
        single = q.ndim == 1
        q = q[None] if single else q
        snap = self.snapshot()
        dim = snap.manifest["embed_dim"] if snap and snap.index is not None else int(
            self.meta().get("embed_dim", q.shape[-1]))
        if q.ndim != 2 or q.shape[1] != dim:
            raise LibraryError(f"{self.root}: query has shape {tuple(np.shape(query))}, the library holds "
                               f"{dim}-d embeddings")
        if top_k < 1:
            raise LibraryError(f"{self.root}: top_k must be >= 1, got {top_k}")
        if not np.isfinite(q).all():
            raise LibraryError(f"{self.root}: query has non-finite values")
        if snap is None or snap.index is None:
            return [] if single else [[] for _ in q]
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.ascontiguousarray(q / np.where(norms == 0, 1, norms), dtype=np.float32)
        out = self.index.search(snap, q, top_k, nprobe)
        return out[0] if single else out

    def sample_vectors(self, kind: str = "frames", n: int = 1024, seed: int = 0) -> np.ndarray:
        """Up to `n` stored vectors of the published index ("frames" or "text"), drawn at random with a fixed
        seed: the background a query's similarities are calibrated against (`videomini.search`)."""
        snap = self.snapshot()
        return self.index.sample(snap, kind, n, seed) if snap is not None else np.zeros((0, 1), dtype=np.float32)

    def search_text(self, query: Any, top_k: int = 10) -> list[TextHit]:
        """Speech and on-screen text segments nearest to a query's text embedding (E,), best first."""
        q = to_numpy(query, np.float32).reshape(-1)
        snap = self.snapshot()
        if snap is None or snap.text_index is None:
            return []
        if q.shape[0] != snap.text_index.d or not np.isfinite(q).all():
            raise LibraryError(f"{self.root}: text query has shape {q.shape}, the library holds "
                               f"{snap.text_index.d}-d text embeddings")
        return self.index.search_text(snap, unit_rows(q[None], str(self.root)), top_k,
                                      lambda shard: self.shards.read_segments(shard)[0])

    moments = staticmethod(moments)
