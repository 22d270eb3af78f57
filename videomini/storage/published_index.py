"""The published index of a library folder: index parts named by one manifest, the only file a reader trusts.

Every video has one live part in the manifest; adding videos writes a small delta part from the new shards only
(index_parts.py), removing one marks its rows dead (index_snapshot.py). Deltas past MAX_DELTAS merge into one;
compaction rebuilds one base from every live shard (dropping dead rows, and retraining when `index_spec_for` names
another size class) when dead rows or deltas pass their fraction, on a size-class change, or on demand
(`videomini library DIR --compact`).

Crash safety, as for every file of the library: part files are written under new names, durably, and only then
published by atomically replacing the manifest; a killed writer leaves unreferenced files that the next writer
deletes, and thresholds still past their limit make the next update finish a killed compaction. A reader keeps
the generation it opened whole: files of the current and the previous generation are never deleted, and open
part files are memory-mapped (an unlinked file stays readable while mapped). Each part file's size and checksum
are recorded in the manifest, and the manifest carries its own; a reader verifies a file the first time it opens
it (a damaged or missing file is a one-line LibraryDamaged naming it, never a result). A writer that finds the
manifest damaged moves it to quarantine/ and rebuilds the index from the shards (the source of every index row).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from videomini.storage.errors import LibraryDamaged, LibraryError, one_line, repair_hint
from videomini.storage.files import checksum_file, set_aside
from videomini.storage.index_parts import IndexSource, PartWriter
from videomini.storage.index_snapshot import OpenPartIndex, Snapshot, video_runs
from videomini.storage.manifest import (
    INDEX_FILE_PATTERNS,
    INDEX_FORMAT_VERSION,
    KINDS,
    MANIFEST,
    MAX_DELTAS,
    compaction_due,
    index_files,
    part_files,
    read_manifest,
    summary,
    write_manifest,
)
from videomini.storage.vector_index import FLAT_MAX_VECTORS, read_index

OPEN_RETRIES = 5  # a writer may publish and delete between a reader's manifest read and file open
ERROR_DETAIL_CHARS = 200


class PublishedIndex:
    """The index files of a library folder: publish and compact parts (writer), open and verify them (readers)."""

    def __init__(self, root: Path, flat_max: int = FLAT_MAX_VECTORS) -> None:
        self.root = root
        self.flat_max = flat_max
        self._snapshot: Snapshot | None = None
        self._open_parts: dict[str, OpenPartIndex] = {}  # index file name -> open part, reused across generations
        self._verified: set[str] = set()  # files this process checked against the manifest's checksums
        self.manifests_set_aside: list[str] = []  # damaged manifests this writer moved to quarantine/ (what and why)

    def read_manifest(self) -> dict | None:
        """The published manifest (older formats read as the current one), None before the first build;
        LibraryDamaged when it is damaged."""
        return read_manifest(self.root)

    def writer_manifest(self) -> dict | None:
        """The manifest a writer builds on: a damaged one is moved to quarantine/ (with why) and the index rebuilt
        from the shards, as if none had been published."""
        try:
            return read_manifest(self.root)
        except LibraryDamaged as e:
            kept = set_aside(self.root, self.root / MANIFEST, str(e))
            self.manifests_set_aside.append(f"{str(e).split(';')[0]}; moved to {kept}")
            return None

    # ------------------------------------------------------------------ writing (the writer lock is held)

    def update(self, source: IndexSource) -> dict:
        """Publish what changed since the published generation -- a delta part from the new or changed videos'
        shards, removed videos' rows marked dead -- then compact when a threshold says so. Nothing changed and
        nothing due: the published manifest, unchanged."""
        started = time.perf_counter()
        previous = self.writer_manifest()
        if previous is None or previous["format_version"] != INDEX_FORMAT_VERSION:
            return self.compact(source)
        published = previous["videos"]
        done = {str(r["id"]): r for r in source.rows}
        changed = [r for key, r in done.items()
                   if (published.get(key, {}).get("shard"), published.get(key, {}).get("version"))
                   != (r["shard"], r["version"])]
        videos = {key: v for key, v in published.items() if key in done}
        if changed or len(videos) != len(published):
            parts = list(previous["parts"])
            deltas = [p for p in parts if p["kind"] == "delta"]
            if len(deltas) >= MAX_DELTAS:  # merge every delta's live videos into the new one
                merged, rebuilt = {p["id"] for p in deltas}, {r["id"] for r in changed}
                changed += [done[key] for key, v in videos.items() if v["part"] in merged and
                            done[key]["id"] not in rebuilt]
                parts = [p for p in parts if p["id"] not in merged]
            if changed:
                changed.sort(key=lambda r: r["id"])
                part, counts = self._writer().build(source, changed, previous["generation"] + 1, parts[0])
                parts.append(part)
                videos.update(counts)
            previous = self._publish(previous, parts, videos, source, started)
        return self.compact(source) if compaction_due(previous, self.flat_max) else previous

    def compact(self, source: IndexSource) -> dict:
        """Rebuild one base part from every done video's shard and publish it (dead rows purged)."""
        started = time.perf_counter()
        previous = self.writer_manifest()
        generation = (previous["generation"] if previous else self._last_generation_on_disk()) + 1
        part, videos = self._writer().build(source, source.rows, generation, None)
        return self._publish(previous, [part], videos, source, started, generation)

    def _writer(self) -> PartWriter:
        return PartWriter(self.root, self.flat_max, lambda record: self._open(record, verify=False).index.quantizer)

    def _last_generation_on_disk(self) -> int:
        """The highest generation any part file on disk carries: a manifest rebuilt after damage never reuses a
        file name (a reader may still map the old file)."""
        numbers = [int(m.group(1)) for f in self.root.glob("*-*.*")
                   if (m := re.match(r"(?:part|seg)-(\d+)\.", f.name))]
        return max(numbers, default=0)

    def _publish(self, previous: dict | None, parts: list[dict], videos: dict[str, dict], source: IndexSource,
                 started: float, generation: int | None = None) -> dict:
        """Replace the manifest: the new generation becomes what every reader opens next."""
        manifest = {"format_version": INDEX_FORMAT_VERSION,
                    "generation": generation or (previous or {}).get("generation", 0) + 1,
                    "parts": parts, "videos": videos, "built_at": time.time(),
                    "build_s": round(time.perf_counter() - started, 3),
                    "previous_files": sorted(index_files(previous)) if previous else []}
        manifest.update(summary(parts, videos, source.dims))
        write_manifest(self.root, manifest)
        return manifest

    def collect_garbage(self) -> None:
        """Delete index files neither the current nor the previous generation names (a reader may still hold the
        previous one); this also removes what a killed writer wrote but never published. A damaged manifest
        names nothing that can be trusted: then nothing is deleted (the next writer rebuilds)."""
        try:
            manifest = self.read_manifest()
        except LibraryDamaged:
            return
        keep = set() if manifest is None else index_files(manifest) | set(manifest.get("previous_files", []))
        for pattern in INDEX_FILE_PATTERNS:
            for f in self.root.glob(pattern):
                if f.name not in keep:
                    f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> Snapshot | None:
        """The published generation (cached until the manifest names a newer one); parts already open stay
        open, so a new delta costs a reader only the delta."""
        for _ in range(OPEN_RETRIES):
            manifest = self.read_manifest()
            if manifest is None:
                return None
            if self._snapshot is not None and self._snapshot.generation == manifest["generation"]:
                return self._snapshot
            try:
                self._snapshot = self._open_snapshot(manifest)
            except FileNotFoundError as e:
                now = self.read_manifest()
                if now is not None and now["generation"] == manifest["generation"]:  # no writer's doing: lost
                    raise LibraryDamaged(f"{self.root / str(e.filename or e)}: index file missing; "
                                         f"{repair_hint(self.root)} (or re-run `videomini index`)") from None
                continue  # published and deleted by a writer since we read the manifest: read it again
            return self._snapshot
        raise LibraryError(f"{self.root}: index changed repeatedly while opening it; retry")

    def _open_snapshot(self, manifest: dict) -> Snapshot:
        videos = {int(k): v for k, v in manifest["videos"].items()}
        parts: dict[str, list] = {kind: [] for kind in KINDS}
        for part in manifest["parts"]:
            for kind in KINDS:
                if part.get(kind):
                    parts[kind].append(self._open(part[kind]).live(part["id"], videos))
        in_use = {p.part.index_file for kind in KINDS for p in parts[kind]}
        self._open_parts = {name: part for name, part in self._open_parts.items() if name in in_use}
        return Snapshot(manifest["generation"], manifest, videos, parts["frames"], parts["text"], {})

    def problems(self, deep: bool = True) -> list[str]:
        """What is wrong with the manifest and the published parts' files, one line each: a damaged manifest,
        files missing, another size than recorded, or (deep: each file read whole) another checksum. [] when
        whole."""
        try:
            manifest = self.read_manifest()
        except LibraryDamaged as e:
            return [str(e).split(";")[0]]
        found = []
        for part in (manifest or {}).get("parts", []):
            for kind in KINDS:
                for name in part_files(part.get(kind)):
                    try:
                        self.verify_file(part[kind], name, deep)
                    except FileNotFoundError:
                        found.append(f"{self.root / name}: index file missing")
                    except LibraryDamaged as e:
                        found.append(str(e).split(";")[0])
        return found

    def verify_file(self, record: dict, name: str, deep: bool = True) -> None:
        """Raise FileNotFoundError when index file `name` is missing, LibraryDamaged when its size (or, deep, its
        checksum) differs from what its part's manifest record holds. Part files are never rewritten, so the
        file opened next is the one verified."""
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(2, "index file missing", str(path))
        recorded = record.get("files", {}).get(name)  # format-1 generations recorded none
        if recorded is None:
            return
        if path.stat().st_size != recorded["size"] or (
                deep and "checksum" in recorded and checksum_file(path) != recorded["checksum"]):
            raise LibraryDamaged(f"{path}: index file damaged (size or checksum differs from the manifest's); "
                                 f"{repair_hint(self.root)} (or re-run `videomini index`)")

    def _open(self, record: dict, verify: bool = True) -> OpenPartIndex:
        """One kind of one part, opened once per process; verify: its files checked whole first (a writer
        reading only the base's centroids skips that: the readers and `library --check` verify)."""
        name = record["index_file"]
        if verify and name not in self._verified:
            for file in part_files(record):
                self.verify_file(record, file)
            self._verified.add(name)
        if name not in self._open_parts:
            try:
                index = read_index(self.root / name, record["factory"].startswith("IVF"))
                ids = np.load(self.root / record["ids_file"], mmap_mode="r", allow_pickle=False)
            except RuntimeError as e:
                if not (self.root / name).exists() or "No such file" in str(e):
                    raise FileNotFoundError(name) from None  # deleted by a writer since we read the manifest
                raise LibraryDamaged(f"{self.root / name}: cannot read index part "
                                     f"({one_line(str(e), ERROR_DETAIL_CHARS)}); {repair_hint(self.root)}") from None
            if index.ntotal != len(ids) or len(ids) != record["n_vectors"]:
                raise LibraryDamaged(f"{self.root / name}: index part does not match its ids; "
                                     f"{repair_hint(self.root)}")
            self._open_parts[name] = OpenPartIndex(name, index, ids, record["nprobe"], video_runs(ids))
        return self._open_parts[name]
