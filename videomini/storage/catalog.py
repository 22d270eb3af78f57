"""The catalog: one SQLite row per video file (fingerprint, status, error, model, timings, shard and its checksum)
and a meta table (format version, the library's embedding dimensions). WAL journal: readers get a consistent
snapshot while the one writer commits; synchronous FULL: a committed status survives power loss.

Readers open it read-only (URI mode=ro: no writes, no schema change); when even that fails -- a read-only mount or
a full disk, where SQLite cannot create the WAL's shared-memory file -- they open it immutable (no locking, no WAL):
no writer can be at work there (it would have made that file), so nothing changes under them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from videomini.storage.errors import LibraryDamaged, LibraryError, one_line, repair_hint

FORMAT_VERSION = 1
CATALOG = "catalog.sqlite"
STATUSES = ("pending", "running", "done", "failed")
ACTIONS = ("new", "changed", "unchanged", "resume", "retry_failed", "skip_failed")
FINGERPRINT_CHUNK = 1 << 20  # bytes hashed at the head and at the tail of a file
BUSY_TIMEOUT_S = 60  # a reader waits this long for a writer's checkpoint before failing

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
    checksum TEXT,
    signals TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS videos_status ON videos (status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class PlanItem(NamedTuple):
    path: Path
    action: str  # one of ACTIONS
    fingerprint: str
    signals: tuple[str, ...] = ()  # signals stored for it so far (a re-index keeps extracting them)


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


def absolute(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


class Catalog:
    """The SQLite catalog of a library folder. Only a writer (holding the writer lock) creates or changes it."""

    def __init__(self, path: Path, writer: bool) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        try:
            self.db = connect(path, writer)
            if writer:
                self._create_schema()
            elif not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                raise LibraryDamaged(f"{path}: catalog damaged (empty or not a videomini catalog: no meta table); "
                                     f"{repair_hint(path.parent)} to rebuild it from the shards")
            version = self.meta().get("format_version")
            if version != str(FORMAT_VERSION):
                raise LibraryError(f"{path.parent}: library format {version}, this videomini reads {FORMAT_VERSION}; "
                                   "use the videomini that wrote it (or a newer one)")
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(videos)")}
            self.checksum_column = "checksum" if "checksum" in columns else "NULL AS checksum"
        except BaseException:
            self.close()
            raise

    def _create_schema(self) -> None:
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        with self.transaction():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(videos)")}
            if "signals" not in columns:  # libraries made before signals were indexed
                self.db.execute("ALTER TABLE videos ADD COLUMN signals TEXT")
            if "checksum" not in columns:  # libraries made before shards were checksummed
                self.db.execute("ALTER TABLE videos ADD COLUMN checksum TEXT")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    @contextlib.contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ reading

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self.db.execute("SELECT key, value FROM meta")}

    def row(self, video_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM videos WHERE id = ?", (video_id,)).fetchone()

    def row_by_path(self, path: str | os.PathLike) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM videos WHERE path = ?", (str(absolute(path)),)).fetchone()

    def video(self, key: int | str | os.PathLike) -> dict | None:
        """The catalog row of a video, by id or path, as a dict (None if absent)."""
        row = self.row(key) if isinstance(key, int) else self.row_by_path(key)
        return _row_dict(row) if row else None

    def videos(self, status: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM videos", ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        return [_row_dict(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def done_shards(self) -> dict[int, tuple[str, float]]:
        """video id -> (shard file name, version) of every done video; the version (when it was marked done)
        changes when a video is re-indexed into a shard of the same name (e.g. signals added)."""
        return {r[0]: (r[1], r[2]) for r in
                self.db.execute("SELECT id, shard, updated_at FROM videos WHERE status = 'done'")}

    def done_rows(self) -> list[sqlite3.Row]:
        """id, path, shard, n_frames, version (when it was marked done) and shard checksum of every done video,
        in id order."""
        return self.db.execute(f"SELECT id, path, fingerprint, shard, n_frames, updated_at AS version, "
                               f"{self.checksum_column} FROM videos WHERE status = 'done' ORDER BY id").fetchall()

    def integrity_problems(self, quick: bool = False) -> list[str]:
        """What SQLite's own check (PRAGMA integrity_check, or the faster quick_check) finds wrong; [] when fine."""
        pragma = "quick_check" if quick else "integrity_check"
        found = [r[0] for r in self.db.execute(f"PRAGMA {pragma}")]
        return [] if found == ["ok"] else [f"{self.path}: {line}" for line in found]

    def referenced_shards(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT shard FROM videos WHERE shard IS NOT NULL")}

    def plan(self, paths: Iterable[str | os.PathLike], *, retry_failed: bool = False,
             model_id: str | None = None, signals: Iterable[str] = ()) -> list[PlanItem]:
        """What an indexer must do for each file (see LibraryStore.plan)."""
        wanted_signals = set(signals)
        items: list[PlanItem] = []
        seen: set[Path] = set()
        for p in paths:
            path = absolute(p)
            if path in seen:
                continue
            seen.add(path)
            fp = fingerprint(path)
            row = self.row_by_path(path)
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

    def stats(self) -> dict[str, Any]:
        """Videos per status, frames, seconds of video, failures and text signals of the done videos."""
        counts = {s: 0 for s in STATUSES}
        counts.update({r[0]: r[1] for r in self.db.execute("SELECT status, COUNT(*) FROM videos GROUP BY status")})
        frames, seconds = self.db.execute(
            "SELECT COALESCE(SUM(n_frames), 0), COALESCE(SUM(duration_s), 0) FROM videos WHERE status = 'done'"
        ).fetchone()
        failures = [{"path": r["path"], "error": r["error"]} for r in
                    self.db.execute("SELECT path, error FROM videos WHERE status = 'failed' ORDER BY path")]
        signals = {name: n for name, n in self.db.execute(
            "SELECT signals, COUNT(*) FROM videos WHERE status = 'done' AND signals != '' GROUP BY signals")}
        return {"videos": sum(counts.values()), "status": counts, "frames": int(frames), "seconds": float(seconds),
                "failures": failures, "signals": signals}

    # ------------------------------------------------------------------ writing (the writer lock is held)

    def mark_running(self, path: Path, fp: str, model_id: str | None, fps: float | None) -> int:
        try:
            st = path.stat()
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime_ns = None
        now = time.time()
        with self.transaction():
            row = self.db.execute("SELECT id FROM videos WHERE path = ?", (str(path),)).fetchone()
            if row is None:
                cur = self.db.execute(
                    "INSERT INTO videos (path, fingerprint, size, mtime_ns, status, model_id, fps, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                    (str(path), fp, size, mtime_ns, model_id, fps, now, now))
                return int(cur.lastrowid)
            self.db.execute(
                "UPDATE videos SET fingerprint = ?, size = ?, mtime_ns = ?, status = 'running', error = NULL,"
                " n_frames = NULL, duration_s = NULL, shard = NULL, checksum = NULL, timings = NULL, model_id = ?,"
                " fps = ?,"
                " updated_at = ? WHERE id = ?", (fp, size, mtime_ns, model_id, fps, now, row["id"]))
            return int(row["id"])

    def mark_done(self, video_id: int, shard: str, n_frames: int, info: dict, checksum: str) -> None:
        """Record a video as done from its durable shard's name, frame count, stored info and header checksum."""
        with self.transaction():
            self.db.execute(
                "UPDATE videos SET status = 'done', error = NULL, shard = ?, checksum = ?, n_frames = ?,"
                " duration_s = ?, model_id = ?, fps = COALESCE(?, fps), timings = ?, signals = ?, updated_at = ?"
                " WHERE id = ?",
                (shard, checksum, n_frames, info.get("duration_s"), info.get("model_id"), info.get("fps"),
                 json.dumps(info["timings"]) if info.get("timings") is not None else None,
                 ",".join(info.get("signals") or []), time.time(), video_id))

    def insert_done(self, video_id: int, path: str, fp: str, created_at: float) -> None:
        """Re-create a video's row (as running; `mark_done` completes it) when rebuilding a catalog from shards."""
        try:
            st = os.stat(path)
            size, mtime_ns = (st.st_size, st.st_mtime_ns) if fingerprint(path) == fp else (None, None)
        except (OSError, LibraryError):
            size = mtime_ns = None
        with self.transaction():
            self.db.execute("INSERT INTO videos (id, path, fingerprint, size, mtime_ns, status, created_at, updated_at)"
                            " VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                            (video_id, path, fp, size, mtime_ns, created_at, time.time()))

    def set_checksum(self, video_id: int, checksum: str) -> None:
        """Record the header checksum of a done video's shard (one written before shards were checksummed)."""
        with self.transaction():
            self.db.execute("UPDATE videos SET checksum = ? WHERE id = ?", (checksum, video_id))

    def repair_record(self, video_id: int, path: str, n_frames: int, checksum: str) -> None:
        """Restore a done video's path, frame count and shard checksum from its shard, which verified on its own:
        the record was damaged, not the shard. The row's version is kept (the index entry stays valid)."""
        with self.transaction():
            self.db.execute("UPDATE videos SET path = ?, n_frames = ?, checksum = ? WHERE id = ?",
                            (path, n_frames, checksum, video_id))

    def reindex(self) -> list[str]:
        """Rebuild SQLite's indexes from the table (a damaged index entry, or a row whose bytes changed under its
        index entry); returns what a full integrity check still finds."""
        self.db.execute("REINDEX")
        return self.integrity_problems()

    def check_dims(self, label: str, want: dict[str, Any]) -> None:
        """The library's embedding sizes (fixed by its first video, recorded in meta) against a new shard's:
        one model per library."""
        have = self.meta()
        for key, value in want.items():
            if key in have and str(have[key]) != str(value):
                raise LibraryError(f"{label}: {key} is {value}, but this library holds {key} {have[key]} "
                                   "(use one model per library)")
        missing = {k: v for k, v in want.items() if k not in have}
        if missing:
            self.set_meta_once(missing)

    def mark_pending(self, video_id: int, error: str | None = None) -> None:
        """Send a video back to be indexed again (its shard is gone or was never durable)."""
        with self.transaction():
            self.db.execute("UPDATE videos SET status = 'pending', shard = NULL, checksum = NULL, n_frames = NULL,"
                            " error = ?, "
                            "updated_at = ? WHERE id = ?", (error, time.time(), video_id))

    def mark_failed(self, path: Path, error: str, fp: str) -> int:
        now = time.time()
        error = one_line(error) or "failed"
        with self.transaction():
            row = self.db.execute("SELECT id FROM videos WHERE path = ?", (str(path),)).fetchone()
            if row is None:
                cur = self.db.execute(
                    "INSERT INTO videos (path, fingerprint, status, error, created_at, updated_at)"
                    " VALUES (?, ?, 'failed', ?, ?, ?)", (str(path), fp, error, now, now))
                return int(cur.lastrowid)
            self.db.execute("UPDATE videos SET status = 'failed', fingerprint = ?, error = ?, shard = NULL,"
                            " checksum = NULL, n_frames = NULL, updated_at = ? WHERE id = ?",
                            (fp, error, now, row["id"]))
            return int(row["id"])

    def delete(self, video_ids: Iterable[int]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM videos WHERE id = ?", [(i,) for i in video_ids])

    def set_meta(self, values: dict[str, Any]) -> None:
        """Record meta keys, replacing their earlier values."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()])

    def set_meta_once(self, values: dict[str, Any]) -> None:
        """Record meta keys not yet set (the first video fixes the library's dimensions)."""
        with self.transaction():
            self.db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()])


def connect(path: Path, writer: bool) -> sqlite3.Connection:
    """The catalog's connection: read-write for the writer; read-only for readers, immutable when the folder
    cannot be written (a read-only mount), so a reader never writes (no WAL, no shared-memory file, no schema)."""
    if writer:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    else:
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError as e:  # no WAL shared-memory file, and none can be made
            if "unable to open" not in str(e) and not getattr(e, "sqlite_errorname", "").startswith("SQLITE_IOERR"):
                raise
            db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
    return db


def _row_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["timings"] = json.loads(d["timings"]) if d["timings"] else None
    return d
