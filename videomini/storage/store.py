"""LibraryStore: a library folder on disk, composed of its catalog, shards, vector index and writer lock.

    DIR/catalog.sqlite     videos and meta (storage/catalog.py)
    DIR/shards/            one safetensors file per indexed video (storage/shards.py)
    DIR/index.json, DIR/part-*  the published index: immutable FAISS index parts (storage/published_index.py)
    DIR/quarantine/        damaged files repair moved aside, each with a note of why (never deleted)
    DIR/lock               the writer lock (storage/lock.py)

Why it survives kill -9 at any point: every file is written to a `.tmp-*` name in its final folder, fsynced,
`os.replace`d and the folder fsynced, so a file is either the old or the new one; a video becomes `done` in the
catalog only after its shard is durable; index parts are written under new names and published by replacing
one small manifest, so a reader never pairs an index with ids of another build (storage/published_index.py).
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from videomini.storage.catalog import CATALOG, Catalog, PlanItem, absolute, fingerprint
from videomini.storage.errors import LibraryDamaged, LibraryError, guarded, repair_hint, storage_errors
from videomini.storage.files import durability_point, remove_temp_files
from videomini.storage.hits import moments
from videomini.storage.integrity import (
    check_store,
    rebuild_catalog,
    rebuilt_catalog_line,
    repair_catalog,
    repair_store,
    shard_problems,
)
from videomini.storage.lock import WriterLock
from videomini.storage.manifest import MANIFEST
from videomini.storage.published_index import PublishedIndex
from videomini.storage.shards import (
    SHARD_FORMAT_VERSION,
    SHARDS,
    ShardContent,
    ShardStore,
    VideoFrames,
    frame_tensors,
    segment_tensors,
    shard_name,
)
from videomini.storage.store_index import StoreIndex
from videomini.storage.vector_index import FLAT_MAX_VECTORS


class LibraryStore(StoreIndex):
    """A video library folder. Readers (search, stats, load_frames) need no lock; writers (create, mark_*,
    write_shard, remove, update_index, compact_index) hold the folder's writer lock for the store's lifetime."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False, writer: bool = False,
                 wait_s: float = 0.0, flat_max: int = FLAT_MAX_VECTORS, repair: bool = False) -> None:
        """repair: a writer that finds the catalog damaged rebuilds it from the shards instead of refusing."""
        self.root = absolute(root)
        self.shards = ShardStore(self.root / SHARDS)
        self.index = PublishedIndex(self.root, flat_max)
        self.writer = writer or create
        self._lock: WriterLock | None = None
        self.catalog: Catalog | None = None
        self.catalog_repairs: list[str] = []  # what a repairing writer did to a damaged catalog, one line each
        self._checked_generation: int | None = None  # the snapshot generation whose entries were checked
        self._checked_videos: set[int] = set()  # videos of that generation whose entries match the catalog
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
                if self.writer and repair and (done := repair_catalog(self.root, self.catalog)):
                    self.catalog_repairs.append(done)
                if self.writer and (problems := self.catalog.integrity_problems()):  # the full check: a changed
                    # byte of a row leaves its index entry behind, which quick_check does not compare
                    raise LibraryDamaged(f"{path}: catalog damaged ({problems[0]}); {repair_hint(self.root)} to "
                                         "repair it")
        except LibraryDamaged:
            if not (self.writer and repair):
                raise
            if self.catalog is not None:
                self.catalog.close()
                self.catalog = None
            self.catalog_repairs.append(rebuilt_catalog_line(rebuild_catalog(self.root, self.shards)))
            self.catalog = Catalog(path, True)

    @classmethod
    def create(cls, root: str | os.PathLike, **kwargs: Any) -> LibraryStore:
        """Create (or open, if it exists) a library for writing."""
        return cls(root, create=True, **kwargs)

    @classmethod
    def open(cls, root: str | os.PathLike, *, writer: bool = False, wait_s: float = 0.0,
             **kwargs: Any) -> LibraryStore:
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

    def __enter__(self) -> LibraryStore:
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
        manifest = self.index.writer_manifest()  # a damaged one is set aside: the next index update rebuilds it
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
            tokens = tensors.get("frame_tokens")
            self.catalog.check_dims(label, {"embed_dim": tensors["embeddings"].shape[1]} if tokens is None else {
                "tokens_per_frame": tokens.shape[1], "token_dim": tokens.shape[2],
                "embed_dim": tensors["embeddings"].shape[1]})
        info = {"duration_s": duration_s, "model_id": model_id, "fps": fps, "timings": timings, "signals": signals,
                "text_model": text_model or ""}
        metadata = {"format_version": SHARD_FORMAT_VERSION, "video_id": str(video_id), "path": label,
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
        try:
            manifest = self.index.read_manifest()
        except LibraryDamaged:
            manifest = None  # named in "problems"
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
                                             "n_parts", "n_deleted", "text_n_deleted")},
            "signals": catalog["signals"],
            "index_current": manifest is not None and self.index_is_current(verify=False),  # None: damaged or missing
            "problems": self.quick_problems(),
        }

    def quick_problems(self) -> list[str]:
        """What a glance finds wrong (no file read): done videos whose shard is missing, index files missing.
        `videomini library DIR --check` reads everything (storage/integrity.py)."""
        missing = [f"{self.shards.folder / shard}: shard missing ({self.catalog.video(video_id)['path']})"
                   for video_id, (shard, _) in self.catalog.done_shards().items() if not self.shards.exists(shard)]
        problems = missing + self.index.problems(deep=False)
        if self.index_was_published() and not (self.root / MANIFEST).exists():
            problems.append(self._manifest_missing().args[0].split(";")[0])
        return problems

    # ------------------------------------------------------------------ shards

    @guarded
    def load_frames(self, video_id: int) -> VideoFrames:
        """The stored frame tokens, embeddings and timestamps of a done video."""
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        t = self.shards.read_frames(row["shard"], _checksum(row))
        return VideoFrames(video_id, row["path"], t.get("frame_tokens"), t["embeddings"], t["timestamps_s"])

    @guarded
    def frame_times(self, video_id: int) -> np.ndarray:
        """A done video's stored frame times (seconds), read alone: what choosing frames to answer from needs."""
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        return self.shards.read_times(row["shard"], _checksum(row))

    @guarded
    def segments(self, video_id: int) -> list[dict]:
        """A done video's speech and on-screen text: [{"source", "text", "start_s", "end_s"}] in time order."""
        row = self.catalog.row(video_id)
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        texts, times = self.shards.read_segments(row["shard"], _checksum(row))
        return [{"source": source, "text": text, "start_s": float(a), "end_s": float(b)}
                for (source, text), (a, b) in zip(texts, times)]

    moments = staticmethod(moments)


def _checksum(row: Any) -> str | None:
    """A catalog row's shard checksum (None in a library written before shards were checksummed)."""
    return row["checksum"] if "checksum" in row.keys() else None
