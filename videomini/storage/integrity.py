"""Check and repair a whole library: `videomini library DIR --check` / `--repair`.

check: SQLite's integrity_check of the catalog, every done video's shard read whole against its checksums (header
in the catalog, tensors in the shard), every index file against the manifest's checksums, and agreement: the
index holds exactly the catalog's done videos, with as many rows per video as its shard has frames.

repair (the writer lock held): a damaged or lost catalog is rebuilt from the shards (each holds its video's path,
fingerprint, model, timings and signals; the damaged file is kept beside it), videos whose shard is missing or
damaged go back to `pending` so the next `index` re-does them from their video files, and the index is rebuilt
from the good shards when it is missing, damaged or disagrees with the catalog.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from videomini.storage.catalog import CATALOG, Catalog, fingerprint
from videomini.storage.errors import LibraryDamaged, LibraryError, storage_errors
from videomini.storage.shards import ShardStore

SQLITE_SIDE_FILES = ("-wal", "-shm")


def check_store(store: Any) -> list[str]:
    """Everything wrong with an open library (a LibraryStore), one line each naming the file; [] when it is
    whole. Only reads (works on a read-only library)."""
    try:
        with storage_errors(store.root):
            problems = store.catalog.integrity_problems()
            for row in store.catalog.done_rows():
                problems += _check_shard(store, row)
    except LibraryDamaged as e:  # the catalog opened but cannot be read through
        return [str(e)] + shard_problems(store.shards)
    with storage_errors(store.root):
        return problems + store.index.problems() + _check_agreement(store)


def _check_shard(store: Any, row: Any) -> list[str]:
    """A done video's shard: present, whole, and the one the catalog row describes."""
    shard = store.shards.folder / row["shard"]
    if not store.shards.exists(row["shard"]):
        return [f"{shard}: shard missing ({row['path']})"]
    try:
        metadata, shapes = store.shards.verify(row["shard"], row["checksum"])
    except LibraryError as e:
        return [str(e).split(";")[0] + f" ({row['path']})"]
    if metadata.get("video_id") != str(row["id"]) or shapes["timestamps_s"][0] != row["n_frames"]:
        return [f"{shard}: shard does not match the catalog (video {row['id']}, {row['n_frames']} frames)"]
    return []


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
    """The published index against the catalog: the same videos and shards, each video's frame count of live rows."""
    manifest = store.index.read_manifest()
    done = {row["id"]: row for row in store.catalog.done_rows()}
    if manifest is None:
        return [f"{store.root}: no search index although {len(done)} videos are indexed"] if done else []
    indexed = {int(k): v for k, v in manifest["videos"].items()}
    problems = [f"{row['path']}: indexed but not in the search index" for i, row in done.items() if i not in indexed]
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
    already rebuilt a damaged catalog); returns what was done, one line each."""
    with storage_errors(store.root):
        done = []
        if store.catalog_rebuilt is not None:
            rebuilt = store.catalog_rebuilt
            done.append(f"rebuilt the catalog from {rebuilt['videos']} shards" + (
                f" ({len(rebuilt['damaged'])} damaged shards left out)" if rebuilt["damaged"] else "") + (
                f"; the damaged catalog is kept as {rebuilt['kept_as']}" if rebuilt["kept_as"] else ""))
        done += [f"{line}; marked for re-indexing (re-run `videomini index` on it)" for line in store.recovered]
        for row in store.catalog.done_rows():
            problem = _check_shard(store, row)
            if problem:
                store.catalog.mark_pending(row["id"], problem[0])
                done.append(f"{problem[0]}; marked for re-indexing (re-run `videomini index` on it)")
            elif row["checksum"] is None:  # a shard from before checksums: whole, so record its header's now
                store.catalog.set_checksum(row["id"], store.shards.header_checksum(row["shard"]))
        if done or not store.index_is_current() or _check_agreement(store):
            manifest = store.compact_index()
            done.append(f"rebuilt the search index from {len(manifest['videos'])} good shards "
                        f"({manifest['n_vectors']} frames)")
    return done


def rebuild_catalog(root: Path, shards: ShardStore) -> dict:
    """A new catalog from the shards (the writer lock held): one done row per video, from its newest whole shard
    (the one matching the video file as it is now, when there is one). The old catalog is kept beside it."""
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


def _fingerprint_or_none(path: str) -> str | None:
    try:
        return fingerprint(path)
    except LibraryError:
        return None


def _dims(shapes: dict[str, list[int]], info: dict) -> dict[str, Any]:
    """The library meta a shard fixes: frame-token and embedding sizes (when it holds frames), text embeddings'."""
    dims: dict[str, Any] = {}
    if shapes["timestamps_s"][0]:
        _, dims["tokens_per_frame"], dims["token_dim"] = shapes["frame_tokens"]
        dims["embed_dim"] = shapes["embeddings"][1]
    if shapes.get("segment_embeddings", [0])[0]:
        dims["text_dim"], dims["text_model"] = shapes["segment_embeddings"][1], info.get("text_model", "")
    return dims

