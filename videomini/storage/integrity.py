"""Check and repair a whole library: `videomini library DIR --check` / `--repair`.

check: SQLite's integrity_check of the catalog, every done video's shard read whole against its checksums (header
in the catalog, tensors in the shard) and against its catalog record (video, path, frames), the manifest's own
checksum and every index file against the manifest's, and agreement: the index holds exactly the catalog's done
videos, under the catalog's paths, with as many rows per video as its shard has frames.

repair (the writer lock held) never destroys what it cannot rebuild:
- a catalog whose SQLite indexes disagree with its rows is re-indexed (a copy kept in quarantine/ first); one that
  cannot be read is rebuilt from the shards (each holds its video's path, fingerprint, model, timings, signals; the
  damaged file is kept beside it);
- a shard whose own checksums verify while the catalog's record of it (checksum, path, frames) does not: the record
  is repaired from the shard, the shard stays;
- a shard that fails its own checks is moved to quarantine/ (with a note of why), never deleted, and its video goes
  back to `pending`, so the next `index` re-does it from the video file; a missing shard: the same, minus the move;
- the manifest (damaged, missing, or contradicting the catalog) and damaged index files are rebuilt from the good
  shards (a damaged manifest moved to quarantine/ first).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

from videomini.storage.catalog import CATALOG, Catalog, fingerprint
from videomini.storage.errors import LibraryDamaged, LibraryError, storage_errors
from videomini.storage.files import QUARANTINE, set_aside
from videomini.storage.manifest import entry_problems
from videomini.storage.shards import METADATA_CHECKSUM, ShardStore, shard_name

SQLITE_SIDE_FILES = ("-wal", "-shm")
REINDEX_HINT = "re-run `videomini index` on it"


class ShardFinding(NamedTuple):
    """What is wrong with a done video's shard, and which repair fixes it."""

    line: str  # what --check prints
    fix: str  # "record" (the catalog's record, from the shard), "quarantine" (the shard), "missing" (re-index)
    metadata: dict | None = None  # the shard's own metadata, when it verified on its own
    n_frames: int | None = None


def check_store(store: Any) -> list[str]:
    """Everything wrong with an open library (a LibraryStore), one line each naming the file; [] when it is
    whole. Only reads (works on a read-only library)."""
    try:
        with storage_errors(store.root):
            problems = store.catalog.integrity_problems()
            for row in store.catalog.done_rows():
                problems += [found.line for found in [inspect_shard(store.shards, row)] if found]
    except LibraryDamaged as e:  # the catalog opened but cannot be read through
        return [str(e)] + shard_problems(store.shards)
    with storage_errors(store.root):
        return problems + store.index.problems() + _check_agreement(store)


def inspect_shard(shards: ShardStore, row: Any) -> ShardFinding | None:
    """A done video's shard: present, whole, and the one its catalog row describes (None when it is)."""
    shard = shards.folder / row["shard"]
    if not shards.exists(row["shard"]):
        return ShardFinding(f"{shard}: shard missing ({row['path']})", "missing")
    try:
        metadata, shapes = shards.verify(row["shard"], row["checksum"])
    except LibraryError as e:
        damage = str(e).split(";")[0]
        try:
            metadata, shapes = shards.verify(row["shard"])  # its own checksums (tensors, metadata), not the catalog's
        except LibraryError:
            return ShardFinding(f"{damage} ({row['path']})", "quarantine")
        agrees = metadata.get("path") == row["path"] and shapes["timestamps_s"][0] == row["n_frames"]
        if not _belongs(metadata, row) or not (METADATA_CHECKSUM in metadata or agrees):
            return ShardFinding(f"{damage} ({row['path']})", "quarantine")  # the header's damage, not the record's
        return ShardFinding(f"{shard}: the catalog's recorded checksum of this shard is wrong; the shard verifies on "
                            f"its own ({row['path']})", "record", metadata, shapes["timestamps_s"][0])
    if not _belongs(metadata, row):
        return ShardFinding(f"{shard}: shard belongs to another video than its catalog row ({row['path']})",
                            "quarantine")
    n_frames, path = shapes["timestamps_s"][0], metadata.get("path")
    if n_frames != row["n_frames"] or (path and path != row["path"]):
        what = f"path {row['path']!r}, the shard's {path!r}" if path != row["path"] else \
            f"{row['n_frames']} frames, the shard's {n_frames}"
        return ShardFinding(f"{shard}: the catalog's record of this shard is wrong ({what})", "record", metadata,
                            n_frames)
    return None


def _belongs(metadata: dict, row: Any) -> bool:
    """True when a shard's own metadata names the row's video and version (its file name carries both)."""
    return metadata.get("video_id") == str(row["id"]) and bool(metadata.get("fingerprint")) and \
        shard_name(row["id"], metadata["fingerprint"]) == row["shard"]


def shard_problems(shards: ShardStore) -> list[str]:
    """Without a catalog to check them against: the shards that do not verify on their own."""
    problems = []
    for path in sorted(shards.folder.glob("*.safetensors")) if shards.folder.is_dir() else []:
        try:
            shards.verify(path.name)
        except LibraryError as e:
            problems.append(str(e).split(";")[0])
    return problems


def _check_agreement(store: Any) -> list[str]:
    """The published index against the catalog: the same videos, shards and paths, each video's frame count of live
    rows."""
    try:
        manifest = store.index.read_manifest()
    except LibraryError:
        return []  # reported by the manifest check
    done = {row["id"]: row for row in store.catalog.done_rows()}
    if manifest is None:
        return [f"{store.root}: no search index although {len(done)} videos are indexed"] if done else []
    indexed = {int(k): v for k, v in manifest["videos"].items()}
    problems = entry_problems(manifest, done)
    problems += [f"{row['path']}: indexed but not in the search index" for i, row in done.items() if i not in indexed]
    problems += [f"{v['path']}: in the search index but not indexed in the catalog" for i, v in indexed.items()
                 if i not in done]
    problems += [f"{done[i]['path']}: the search index holds another version of it ({v['shard']})"
                 for i, v in indexed.items() if i in done and v["shard"] != done[i]["shard"]]
    try:
        snap = store.index.snapshot()
    except LibraryError:
        return problems  # reported by the index file checks
    rows: dict[int, int] = {}
    for live in snap.frames if snap else []:
        for video_id, (start, end) in live.part.runs.items():
            if live.bitmap is None or live.bitmap[start // 8] >> (start % 8) & 1:  # a video's rows live or die together
                rows[video_id] = rows.get(video_id, 0) + end - start
    problems += [f"{v['path']}: the search index holds {rows.get(i, 0)} rows for its {v['n_frames']} frames"
                 for i, v in indexed.items() if rows.get(i, 0) != v["n_frames"]]
    return problems


def repair_store(store: Any) -> list[str]:
    """Fix what can be fixed in a library open for repair (LibraryStore(..., writer=True, repair=True), which has
    already repaired or rebuilt a damaged catalog); returns what was done, one line each."""
    with storage_errors(store.root):
        done = list(store.catalog_repairs)
        done += [f"{line}; marked for re-indexing ({REINDEX_HINT})" for line in store.recovered]
        store.index.writer_manifest()  # a damaged manifest goes to quarantine/ (if opening the writer did not)
        done += [f"{line}; the index is rebuilt from the shards" for line in store.index.manifests_set_aside]
        rebuild = bool(store.recovered or store.index.manifests_set_aside)
        for row in store.catalog.done_rows():
            found = inspect_shard(store.shards, row)
            if found is not None:
                done.append(_repair_shard(store, row, found))
                rebuild = True  # the index holds the record as it was (its checksum, path) or the shard's rows
            elif row["checksum"] is None:  # a shard from before checksums: whole, so record its header's now
                store.catalog.set_checksum(row["id"], store.shards.header_checksum(row["shard"]))
        if rebuild or not store.index_is_current() or _check_agreement(store):
            manifest = store.compact_index()
            done.append(f"rebuilt the search index from {len(manifest['videos'])} good shards "
                        f"({manifest['n_vectors']} frames)")
    return done


def _repair_shard(store: Any, row: Any, found: ShardFinding) -> str:
    """Fix one shard finding; the line saying what was done (and what the user must do, if anything)."""
    if found.fix == "record":
        metadata = found.metadata or {}
        store.catalog.repair_record(row["id"], metadata.get("path") or row["path"], found.n_frames,
                                    store.shards.header_checksum(row["shard"]))
        return f"{found.line}; repaired the catalog's record from the shard (the shard is kept as it is)"
    store.catalog.mark_pending(row["id"], found.line)
    if found.fix == "missing":
        return f"{found.line}; marked for re-indexing ({REINDEX_HINT})"
    kept = set_aside(store.root, store.shards.folder / row["shard"], found.line)
    gone = "" if Path(row["path"]).is_file() else \
        f"; its video file is gone, so only the copy in {QUARANTINE}/ holds its frames now"
    return f"{found.line}; moved to {kept} and marked for re-indexing ({REINDEX_HINT}){gone}"


def repair_catalog(root: Path, catalog: Catalog) -> str | None:
    """A catalog SQLite opens but whose full integrity check fails (an index entry disagreeing with its row, as a
    changed byte of a path leaves it): a copy goes to quarantine/, then REINDEX rebuilds the indexes from the rows
    (the rows' own damage, such as the path, is then repaired from the shards). Returns what was done; None when
    the catalog is still damaged (then it is rebuilt from the shards)."""
    problems = catalog.integrity_problems()
    if not problems:
        return None
    folder = root / QUARANTINE
    folder.mkdir(exist_ok=True)
    copy = folder / f"{CATALOG}.{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    catalog.db.execute("PRAGMA wal_checkpoint(FULL)")
    shutil.copy2(catalog.path, copy)
    (folder / f"{copy.name}.why.txt").write_text(f"{problems[0]}\n")
    if catalog.reindex():
        return None
    return f"{problems[0]}: re-indexed the catalog's SQLite indexes from its rows (a copy is kept as {copy})"


def rebuild_catalog(root: Path, shards: ShardStore) -> dict:
    """A new catalog from the shards (the writer lock held): one done row per video, from its newest whole shard
    (the one matching the video file as it is now, when there is one). The old catalog is kept beside it; shards
    that do not verify go to quarantine/."""
    path = root / CATALOG
    kept_as = None
    if path.exists():
        kept_as = root / f"{CATALOG}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(path, kept_as)
    for side in SQLITE_SIDE_FILES:
        if Path(f"{path}{side}").exists():
            os.replace(f"{path}{side}", f"{kept_as or path}{side}.old")
    chosen: dict[int, tuple] = {}
    damaged = []
    for shard in sorted(shards.folder.glob("*.safetensors")):
        try:
            metadata, shapes = shards.verify(shard.name)
            video_id, video = int(metadata["video_id"]), metadata["path"]
            current = _fingerprint_or_none(video) == metadata["fingerprint"]
        except (LibraryError, KeyError, ValueError) as e:
            damaged.append(f"{shard}: {e}")
            set_aside(root, shard, f"{shard}: {e}")
            continue
        rank = (current, shard.stat().st_mtime_ns)
        if video_id not in chosen or rank > chosen[video_id][0]:
            chosen[video_id] = (rank, shard, metadata, shapes)
    catalog = Catalog(path, writer=True)
    try:
        for video_id, (_, shard, metadata, shapes) in sorted(chosen.items()):
            info = json.loads(metadata.get("info", "{}"))
            catalog.insert_done(video_id, metadata["path"], metadata["fingerprint"], shard.stat().st_mtime)
            catalog.mark_done(video_id, shard.name, shapes["timestamps_s"][0], info, shards.header_checksum(shard.name))
            catalog.set_meta_once(_dims(shapes, info))
    finally:
        catalog.close()
    return {"videos": len(chosen), "damaged": damaged, "kept_as": kept_as}


def rebuilt_catalog_line(rebuilt: dict) -> str:
    """What a catalog rebuild did, in one line."""
    return f"rebuilt the catalog from {rebuilt['videos']} shards" + (
        f" ({len(rebuilt['damaged'])} damaged shards moved to {QUARANTINE}/)" if rebuilt["damaged"] else "") + (
        f"; the damaged catalog is kept as {rebuilt['kept_as']}" if rebuilt["kept_as"] else "")


def _fingerprint_or_none(path: str) -> str | None:
    try:
        return fingerprint(path)
    except LibraryError:
        return None


def _dims(shapes: dict[str, list[int]], info: dict) -> dict[str, Any]:
    """The library meta a shard fixes: frame-token and embedding sizes (when it holds frames), text embeddings'."""
    dims: dict[str, Any] = {}
    if shapes["timestamps_s"][0]:
        if "frame_tokens" in shapes:
            _, dims["tokens_per_frame"], dims["token_dim"] = shapes["frame_tokens"]
        dims["embed_dim"] = shapes["embeddings"][1]
    if shapes.get("segment_embeddings", [0])[0]:
        dims["text_dim"], dims["text_model"] = shapes["segment_embeddings"][1], info.get("text_model", "")
    return dims
