"""A video library on disk: SQLite catalog + one safetensors shard per video + a FAISS index over frame embeddings.

Layout of a library folder::

    DIR/catalog.sqlite            videos (one row per file: fingerprint, status, error, model, timings, shard) + meta
    DIR/shards/<id>-<fp12>.safetensors   frame_tokens fp16 (N, T, H), embeddings fp32 (N, D), timestamps_s f64 (N,)
                                  and, when indexed with signals, segment_embeddings fp32 (S, E) and
                                  segment_times_s f64 (S, 2), the segments' source and text in its metadata
    DIR/index.json                manifest naming the current index generation (the only file a reader trusts)
    DIR/index-<gen>.faiss         FAISS index over every `done` video's embeddings (inner product = cosine)
    DIR/index_ids-<gen>.npy       row -> (video_id, frame_idx, timestamp_s)
    DIR/text_index-<gen>.faiss    FAISS index over the speech / on-screen text segments' MiniLM embeddings
    DIR/text_ids-<gen>.npy        row -> (video_id, segment_idx, start_s, end_s)
    DIR/lock                      writer lock (fcntl.flock), holds the writer's PID

Why it survives kill -9 at any point: every file is written to a `.tmp-*` name in its final folder, fsynced,
`os.replace`d and the folder fsynced, so a file is either the old or the new one; a video becomes `done` in the
catalog only after its shard is durable; the index and its row ids are written under generation-numbered names
and published by replacing one small manifest, so a reader never pairs an index with ids of another build.
On opening for writing, stale temp files are removed and `running` videos are finished from their durable shard
or sent back to `pending`. Readers (search) never take the writer lock: SQLite WAL and the manifest give them a
consistent snapshot while an indexer runs.

Index choice (bench/search.py on this 2-core machine: 768-d clustered vectors, one query at a time, recall@10
against exact search): exact "Flat" search costs ~0.15-0.25 ms per 1k vectors per query on one thread (~1.4 ms at 10k, ~45 ms at 200k
on a busy machine), so up to FLAT_MAX_VECTORS (20k frames, ~5.5 hours at 1 fps) the library keeps
exact search (a few ms). Past it: "IVF{nlist},Flat", nlist = 2*sqrt(N) rounded to a power of two in [256, 4096]
(1M -> 2048; k-means on 64 points a list keeps the 1M build under a minute), nprobe = max(16, 1.5% of nlist).
Measured: 100k IVF512 nprobe 16 -> recall@10 0.98, p50 1.3 ms; 1M IVF2048 nprobe 31 -> recall@10 1.00,
p50 4.8 ms (nprobe 8: 0.97, 1.9 ms). HNSW32 was rejected: on these video-like vectors (long chains of
near-duplicate frames) its inner-product graph stayed inside a few videos (recall@10 < 0.35 at efSearch 128) and it
built slower than IVF trains. SQ8 codes quarter the index (768 B/frame instead of 3 KB) but cost 5-10 points of
recall@10; the index is small next to the shards (8 KB of frame tokens a frame), so it keeps exact codes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

FORMAT_VERSION = 1
CATALOG = "catalog.sqlite"
SHARDS = "shards"
MANIFEST = "index.json"
LOCK = "lock"
TMP_PREFIX = ".tmp-"
STATUSES = ("pending", "running", "done", "failed")
ACTIONS = ("new", "changed", "unchanged", "resume", "retry_failed", "skip_failed")
FINGERPRINT_CHUNK = 1 << 20  # bytes hashed at the head and at the tail of a file

# Index factory switch (see the module docstring and bench/search.py for the measurements behind them).
FLAT_MAX_VECTORS = 20_000
IVF_MIN_NLIST, IVF_MAX_NLIST = 256, 4096
IVF_SCAN_FRACTION = 0.015  # nprobe ~ this fraction of nlist (but >= IVF_MIN_NPROBE)
IVF_MIN_NPROBE = 16
FEW_QUERIES = 8  # below this many queries a search runs single-threaded (see _faiss_threads)
IVF_TRAIN_PER_LIST = 64  # k-means training points per list (faiss warns below 39)


class LibraryError(Exception):
    """An expected failure with a one-line message naming the library or file and the reason."""


class LibraryBusy(LibraryError):
    """Another process holds the library's writer lock."""


class PlanItem(NamedTuple):
    path: Path
    action: str  # one of ACTIONS
    fingerprint: str
    signals: tuple[str, ...] = ()  # signals stored for it so far (a re-index keeps extracting them)


class Hit(NamedTuple):
    path: str
    timestamp_s: float
    frame_idx: int
    score: float
    video_id: int


class TextHit(NamedTuple):
    path: str
    start_s: float
    end_s: float
    source: str  # "speech" | "ocr"
    text: str
    score: float  # cosine between the query's and the segment's text embeddings
    video_id: int


class Moment(NamedTuple):
    path: str
    start_s: float
    end_s: float
    score: float  # best hit's score
    best_s: float  # timestamp of the best hit
    n_hits: int
    video_id: int


@dataclass
class VideoFrames:
    """Everything stored for one video: what the answer step needs without re-encoding."""

    video_id: int
    path: str
    frame_tokens: np.ndarray  # fp16 (N, T, H)
    embeddings: np.ndarray  # fp32 (N, D), L2-normalised
    timestamps_s: np.ndarray  # f64 (N,)


@dataclass(frozen=True)
class IndexSpec:
    """How to build the FAISS index for a library of a given size."""

    factory: str
    nprobe: int | None = None
    ef_search: int | None = None


# ----------------------------------------------------------------------------------------------- helpers


def fingerprint(path: str | os.PathLike) -> str:
    """Cheap change detector: size, mtime_ns and blake2b of the first and last MiB (not the whole file: libraries
    hold terabytes). Any edit that keeps size, mtime and both ends identical goes unnoticed, by design."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise LibraryError(f"{path}: not a regular file")
    try:
        st = path.stat()
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        with open(path, "rb") as f:
            h.update(f.read(FINGERPRINT_CHUNK))
            if st.st_size > FINGERPRINT_CHUNK:
                f.seek(max(FINGERPRINT_CHUNK, st.st_size - FINGERPRINT_CHUNK))
                h.update(f.read(FINGERPRINT_CHUNK))
    except OSError as e:
        raise LibraryError(f"{path}: cannot fingerprint: {e.strerror or e}") from None
    return h.hexdigest()


def _crash_point(name: str) -> None:
    """Test hook: VIDEOMINI_LIBRARY_CRASH_AT=name:n SIGKILLs this process the n-th time `name` is reached."""
    spec = os.environ.get("VIDEOMINI_LIBRARY_CRASH_AT")
    if not spec or spec.split(":")[0] != name:
        return
    count = _CRASH_COUNTS[name] = _CRASH_COUNTS.get(name, 0) + 1
    if count >= int(spec.split(":")[1] if ":" in spec else 1):
        os.kill(os.getpid(), 9)


_CRASH_COUNTS: dict[str, int] = {}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], Any], crash_name: str | None = None,
                  by_name: bool = False) -> None:
    """Write `path` durably: write(f) (or write(tmp_path) when `by_name`) into a temp file beside it, fsync,
    rename over `path`, fsync the folder. Readers see the old file or the new one, never a partial one."""
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        if by_name:
            write(str(tmp))
        with open(tmp, "ab" if by_name else "wb") as f:
            if not by_name:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        if crash_name:
            _crash_point(crash_name)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _unit_rows(vectors: np.ndarray, label: str) -> np.ndarray:
    """Rows scaled to unit length, so inner product is cosine similarity; a zero row is an error."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise LibraryError(f"{label}: zero embedding vector")
    return (vectors / norms).astype(np.float32)


def _to_numpy(x: Any, dtype: np.dtype) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor (bf16 has no numpy dtype: convert on the torch side first)
        import torch

        x = x.detach().to("cpu", {np.float16: torch.float16, np.float32: torch.float32,
                                  np.float64: torch.float64}[np.dtype(dtype).type]).numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


@contextlib.contextmanager
def _faiss_threads(n: int | None):
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


def _one_line(text: str, limit: int = 2000) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def index_spec_for(n_vectors: int, flat_max: int = FLAT_MAX_VECTORS) -> IndexSpec:
    """Exact search while small; IVF past `flat_max` (see the module docstring for the measurements)."""
    if n_vectors <= flat_max:
        return IndexSpec("Flat")
    nlist = 2 ** round(math.log2(2 * math.sqrt(n_vectors)))
    nlist = min(max(IVF_MIN_NLIST, min(IVF_MAX_NLIST, nlist)), max(1, n_vectors // 39))  # >= 39 points a list
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
    for start in range(0, len(vectors), 65536):  # chunks: no second full copy inside faiss
        index.add(vectors[start : start + 65536])
    set_search_params(index, spec)
    return index


def set_search_params(index: Any, spec: IndexSpec) -> None:
    """Apply query-time knobs (IVF nprobe, HNSW efSearch); a no-op for exact indexes."""
    import faiss

    if spec.nprobe is not None and "IVF" in spec.factory:
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
    if spec.ef_search is not None:
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", spec.ef_search)


def moments(hits: Iterable[Hit], gap_s: float = 2.0) -> list[Moment]:
    """Merge hits of the same video whose timestamps are at most `gap_s` apart into moments, best first."""
    by_video: dict[int, list[Hit]] = {}
    for hit in hits:
        by_video.setdefault(hit.video_id, []).append(hit)
    out: list[Moment] = []
    for video_hits in by_video.values():
        video_hits.sort(key=lambda h: h.timestamp_s)
        group = [video_hits[0]]
        for hit in video_hits[1:] + [None]:
            if hit is not None and hit.timestamp_s - group[-1].timestamp_s <= gap_s:
                group.append(hit)
                continue
            best = max(group, key=lambda h: h.score)
            out.append(Moment(best.path, group[0].timestamp_s, group[-1].timestamp_s, best.score,
                              best.timestamp_s, len(group), best.video_id))
            group = [hit] if hit is not None else []
    out.sort(key=lambda m: (-m.score, m.path, m.start_s))
    return out


# ----------------------------------------------------------------------------------------------- the library

_SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    duration_s REAL,
    n_frames INTEGER,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    error TEXT,
    model_id TEXT,
    fps REAL,
    timings TEXT,
    shard TEXT,
    signals TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS videos_status ON videos (status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


IDS_DTYPE = np.dtype([("video_id", "<i8"), ("frame_idx", "<i8"), ("timestamp_s", "<f8")])
TEXT_IDS_DTYPE = np.dtype([("video_id", "<i8"), ("segment_idx", "<i8"), ("start_s", "<f8"), ("end_s", "<f8")])


class _Snapshot(NamedTuple):
    generation: int
    index: Any
    ids: np.ndarray  # IDS_DTYPE
    videos: dict[int, dict]
    manifest: dict
    text_index: Any = None
    text_ids: np.ndarray | None = None  # TEXT_IDS_DTYPE
    segments: dict | None = None  # video_id -> [(source, text)], filled as searches need them


class Library:
    """A video library folder. Readers (search, stats, load_frames) need no lock; writers (create, mark_*,
    write_shard, remove, rebuild_index) hold the folder's writer lock for the Library's lifetime."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False, writer: bool = False,
                 wait_s: float = 0.0, flat_max: int = FLAT_MAX_VECTORS) -> None:
        self.root = Path(root).expanduser().resolve()
        self.shards_dir = self.root / SHARDS
        self.flat_max = flat_max
        self.writer = writer or create
        self._lock_fd: int | None = None
        self._snapshot: _Snapshot | None = None
        catalog = self.root / CATALOG
        if not create and not catalog.is_file():
            raise LibraryError(f"{self.root}: not a videomini library (no {CATALOG}); create it by indexing into it")
        if create:
            try:
                self.shards_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LibraryError(f"{self.root}: cannot create library folder: {e.strerror or e}") from None
        if self.writer:
            self._acquire_lock(wait_s)
        try:
            self.db = sqlite3.connect(catalog, timeout=60, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA busy_timeout = 60000")
            if self.writer:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = FULL")
                with self._txn():
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            self.db.execute(stmt)
                    self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
                    columns = {r[1] for r in self.db.execute("PRAGMA table_info(videos)")}
                    if "signals" not in columns:  # libraries made before signals were indexed
                        self.db.execute("ALTER TABLE videos ADD COLUMN signals TEXT")
            version = self.meta().get("format_version")
            if version != str(FORMAT_VERSION):
                raise LibraryError(f"{self.root}: library format {version}, this videomini reads {FORMAT_VERSION}")
            if self.writer:
                self._recover()
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, root: str | os.PathLike, **kwargs: Any) -> "Library":
        """Create (or open, if it exists) a library for writing."""
        return cls(root, create=True, **kwargs)

    @classmethod
    def open(cls, root: str | os.PathLike, *, writer: bool = False, wait_s: float = 0.0, **kwargs: Any) -> "Library":
        return cls(root, writer=writer, wait_s=wait_s, **kwargs)

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
            self.db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        self._snapshot = None

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.root)!r}, writer={self.writer})"

    # ------------------------------------------------------------------ locking and recovery

    def _acquire_lock(self, wait_s: float) -> None:
        lock_path = self.root / LOCK
        if not self.root.is_dir():
            raise LibraryError(f"{self.root}: library folder does not exist")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
                    raise LibraryBusy(f"{self.root}: library is being written by another process (pid {holder})"
                                      f"{waited}") from None
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _require_writer(self) -> None:
        if self._lock_fd is None:
            raise LibraryError(f"{self.root}: library is open read-only; open it with writer=True to change it")

    @contextlib.contextmanager
    def _txn(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _recover(self) -> None:
        """After a crash: drop temp files, finish `running` videos whose shard is durable, reset the others,
        and delete files no catalog row or manifest refers to."""
        for folder in (self.root, self.shards_dir):
            for tmp in folder.glob(f"{TMP_PREFIX}*"):
                tmp.unlink(missing_ok=True)
        for row in self.db.execute("SELECT * FROM videos WHERE status = 'running'").fetchall():
            shard = self._shard_name(row["id"], row["fingerprint"])
            try:
                self._finish(row, shard)
            except LibraryError:
                with self._txn():
                    self.db.execute("UPDATE videos SET status = 'pending', shard = NULL, n_frames = NULL, "
                                    "updated_at = ? WHERE id = ?", (time.time(), row["id"]))
        for row in self.db.execute("SELECT id, shard FROM videos WHERE status = 'done'").fetchall():
            if not (self.shards_dir / (row["shard"] or "")).is_file():
                with self._txn():
                    self.db.execute("UPDATE videos SET status = 'pending', shard = NULL, error = ?, updated_at = ? "
                                    "WHERE id = ?", ("shard file missing", time.time(), row["id"]))
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        manifest = self._read_manifest()
        keep = {r[0] for r in self.db.execute("SELECT shard FROM videos WHERE shard IS NOT NULL")}
        if manifest:
            keep |= {v["shard"] for v in manifest["videos"].values()}
        for shard in self.shards_dir.glob("*.safetensors"):
            if shard.name not in keep:
                shard.unlink(missing_ok=True)
        generation = manifest["generation"] if manifest else 0
        for pattern in ("index-*.faiss", "index_ids-*.npy", "text_index-*.faiss", "text_ids-*.npy"):
            for f in self.root.glob(pattern):
                gen = f.name.split("-")[-1].split(".")[0]
                # keep the previous generation too: a reader may have read the old manifest a moment ago
                if not gen.isdigit() or int(gen) not in (generation, generation - 1):
                    f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ catalog

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self.db.execute("SELECT key, value FROM meta")}

    def video(self, key: int | str | os.PathLike) -> dict | None:
        """The catalog row of a video, by id or path, as a dict (None if absent)."""
        if isinstance(key, int):
            row = self.db.execute("SELECT * FROM videos WHERE id = ?", (key,)).fetchone()
        else:
            row = self.db.execute("SELECT * FROM videos WHERE path = ?", (str(self._abs(key)),)).fetchone()
        return self._row_dict(row) if row else None

    def videos(self, status: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM videos", ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        return [self._row_dict(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    @staticmethod
    def _row_dict(row: sqlite3.Row) -> dict:
        d = dict(row)
        d["timings"] = json.loads(d["timings"]) if d["timings"] else None
        return d

    @staticmethod
    def _abs(path: str | os.PathLike) -> Path:
        return Path(path).expanduser().resolve()

    @staticmethod
    def _shard_name(video_id: int, fp: str) -> str:
        return f"{video_id}-{fp[:12]}.safetensors"

    def plan(self, paths: Iterable[str | os.PathLike], *, retry_failed: bool = False,
             model_id: str | None = None, signals: Iterable[str] = ()) -> list[PlanItem]:
        """What an indexer must do for each file: new, changed (fingerprint or model differs, or `signals` asks
        for a signal the video was not indexed with), unchanged (done), resume (pending/running), retry_failed
        (failed, asked to retry) or skip_failed (failed, not asked). model_id None: this run adds no frames
        (signals only), so the stored model does not matter."""
        wanted_signals = set(signals)
        items: list[PlanItem] = []
        seen: set[Path] = set()
        for p in paths:
            path = self._abs(p)
            if path in seen:
                continue
            seen.add(path)
            fp = fingerprint(path)
            row = self.db.execute("SELECT fingerprint, status, model_id, signals FROM videos WHERE path = ?",
                                  (str(path),)).fetchone()
            stored_signals = set((row["signals"] or "").split(",")) - {""} if row is not None else set()
            if row is None:
                action = "new"
            elif row["fingerprint"] != fp or (row["status"] == "done" and (
                    (model_id is not None and row["model_id"] != model_id) or wanted_signals - stored_signals)):
                action = "changed"
            elif row["status"] == "done":
                action = "unchanged"
            elif row["status"] == "failed":
                action = "retry_failed" if retry_failed else "skip_failed"
            else:
                action = "resume"
            items.append(PlanItem(path, action, fp, tuple(sorted(stored_signals))))
        return items

    def mark_running(self, path: str | os.PathLike, fp: str | None = None, *, model_id: str | None = None,
                     fps: float | None = None) -> int:
        """Start (or restart) a video; returns its id. A changed file keeps its id and gets a new shard name;
        its old shard stays until the next index build no longer refers to it."""
        self._require_writer()
        path = self._abs(path)
        fp = fp or fingerprint(path)
        try:
            st = path.stat()
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime_ns = None
        now = time.time()
        with self._txn():
            row = self.db.execute("SELECT id FROM videos WHERE path = ?", (str(path),)).fetchone()
            if row is None:
                cur = self.db.execute(
                    "INSERT INTO videos (path, fingerprint, size, mtime_ns, status, model_id, fps, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                    (str(path), fp, size, mtime_ns, model_id, fps, now, now))
                video_id = int(cur.lastrowid)
            else:
                video_id = int(row["id"])
                self.db.execute(
                    "UPDATE videos SET fingerprint = ?, size = ?, mtime_ns = ?, status = 'running', error = NULL,"
                    " n_frames = NULL, duration_s = NULL, shard = NULL, timings = NULL, model_id = ?, fps = ?,"
                    " updated_at = ? WHERE id = ?", (fp, size, mtime_ns, model_id, fps, now, video_id))
        return video_id

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
        row = self.db.execute("SELECT * FROM videos WHERE id = ?", (video_id,)).fetchone()
        if row is None or row["status"] != "running":
            state = "unknown" if row is None else row["status"]
            raise LibraryError(f"{self.root}: video {video_id} is {state}, not running; call mark_running first")
        label = row["path"]
        frame_tokens = _to_numpy(frame_tokens, np.float16)
        if frame_tokens.ndim == 2:
            frame_tokens = frame_tokens[:, None, :]
        embeddings = _to_numpy(embeddings, np.float32)
        timestamps_s = _to_numpy(timestamps_s, np.float64)
        n = len(timestamps_s)
        if frame_tokens.ndim != 3 or embeddings.ndim != 2 or timestamps_s.ndim != 1:
            raise LibraryError(f"{label}: expected frame_tokens (N, T, H), embeddings (N, D), timestamps_s (N,); "
                               f"got {frame_tokens.shape}, {embeddings.shape}, {timestamps_s.shape}")
        signals = sorted(set(signals))
        if (n == 0 and not signals) or len(frame_tokens) != n or len(embeddings) != n:
            raise LibraryError(f"{label}: frame counts differ or are zero: {len(frame_tokens)} tokens, "
                               f"{len(embeddings)} embeddings, {n} timestamps")
        if not (np.isfinite(embeddings).all() and np.isfinite(timestamps_s).all()
                and np.isfinite(frame_tokens).all()):
            raise LibraryError(f"{label}: non-finite values in frame tokens, embeddings or timestamps")
        if np.any(np.diff(timestamps_s) < 0):
            raise LibraryError(f"{label}: timestamps_s are not sorted")
        embeddings = _unit_rows(embeddings, label)
        if n:
            self._check_dims(label, frame_tokens.shape[1], frame_tokens.shape[2], embeddings.shape[1])
        tensors = {"frame_tokens": frame_tokens, "embeddings": embeddings, "timestamps_s": timestamps_s}
        info = {"duration_s": duration_s, "model_id": model_id, "fps": fps, "timings": timings, "signals": signals}
        metadata = {"format_version": str(FORMAT_VERSION), "video_id": str(video_id), "path": label,
                    "fingerprint": row["fingerprint"], "info": json.dumps(info)}
        segments = list(segments or [])
        if segments or segment_embeddings is not None:
            unknown = {seg.get("source") for seg in segments} - set(signals)
            if unknown:
                raise LibraryError(f"{label}: segments from {sorted(map(str, unknown))} but signals {signals}")
            vectors = _to_numpy(segment_embeddings, np.float32) if segment_embeddings is not None else None
            if vectors is None or vectors.ndim != 2 or len(vectors) != len(segments):
                raise LibraryError(f"{label}: {len(segments)} segments need as many segment_embeddings rows, got "
                                   f"{None if vectors is None else vectors.shape}")
            tensors["segment_embeddings"] = _unit_rows(vectors, label)
            tensors["segment_times_s"] = np.array([[seg["start_s"], seg["end_s"]] for seg in segments],
                                                  dtype=np.float64).reshape(-1, 2)
            metadata["segments"] = json.dumps([[seg["source"], seg["text"]] for seg in segments])
            if len(vectors):
                self._check_text_dims(label, vectors.shape[1], text_model)

        from safetensors.numpy import save

        blob = save(tensors, metadata=metadata)
        name = self._shard_name(video_id, row["fingerprint"])
        self.shards_dir.mkdir(exist_ok=True)
        _atomic_write(self.shards_dir / name, lambda f: f.write(blob), crash_name="shard_tmp_written")
        _crash_point("shard_durable")
        return name

    def _check_text_dims(self, label: str, dim: int, text_model: str | None) -> None:
        have = self.meta()
        if "text_dim" in have and (int(have["text_dim"]) != dim or have.get("text_model") != (text_model or "")):
            raise LibraryError(f"{label}: text embeddings from {text_model or 'an unnamed model'} ({dim}-d), but this "
                               f"library holds {have.get('text_model') or 'another model'}'s ({have['text_dim']}-d)")
        if "text_dim" not in have:
            with self._txn():
                self.db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                    [("text_dim", str(dim)), ("text_model", text_model or "")])

    def _check_dims(self, label: str, tokens_per_frame: int, token_dim: int, embed_dim: int) -> None:
        want = {"tokens_per_frame": tokens_per_frame, "token_dim": token_dim, "embed_dim": embed_dim}
        have = self.meta()
        for key, value in want.items():
            if key in have and int(have[key]) != value:
                raise LibraryError(f"{label}: {key} is {value}, but this library holds {key} {have[key]} "
                                   f"(use one model per library)")
        missing = {k: v for k, v in want.items() if k not in have}
        if missing:
            with self._txn():
                self.db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                    [(k, str(v)) for k, v in missing.items()])

    def mark_done(self, video_id: int) -> None:
        """Record a running video as done; its shard must already be durable (written by write_shard)."""
        self._require_writer()
        row = self.db.execute("SELECT * FROM videos WHERE id = ?", (video_id,)).fetchone()
        if row is None or row["status"] != "running":
            state = "unknown" if row is None else row["status"]
            raise LibraryError(f"{self.root}: video {video_id} is {state}, not running")
        self._finish(row, self._shard_name(video_id, row["fingerprint"]))
        _crash_point("done_committed")

    def _finish(self, row: sqlite3.Row, shard: str) -> None:
        from safetensors import safe_open

        path = self.shards_dir / shard
        try:
            with safe_open(path, framework="np") as f:
                metadata = f.metadata() or {}
                n_frames = f.get_slice("timestamps_s").get_shape()[0]
        except Exception as e:  # missing or unreadable: not durable
            raise LibraryError(f"{path}: shard missing or unreadable: {e}") from None
        if metadata.get("fingerprint") != row["fingerprint"] or metadata.get("video_id") != str(row["id"]):
            raise LibraryError(f"{path}: shard belongs to another version of {row['path']}")
        info = json.loads(metadata.get("info", "{}"))
        with self._txn():
            self.db.execute(
                "UPDATE videos SET status = 'done', error = NULL, shard = ?, n_frames = ?, duration_s = ?,"
                " model_id = ?, fps = COALESCE(?, fps), timings = ?, signals = ?, updated_at = ?"
                " WHERE id = ?",
                (shard, n_frames, info.get("duration_s"), info.get("model_id"), info.get("fps"),
                 json.dumps(info["timings"]) if info.get("timings") is not None else None,
                 ",".join(info.get("signals") or []), time.time(), row["id"]))

    def mark_failed(self, path: str | os.PathLike, error: str, fp: str | None = None) -> int:
        """Record why a file could not be indexed (one line); the batch goes on. Returns the video id."""
        self._require_writer()
        path = self._abs(path)
        if fp is None:
            try:
                fp = fingerprint(path)
            except LibraryError:
                fp = ""
        now = time.time()
        error = _one_line(error) or "failed"
        with self._txn():
            row = self.db.execute("SELECT id FROM videos WHERE path = ?", (str(path),)).fetchone()
            if row is None:
                cur = self.db.execute(
                    "INSERT INTO videos (path, fingerprint, status, error, created_at, updated_at)"
                    " VALUES (?, ?, 'failed', ?, ?, ?)", (str(path), fp, error, now, now))
                return int(cur.lastrowid)
            self.db.execute("UPDATE videos SET status = 'failed', fingerprint = ?, error = ?, shard = NULL,"
                            " n_frames = NULL, updated_at = ? WHERE id = ?", (fp, error, now, row["id"]))
            return int(row["id"])

    def remove(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """Remove videos (any status) from the catalog, rebuild the index, delete their shards.
        Every path must be in the library; nothing is removed otherwise."""
        self._require_writer()
        wanted = [str(self._abs(p)) for p in paths]
        ids = []
        for path in wanted:
            row = self.db.execute("SELECT id FROM videos WHERE path = ?", (path,)).fetchone()
            if row is None:
                raise LibraryError(f"{path}: not in library {self.root}")
            ids.append(row["id"])
        with self._txn():
            self.db.executemany("DELETE FROM videos WHERE id = ?", [(i,) for i in ids])
        self.rebuild_index()  # also deletes the shards nothing refers to any more
        return wanted

    def stats(self) -> dict:
        """Videos per status, frames, hours, bytes on disk, failures and index state."""
        counts = {s: 0 for s in STATUSES}
        counts.update({r[0]: r[1] for r in self.db.execute("SELECT status, COUNT(*) FROM videos GROUP BY status")})
        frames, seconds = self.db.execute(
            "SELECT COALESCE(SUM(n_frames), 0), COALESCE(SUM(duration_s), 0) FROM videos WHERE status = 'done'"
        ).fetchone()
        size = sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())
        failures = [{"path": r["path"], "error": r["error"]} for r in
                    self.db.execute("SELECT path, error FROM videos WHERE status = 'failed' ORDER BY path")]
        manifest = self._read_manifest()
        return {
            "library": str(self.root),
            "videos": sum(counts.values()),
            "status": counts,
            "frames": int(frames),
            "hours": float(seconds) / 3600.0,
            "bytes_on_disk": size,
            "failures": failures,
            "index": None if manifest is None else {
                k: manifest.get(k) for k in ("generation", "factory", "nprobe", "ef_search", "n_vectors",
                                             "text_n_vectors")},
            "signals": {name: n for name, n in self.db.execute(
                "SELECT signals, COUNT(*) FROM videos WHERE status = 'done' AND signals != '' GROUP BY signals")},
            "index_current": self.index_is_current(),
        }

    # ------------------------------------------------------------------ shards

    def load_frames(self, video_id: int) -> VideoFrames:
        """The stored frame tokens, embeddings and timestamps of a done video."""
        from safetensors.numpy import load_file

        row = self.db.execute("SELECT path, shard, status FROM videos WHERE id = ?", (video_id,)).fetchone()
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        path = self.shards_dir / row["shard"]
        try:
            t = load_file(path)
        except Exception as e:
            raise LibraryError(f"{path}: cannot read shard: {e}") from None
        return VideoFrames(video_id, row["path"], t["frame_tokens"], t["embeddings"], t["timestamps_s"])

    def _read_shard_vectors(self, shard: str) -> dict[str, np.ndarray]:
        """What the index is built from: embeddings, timestamps_s and, when stored, segment_embeddings and
        segment_times_s -- never the frame tokens, the bulk of a shard."""
        from safetensors import safe_open

        path = self.shards_dir / shard
        names = ("embeddings", "timestamps_s", "segment_embeddings", "segment_times_s")
        try:
            with safe_open(path, framework="np") as f:
                return {name: f.get_tensor(name) for name in names if name in f.keys()}
        except Exception as e:
            raise LibraryError(f"{path}: cannot read shard: {e}") from None

    # ------------------------------------------------------------------ index

    def _read_manifest(self) -> dict | None:
        try:
            return json.loads((self.root / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LibraryError(f"{self.root / MANIFEST}: unreadable index manifest: {e}") from None

    def manifest(self) -> dict | None:
        """The published index generation's manifest (sizes, factory, videos), None before the first build."""
        return self._read_manifest()

    def index_is_current(self) -> bool:
        """True when the published index covers exactly the catalog's done videos and their shards."""
        manifest = self._read_manifest()
        indexed = {int(k): v["shard"] for k, v in (manifest or {"videos": {}})["videos"].items()}
        done = {r[0]: r[1] for r in self.db.execute("SELECT id, shard FROM videos WHERE status = 'done'")}
        return indexed == done and (manifest is not None or not done)

    def rebuild_index(self) -> dict:
        """Rebuild the FAISS index from every done shard and publish it as a new generation; returns the manifest."""
        import faiss

        self._require_writer()
        t0 = time.perf_counter()
        rows = self.db.execute("SELECT id, path, shard, n_frames FROM videos WHERE status = 'done' ORDER BY id"
                               ).fetchall()
        embed_dim = int(self.meta().get("embed_dim", 0))
        n_total = sum(r["n_frames"] for r in rows)
        vectors = np.empty((n_total, embed_dim), np.float32)
        ids = np.empty(n_total, dtype=IDS_DTYPE)
        text_vectors, text_ids = [], []
        pos = 0
        for r in rows:
            stored = self._read_shard_vectors(r["shard"])
            emb, ts = stored["embeddings"], stored["timestamps_s"]
            n = len(ts)
            if n != r["n_frames"] or (n and emb.shape[1] != embed_dim):
                raise LibraryError(f"{self.shards_dir / r['shard']}: shard does not match the catalog")
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
        spec = index_spec_for(n_total, self.flat_max)
        index = build_index(vectors, spec) if n_total else None
        del vectors
        text_dim = int(self.meta().get("text_dim", 0))
        text_vectors = np.concatenate(text_vectors) if text_vectors else np.empty((0, text_dim), np.float32)
        text_ids = np.concatenate(text_ids) if text_ids else np.empty(0, dtype=TEXT_IDS_DTYPE)
        text_spec = index_spec_for(len(text_ids), self.flat_max)
        text_index = build_index(text_vectors, text_spec) if len(text_ids) else None

        previous = self._read_manifest()
        generation = (previous["generation"] if previous else 0) + 1
        index_file, ids_file = f"index-{generation:06d}.faiss", f"index_ids-{generation:06d}.npy"
        if index is not None:
            _atomic_write(self.root / index_file, lambda tmp: faiss.write_index(index, tmp), by_name=True)
        else:
            index_file = None
        _atomic_write(self.root / ids_file, lambda f: np.save(f, ids, allow_pickle=False))
        text_index_file = text_ids_file = None
        if text_index is not None:
            text_index_file, text_ids_file = f"text_index-{generation:06d}.faiss", f"text_ids-{generation:06d}.npy"
            _atomic_write(self.root / text_index_file, lambda tmp: faiss.write_index(text_index, tmp), by_name=True)
            _atomic_write(self.root / text_ids_file, lambda f: np.save(f, text_ids, allow_pickle=False))
        _crash_point("index_files_written")
        manifest = {
            "format_version": FORMAT_VERSION, "generation": generation, "index_file": index_file,
            "ids_file": ids_file, "factory": spec.factory, "nprobe": spec.nprobe, "ef_search": spec.ef_search,
            "n_vectors": n_total, "embed_dim": embed_dim, "built_at": time.time(),
            "text_index_file": text_index_file, "text_ids_file": text_ids_file, "text_factory": text_spec.factory,
            "text_nprobe": text_spec.nprobe, "text_n_vectors": int(len(text_ids)),
            "text_dim": int(text_vectors.shape[1]),
            "build_s": round(time.perf_counter() - t0, 3),
            "videos": {str(r["id"]): {"path": r["path"], "shard": r["shard"], "n_frames": r["n_frames"]}
                       for r in rows},
        }
        _atomic_write(self.root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        _crash_point("manifest_published")
        self._collect_garbage()
        return manifest

    def _load_snapshot(self) -> _Snapshot | None:
        """The published index generation (cached until the manifest names a newer one)."""
        import faiss

        for _ in range(5):  # a writer may publish and delete between our manifest read and file open: re-read
            manifest = self._read_manifest()
            if manifest is None:
                return None
            if self._snapshot is not None and self._snapshot.generation == manifest["generation"]:
                return self._snapshot
            try:
                ids = np.load(self.root / manifest["ids_file"], allow_pickle=False)
                index = faiss.read_index(str(self.root / manifest["index_file"])) if manifest["index_file"] else None
                text_index = text_ids = None
                if manifest.get("text_index_file"):
                    text_ids = np.load(self.root / manifest["text_ids_file"], allow_pickle=False)
                    text_index = faiss.read_index(str(self.root / manifest["text_index_file"]))
            except (FileNotFoundError, RuntimeError) as e:
                if (self.root / manifest["ids_file"]).exists() and "No such file" not in str(e):
                    raise LibraryError(f"{self.root}: cannot read index generation {manifest['generation']}: "
                                       f"{_one_line(str(e), 200)}") from None
                continue
            if len(ids) != manifest["n_vectors"] or (index is not None and index.ntotal != len(ids)):
                raise LibraryError(f"{self.root}: index generation {manifest['generation']} does not match its ids")
            if index is not None:
                set_search_params(index, IndexSpec(manifest["factory"], manifest["nprobe"], manifest["ef_search"]))
            if text_index is not None:
                if text_index.ntotal != len(text_ids):
                    raise LibraryError(f"{self.root}: text index generation {manifest['generation']} does not "
                                       "match its ids")
                set_search_params(text_index, IndexSpec(manifest["text_factory"], manifest["text_nprobe"]))
            videos = {int(k): v for k, v in manifest["videos"].items()}
            self._snapshot = _Snapshot(manifest["generation"], index, ids, videos, manifest, text_index, text_ids, {})
            return self._snapshot
        raise LibraryError(f"{self.root}: index changed repeatedly while opening it; retry")

    def search_vectors(self, query: Any, top_k: int = 10, *, nprobe: int | None = None
                       ) -> list[Hit] | list[list[Hit]]:
        """Nearest frames by cosine similarity. query (D,) -> list[Hit]; (Q, D) -> one list[Hit] per query."""
        q = _to_numpy(query, np.float32)
        single = q.ndim == 1
        q = q[None] if single else q
        snap = self._load_snapshot()
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
        if nprobe is not None:  # per-call override of the IVF probe count (ignored by exact indexes)
            set_search_params(snap.index, IndexSpec(snap.manifest["factory"], nprobe=nprobe))
        try:
            with _faiss_threads(1 if len(q) < FEW_QUERIES else None):
                scores, rows = snap.index.search(q, min(top_k, snap.index.ntotal))
        finally:
            if nprobe is not None and snap.manifest["nprobe"] is not None:
                set_search_params(snap.index, IndexSpec(snap.manifest["factory"], snap.manifest["nprobe"]))
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
        return out[0] if single else out

    def sample_vectors(self, kind: str = "frames", n: int = 1024, seed: int = 0) -> np.ndarray:
        """Up to `n` stored vectors of the published index ("frames" or "text"), drawn at random with a fixed
        seed: the background a query's similarities are calibrated against (`videomini.search`)."""
        snap = self._load_snapshot()
        index = None if snap is None else snap.index if kind == "frames" else snap.text_index
        if index is None or index.ntotal == 0:
            return np.zeros((0, 1), dtype=np.float32)
        rows = np.sort(np.random.default_rng(seed).choice(index.ntotal, size=min(n, index.ntotal), replace=False))
        import faiss

        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and ivf.direct_map.no():
            ivf.make_direct_map()  # IVF lists reconstruct by id only through the map (8 bytes per vector)
        return np.asarray(index.reconstruct_batch(rows.astype(np.int64)), dtype=np.float32)

    def search_text(self, query: Any, top_k: int = 10) -> list[TextHit]:
        """Speech and on-screen text segments nearest to a query's text embedding (E,), best first."""
        q = _to_numpy(query, np.float32).reshape(-1)
        snap = self._load_snapshot()
        if snap is None or snap.text_index is None:
            return []
        if q.shape[0] != snap.text_index.d or not np.isfinite(q).all():
            raise LibraryError(f"{self.root}: text query has shape {q.shape}, the library holds "
                               f"{snap.text_index.d}-d text embeddings")
        q = _unit_rows(q[None], str(self.root))
        with _faiss_threads(1):
            scores, rows = snap.text_index.search(q, min(top_k, snap.text_index.ntotal))
        hits = []
        for score, i in zip(scores[0], rows[0]):
            if i < 0:
                continue
            rec = snap.text_ids[i]
            video_id = int(rec["video_id"])
            source, text = self._segment_texts(snap, video_id)[int(rec["segment_idx"])]
            hits.append(TextHit(snap.videos[video_id]["path"], float(rec["start_s"]), float(rec["end_s"]), source,
                                text, float(score), video_id))
        return hits

    def _segment_texts(self, snap: _Snapshot, video_id: int) -> list[tuple[str, str]]:
        """(source, text) of a video's segments, read once per snapshot from its shard's metadata."""
        if video_id not in snap.segments:
            snap.segments[video_id] = [tuple(x) for x in self._shard_segments(snap.videos[video_id]["shard"])[0]]
        return snap.segments[video_id]

    def _shard_segments(self, shard: str) -> tuple[list, np.ndarray]:
        from safetensors import safe_open

        path = self.shards_dir / shard
        try:
            with safe_open(path, framework="np") as f:
                texts = json.loads((f.metadata() or {}).get("segments", "[]"))
                times = f.get_tensor("segment_times_s") if "segment_times_s" in f.keys() else np.empty((0, 2))
        except Exception as e:
            raise LibraryError(f"{path}: cannot read shard: {e}") from None
        return texts, times

    def segments(self, video_id: int) -> list[dict]:
        """A done video's speech and on-screen text: [{"source", "text", "start_s", "end_s"}] in time order."""
        row = self.db.execute("SELECT shard, status FROM videos WHERE id = ?", (video_id,)).fetchone()
        if row is None or row["status"] != "done":
            raise LibraryError(f"{self.root}: video {video_id} is not indexed")
        texts, times = self._shard_segments(row["shard"])
        return [{"source": source, "text": text, "start_s": float(a), "end_s": float(b)}
                for (source, text), (a, b) in zip(texts, times)]

    moments = staticmethod(moments)
