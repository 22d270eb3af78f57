"""The index manifest, DIR/index.json: the one small file a reader trusts, naming the published index parts.

    {"format_version": 3, "generation": G, "parts": [{"id", "kind": "base"|"delta", "frames": {...}, "text": {...}}],
     "videos": {"<id>": {"path", "shard", "version", "n_frames", "n_text", "part", "checksum"}}, summary figures,
     "previous_files": [...], "checksum": "crc32:..."}

The manifest carries its own checksum (of its canonical JSON without the "checksum" key), so a flipped byte, a
truncation or a hand edit that still parses is damage, not a wrong answer; `read_manifest` raises LibraryDamaged
with the repair hint for every kind of damage (garbage, `{}`, a missing key), never a KeyError. Formats 1 (one index
per generation) and 2 (the same layout under the names "segments" / "segment") are read as format 3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videomini.storage.errors import LibraryDamaged, repair_hint
from videomini.storage.files import atomic_write, checksum_bytes, durability_point
from videomini.storage.vector_index import FLAT_MAX_VECTORS, index_spec_for

INDEX_FORMAT_VERSION = 3
MANIFEST = "index.json"
PART_PREFIX = "part-"
INDEX_FILE_PATTERNS = (f"{PART_PREFIX}*", "seg-*", "index-*.faiss", "index_ids-*.npy", "text_index-*.faiss",
                       "text_ids-*.npy")  # "seg-*": format-2 parts; the last four: format-1 generations
MAX_DELTAS = 8  # more delta parts than this merge into one (each costs a search call)
COMPACT_DELTA_FRACTION = 0.25  # deltas holding more rows than this fraction of the base: compact
COMPACT_DEAD_FRACTION = 0.2  # dead rows past this fraction of all rows: compact (purge them)
KINDS = ("frames", "text")  # the two vector spaces: CLIP frame embeddings, MiniLM text-segment embeddings
COUNT_KEY = {"frames": "n_frames", "text": "n_text"}  # a video's row count of each kind, in the manifest
REQUIRED = {"generation": int, "parts": list, "videos": dict}
VIDEO_KEYS = ("path", "shard", "part", "n_frames")


def manifest_checksum(manifest: dict) -> str:
    """The checksum of a manifest's canonical JSON (sorted keys, no "checksum" key)."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return checksum_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def write_manifest(root: Path, manifest: dict) -> None:
    """Publish `manifest` (checksummed) by atomically replacing DIR/index.json."""
    manifest["checksum"] = manifest_checksum(manifest)
    atomic_write(root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    durability_point("manifest_published")


def read_manifest(root: Path) -> dict | None:
    """The published manifest as format 3, None before the first build; LibraryDamaged when it cannot be trusted."""
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise _damaged(root, f"not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise _damaged(root, "not a JSON object")
    version = manifest.get("format_version")
    if version == INDEX_FORMAT_VERSION or "checksum" in manifest:
        if manifest.get("checksum") != manifest_checksum(manifest):
            raise _damaged(root, "checksum mismatch: changed since it was written")
    elif version not in (1, 2):
        raise _damaged(root, f"unknown format {version!r}")
    try:
        manifest = _upgrade_v1(manifest) if version == 1 else _upgrade_v2(manifest) if version == 2 else manifest
        _validate(manifest)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _damaged(root, f"malformed ({type(e).__name__}: {e})") from None
    return manifest


def _damaged(root: Path, why: str) -> LibraryDamaged:
    return LibraryDamaged(f"{root / MANIFEST}: index manifest damaged ({why}); {repair_hint(root)} to rebuild it "
                          "(or re-run `videomini index`)")


def _validate(manifest: dict) -> None:
    """Raise KeyError / TypeError when a key a reader uses is missing or of another type."""
    for key, kind in REQUIRED.items():
        if not isinstance(manifest[key], kind):
            raise TypeError(f"{key!r} is not a {kind.__name__}")
    for key, video in manifest["videos"].items():
        int(key)
        for name in VIDEO_KEYS:
            video[name]
    for part in manifest["parts"]:
        part["id"]
        for kind in KINDS:
            if part.get(kind):
                part[kind]["index_file"], part[kind]["ids_file"], part[kind]["n_vectors"]


def part_files(record: dict | None) -> tuple[str, ...]:
    """The files of one kind of one part (none when the part holds no rows of that kind)."""
    return (record["index_file"], record["ids_file"]) if record else ()


def index_files(manifest: dict) -> set[str]:
    """Every file the manifest's parts consist of."""
    return {name for part in manifest["parts"] for kind in KINDS for name in part_files(part.get(kind))}


def entry_problems(manifest: dict, rows: dict[int, Any]) -> list[str]:
    """Manifest entries that contradict the catalog (`rows`: video id -> done row with path and shard): a video
    whose shard the catalog records under another path, or a shard named for another video."""
    found = []
    for key, video in manifest["videos"].items():
        if not str(video["shard"]).startswith(f"{int(key)}-"):
            found.append(f"{MANIFEST}: video {key}'s entry names shard {video['shard']} of another video")
        row = rows.get(int(key))
        if row is not None and row["shard"] == video["shard"] and row["path"] != video["path"]:
            found.append(f"{MANIFEST}: video {key} is {video['path']!r} in the index but {row['path']!r} in the "
                         "catalog")
    return found


def summary(parts: list[dict], videos: dict[str, dict], dims: dict[str, int]) -> dict:
    """The manifest's headline figures: live and dead rows of each kind, the base's factory, dimensions."""
    out: dict[str, Any] = {"n_parts": len(parts)}
    for kind, prefix in (("frames", ""), ("text", "text_")):
        base = parts[0].get(kind) or {} if parts else {}
        live = sum(v.get(COUNT_KEY[kind], 0) for v in videos.values())
        total = sum((p.get(kind) or {}).get("n_vectors", 0) for p in parts)
        out.update({f"{prefix}n_vectors": int(live), f"{prefix}n_deleted": int(total - live),
                    f"{prefix}factory": base.get("factory", "Flat"), f"{prefix}nprobe": base.get("nprobe"),
                    f"{prefix}delta_vectors": int(total - base.get("n_vectors", 0))})
    out["embed_dim"], out["text_dim"] = dims["frames"], dims["text"]
    return out


def compaction_due(manifest: dict, flat_max: int = FLAT_MAX_VECTORS) -> bool:
    """True when the parts should merge into a new base: a size class changed (`index_spec_for`), dead rows
    past COMPACT_DEAD_FRACTION of all rows, or, over an IVF base (whose centroids were trained without the
    deltas' vectors), delta rows past COMPACT_DELTA_FRACTION of the base's. Exact (Flat) parts answer the same
    however many there are, so they only merge (MAX_DELTAS)."""
    for prefix in ("", "text_"):
        live, dead = manifest[f"{prefix}n_vectors"], manifest[f"{prefix}n_deleted"]
        deltas, factory = manifest[f"{prefix}delta_vectors"], manifest[f"{prefix}factory"]
        base = live + dead - deltas
        if live and _size_class_changed(factory, index_spec_for(live, flat_max).factory):
            return True
        if dead > COMPACT_DEAD_FRACTION * (live + dead):
            return True
        if factory != "Flat" and deltas > COMPACT_DELTA_FRACTION * max(base, 1):
            return True
    return False


def _size_class_changed(factory: str, wanted: str) -> bool:
    """Exact vs IVF, or an IVF whose list count is off by a factor of two or more from what its size calls for
    (past FLAT_MAX_VECTORS the count is a power of two, so any change; below, a tiny IVF's follows every row)."""
    if "Flat" in (factory, wanted):
        return factory != wanted
    nlist, wanted_nlist = (int(f.split(",")[0].removeprefix("IVF")) for f in (factory, wanted))
    return max(nlist, wanted_nlist) >= 2 * min(nlist, wanted_nlist)


def _upgrade_v2(manifest: dict) -> dict:
    """A format-2 manifest: the same layout, its parts called "segments" (and each video's "segment")."""
    videos = {k: {**{n: x for n, x in v.items() if n != "segment"}, "part": v["segment"]}
              for k, v in manifest["videos"].items()}
    rest = {k: v for k, v in manifest.items() if k not in ("segments", "n_segments", "videos")}
    return {**rest, "format_version": INDEX_FORMAT_VERSION, "parts": manifest["segments"], "videos": videos,
            "n_parts": manifest.get("n_segments", len(manifest["segments"]))}


def _upgrade_v1(manifest: dict) -> dict:
    """A format-1 manifest (one index per generation) read as one base part; the next update compacts it."""
    part_id = f"v1-{manifest['generation']:06d}"
    part = {"id": part_id, "kind": "base"}
    for kind, prefix in (("frames", ""), ("text", "text_")):
        part[kind] = {"factory": manifest.get(f"{prefix}factory") or "Flat", "nprobe": manifest.get(
            f"{prefix}nprobe"), "n_vectors": manifest.get(f"{prefix}n_vectors", 0), "index_file": manifest.get(
            f"{prefix}index_file"), "ids_file": manifest.get(f"{prefix}ids_file")} if manifest.get(
            f"{prefix}index_file") else None
    videos = {k: {**v, "part": part_id} for k, v in manifest["videos"].items()}
    return {**manifest, "parts": [part], "videos": videos, "previous_files": [], "n_deleted": 0,
            "text_n_deleted": 0, "delta_vectors": 0, "text_delta_vectors": 0, "n_parts": 1}
