"""The published index: a list of immutable segments named by one small manifest, the only file a reader trusts.

    DIR/index.json                     manifest: generation, segments, each video's live segment, sizes, checksums
    DIR/seg-<n>.frames.faiss           a segment's FAISS index over frame embeddings (inner product = cosine)
    DIR/seg-<n>.frames.ids.npy         row -> (video_id, frame_idx, timestamp_s)
    DIR/seg-<n>.text.faiss / .ids.npy  the same for speech / on-screen text segments (video_id, segment_idx, start, end)

A segment is written once and never changed. The base segment holds the library as of its last compaction (IVF
past FLAT_MAX_VECTORS); adding videos writes a small delta segment from the new shards only (Flat, or past
FLAT_MAX_VECTORS an IVF sharing the base's trained centroids, so it needs no training). Every video has one live
segment in the manifest; its rows in any other segment are dead -- a removed video, or the old version of a changed
one -- and a search filters them out (faiss.IDSelectorBitmap) and merges the segments' results by score. Deltas
past MAX_DELTAS merge into one; compaction rebuilds one base from every live shard (dropping dead rows, and
retraining when `index_spec_for` names another size class) when dead rows or deltas pass their fraction, on a
size-class change, or on demand (`videomini library DIR --compact`).

Crash safety, as for every file of the library: segment files are written under new names, durably, and only then
published by atomically replacing the manifest; a killed writer leaves unreferenced files that the next writer
deletes, and thresholds still past their limit make the next update finish a killed compaction. A reader keeps
the generation it opened whole: files of the current and the previous generation are never deleted, and open
segment files are memory-mapped (an unlinked file stays readable while mapped). Each segment file's size and
checksum are recorded in the manifest; a reader verifies a file the first time it opens it (a damaged or missing
file is a one-line LibraryDamaged naming it, never a result), `problems()` lists what is wrong for `library --check`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from videomini.storage.errors import LibraryDamaged, LibraryError, one_line, repair_hint
from videomini.storage.files import atomic_write, checksum_file, durability_point
from videomini.storage.hits import Hit, TextHit
from videomini.storage.vector_index import (ADD_CHUNK, FLAT_MAX_VECTORS, IndexSpec, index_spec_for, new_index,
                                            read_index, search_index, training_positions, vectors_at, write_index)

INDEX_FORMAT_VERSION = 2
MANIFEST = "index.json"
SEGMENT_PREFIX = "seg-"
INDEX_FILE_PATTERNS = (f"{SEGMENT_PREFIX}*", "index-*.faiss", "index_ids-*.npy", "text_index-*.faiss",
                       "text_ids-*.npy")  # the last four: format-1 generations
MAX_DELTAS = 8  # more delta segments than this merge into one (each costs a search call)
COMPACT_DELTA_FRACTION = 0.25  # deltas holding more rows than this fraction of the base: compact
COMPACT_DEAD_FRACTION = 0.2  # dead rows past this fraction of all rows: compact (purge them)
OPEN_RETRIES = 5  # a writer may publish and delete between a reader's manifest read and file open
ERROR_DETAIL_CHARS = 200

IDS_DTYPE = np.dtype([("video_id", "<i8"), ("frame_idx", "<i8"), ("timestamp_s", "<f8")])
TEXT_IDS_DTYPE = np.dtype([("video_id", "<i8"), ("segment_idx", "<i8"), ("start_s", "<f8"), ("end_s", "<f8")])
KINDS = ("frames", "text")  # the two vector spaces: CLIP frame embeddings, MiniLM text-segment embeddings
COUNT_KEY = {"frames": "n_frames", "text": "n_text"}  # a video's row count of each kind, in the manifest


# ----------------------------------------------------------------------------------------------- writing


class IndexSource(NamedTuple):
    """What segments are built from: the done videos (catalog rows, id order) and a reader of their shards."""

    rows: list[dict]  # id, path, shard, n_frames, version
    read_vectors: Callable[[str], dict[str, np.ndarray]]  # shard name -> embeddings, timestamps_s, segment_*
    dims: dict[str, int]  # kind -> embedding dimension


@dataclass
class _PartBuilder:
    """One kind (frames or text) of a segment under construction."""

    kind: str
    index: Any
    spec: IndexSpec
    ids: list[np.ndarray] = field(default_factory=list)
    pending: list[np.ndarray] = field(default_factory=list)  # vectors waiting for a chunked add
    n_pending: int = 0

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.pending.append(vectors)
        self.ids.append(ids)
        self.n_pending += len(vectors)
        if self.n_pending >= ADD_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.index.add(np.ascontiguousarray(np.concatenate(self.pending), dtype=np.float32))
        self.pending, self.n_pending = [], 0


def _frame_ids(video_id: int, times: np.ndarray) -> np.ndarray:
    rec = np.empty(len(times), dtype=IDS_DTYPE)
    rec["video_id"], rec["frame_idx"], rec["timestamp_s"] = video_id, np.arange(len(times)), times
    return rec


def _text_ids(video_id: int, times: np.ndarray) -> np.ndarray:
    rec = np.empty(len(times), dtype=TEXT_IDS_DTYPE)
    rec["video_id"], rec["segment_idx"] = video_id, np.arange(len(times))
    rec["start_s"], rec["end_s"] = times[:, 0], times[:, 1]
    return rec


class SegmentedIndex:
    """The index files of a library folder: publish and compact segments (writer), open and search (readers)."""

    def __init__(self, root: Path, flat_max: int = FLAT_MAX_VECTORS) -> None:
        self.root = root
        self.flat_max = flat_max
        self._snapshot: Snapshot | None = None
        self._open_parts: dict[str, OpenPart] = {}  # index file name -> open part, reused across generations
        self._verified: set[str] = set()  # files this process checked against the manifest's checksums

    def read_manifest(self) -> dict | None:
        """The published manifest (format 1 read as one base segment), None before the first build."""
        try:
            manifest = json.loads((self.root / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LibraryError(f"{self.root / MANIFEST}: unreadable index manifest: {e}") from None
        return manifest if manifest.get("format_version") == INDEX_FORMAT_VERSION else _upgrade(manifest)

    # ------------------------------------------------------------------ writing (the writer lock is held)

    def update(self, source: IndexSource) -> dict:
        """Publish what changed since the published generation -- a delta segment from the new or changed videos'
        shards, removed videos' rows marked dead -- then compact when a threshold says so. Nothing changed and
        nothing due: the published manifest, unchanged."""
        started = time.perf_counter()
        previous = self.read_manifest()
        if previous is None or previous["format_version"] != INDEX_FORMAT_VERSION:
            return self.compact(source)
        published = previous["videos"]
        done = {str(r["id"]): r for r in source.rows}
        changed = [r for key, r in done.items()
                   if (published.get(key, {}).get("shard"), published.get(key, {}).get("version"))
                   != (r["shard"], r["version"])]
        videos = {key: v for key, v in published.items() if key in done}
        if changed or len(videos) != len(published):
            segments = list(previous["segments"])
            deltas = [s for s in segments if s["kind"] == "delta"]
            if len(deltas) >= MAX_DELTAS:  # merge every delta's live videos into the new one
                merged, rebuilt = {s["id"] for s in deltas}, {r["id"] for r in changed}
                changed += [done[key] for key, v in videos.items() if v["segment"] in merged and
                            done[key]["id"] not in rebuilt]
                segments = [s for s in segments if s["id"] not in merged]
            if changed:
                changed.sort(key=lambda r: r["id"])
                segment, counts = self._build_segment(source, changed, previous["generation"] + 1, segments[0])
                segments.append(segment)
                videos.update(counts)
            previous = self._publish(previous, segments, videos, source, started)
        return self.compact(source) if compaction_due(previous, self.flat_max) else previous

    def compact(self, source: IndexSource) -> dict:
        """Rebuild one base segment from every done video's shard and publish it (dead rows purged)."""
        started = time.perf_counter()
        previous = self.read_manifest()
        generation = (previous["generation"] if previous else 0) + 1
        segment, videos = self._build_segment(source, source.rows, generation, None)
        return self._publish(previous, [segment], videos, source, started)

    def _build_segment(self, source: IndexSource, rows: list[dict], generation: int,
                       base: dict | None) -> tuple[dict, dict[str, dict]]:
        """Write one segment's files from `rows`' shards: a base (base None) sized by `index_spec_for`, or a delta
        sharing `base`'s trained centroids past `flat_max`. Returns its manifest record and its videos' entries."""
        seg_id = f"{SEGMENT_PREFIX}{generation:06d}"
        n_frames = sum(r["n_frames"] for r in rows)
        # a small build reads each shard once; a large one (a compaction) reads them twice rather than hold them
        stored = {r["shard"]: source.read_vectors(r["shard"]) for r in rows} if n_frames <= ADD_CHUNK else None
        builders = {"frames": self._part_builder("frames", n_frames, source, base)}
        if builders["frames"] is not None and not builders["frames"].index.is_trained:
            self._train(builders["frames"], rows, source, stored)
        videos, text_vectors, text_ids = {}, [], []
        for r in rows:
            vectors = stored[r["shard"]] if stored is not None else source.read_vectors(r["shard"])
            emb, times = vectors["embeddings"], vectors["timestamps_s"]
            if len(times) != r["n_frames"] or (len(times) and emb.shape[1] != source.dims["frames"]):
                raise LibraryError(f"{r['shard']}: shard does not match the catalog")
            if len(times):
                builders["frames"].add(emb, _frame_ids(r["id"], times))
            n_text = len(vectors.get("segment_times_s", ()))
            if n_text:
                text_vectors.append(vectors["segment_embeddings"])
                text_ids.append(_text_ids(r["id"], vectors["segment_times_s"]))
            videos[str(r["id"])] = {"path": r["path"], "shard": r["shard"], "version": r["version"],
                                    "n_frames": r["n_frames"], "n_text": n_text, "segment": seg_id,
                                    "checksum": r.get("checksum")}
        if text_ids:
            text = np.concatenate(text_vectors)
            builders["text"] = self._part_builder("text", len(text), source, base)
            if not builders["text"].index.is_trained:
                builders["text"].index.train(text[training_positions(builders["text"].index, len(text))])
            builders["text"].add(text, np.concatenate(text_ids))
        record = {"id": seg_id, "kind": "base" if base is None else "delta"}
        for kind in KINDS:
            record[kind] = self._write_part(seg_id, builders.get(kind))
        durability_point("index_files_written")
        return record, videos

    def _part_builder(self, kind: str, n: int, source: IndexSource, base: dict | None) -> _PartBuilder | None:
        if n == 0:
            return None
        spec = index_spec_for(n, self.flat_max)
        base_part = (base or {}).get(kind)
        if base_part is not None and spec.factory != "Flat" and base_part["factory"].startswith("IVF"):
            quantizer = self._open(base_part, verify=False).index.quantizer  # the base's trained centroids
            spec = IndexSpec(f"IVF{quantizer.ntotal},Flat", base_part["nprobe"])
            return _PartBuilder(kind, new_index(source.dims[kind], spec, quantizer), spec)
        return _PartBuilder(kind, new_index(source.dims[kind], spec), spec)

    @staticmethod
    def _train(builder: _PartBuilder, rows: list[dict], source: IndexSource, stored: dict | None) -> None:
        """Train an IVF on the fixed-seed sample of the rows' frame embeddings (a first pass over the shards that
        keeps only the sampled rows, so a million frames never sit in memory twice)."""
        n = sum(r["n_frames"] for r in rows)
        positions = training_positions(builder.index, n)
        sample, start = [], 0
        for r in rows:
            end = start + r["n_frames"]
            lo, hi = np.searchsorted(positions, [start, end])
            if hi > lo:
                emb = (stored[r["shard"]] if stored is not None else source.read_vectors(r["shard"]))["embeddings"]
                sample.append(emb[positions[lo:hi] - start])
            start = end
        builder.index.train(np.ascontiguousarray(np.concatenate(sample), dtype=np.float32))

    def _write_part(self, seg_id: str, builder: _PartBuilder | None) -> dict | None:
        if builder is None:
            return None
        builder.flush()
        ids = np.concatenate(builder.ids)
        index_file, ids_file = f"{seg_id}.{builder.kind}.faiss", f"{seg_id}.{builder.kind}.ids.npy"
        files = {index_file: write_index(builder.index, self.root / index_file),
                 ids_file: atomic_write(self.root / ids_file, lambda f: np.save(f, ids, allow_pickle=False))}
        return {"factory": builder.spec.factory, "nprobe": builder.spec.nprobe, "n_vectors": int(len(ids)),
                "index_file": index_file, "ids_file": ids_file,
                "files": {name: digest._asdict() for name, digest in files.items()}}

    def _publish(self, previous: dict | None, segments: list[dict], videos: dict[str, dict], source: IndexSource,
                 started: float) -> dict:
        """Replace the manifest: the new generation becomes what every reader opens next."""
        manifest = {"format_version": INDEX_FORMAT_VERSION, "generation": (previous or {}).get("generation", 0) + 1,
                    "segments": segments, "videos": videos, "built_at": time.time(),
                    "build_s": round(time.perf_counter() - started, 3),
                    "previous_files": sorted(segment_files(previous)) if previous else []}
        manifest.update(summary(segments, videos, source.dims))
        atomic_write(self.root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        durability_point("manifest_published")
        return manifest

    def collect_garbage(self) -> None:
        """Delete index files neither the current nor the previous generation names (a reader may still hold the
        previous one); this also removes what a killed writer wrote but never published."""
        manifest = self.read_manifest()
        keep = set() if manifest is None else segment_files(manifest) | set(manifest["previous_files"])
        for pattern in INDEX_FILE_PATTERNS:
            for f in self.root.glob(pattern):
                if f.name not in keep:
                    f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> Snapshot | None:
        """The published generation (cached until the manifest names a newer one); segments already open stay
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
        parts: dict[str, list[LivePart]] = {kind: [] for kind in KINDS}
        for segment in manifest["segments"]:
            for kind in KINDS:
                if segment.get(kind):
                    part = self._open(segment[kind])
                    parts[kind].append(part.live(segment["id"], videos, manifest["generation"]))
        in_use = {p.part.index_file for kind in KINDS for p in parts[kind]}
        self._open_parts = {name: part for name, part in self._open_parts.items() if name in in_use}
        return Snapshot(manifest["generation"], manifest, videos, parts["frames"], parts["text"], {})

    def problems(self, deep: bool = True) -> list[str]:
        """What is wrong with the published segments' files, one line each: missing, another size than recorded,
        or (deep: each file read whole) another checksum. [] when whole."""
        manifest = self.read_manifest()
        found = []
        for segment in (manifest or {}).get("segments", []):
            for kind in KINDS:
                for name in _part_files(segment.get(kind)):
                    try:
                        self.verify_file(segment[kind], name, deep)
                    except FileNotFoundError:
                        found.append(f"{self.root / name}: index file missing")
                    except LibraryDamaged as e:
                        found.append(str(e).split(";")[0])
        return found

    def verify_file(self, record: dict, name: str, deep: bool = True) -> None:
        """Raise FileNotFoundError when index file `name` is missing, LibraryDamaged when its size (or, deep, its
        checksum) differs from what its part's manifest record holds. Segment files are never rewritten, so the
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

    def _open(self, record: dict, verify: bool = True) -> OpenPart:
        """One part of a segment, opened once per process; verify: its files checked whole first (a writer
        reading only the base's centroids skips that: the readers and `library --check` verify)."""
        name = record["index_file"]
        if verify and name not in self._verified:
            for file in _part_files(record):
                self.verify_file(record, file)
            self._verified.add(name)
        if name not in self._open_parts:
            try:
                index = read_index(self.root / name, record["factory"].startswith("IVF"))
                ids = np.load(self.root / record["ids_file"], mmap_mode="r", allow_pickle=False)
            except RuntimeError as e:
                if not (self.root / name).exists() or "No such file" in str(e):
                    raise FileNotFoundError(name) from None  # deleted by a writer since we read the manifest
                raise LibraryError(f"{self.root / name}: cannot read index segment: "
                                   f"{one_line(str(e), ERROR_DETAIL_CHARS)}") from None
            if index.ntotal != len(ids) or len(ids) != record["n_vectors"]:
                raise LibraryError(f"{self.root / name}: index segment does not match its ids")
            self._open_parts[name] = OpenPart(name, index, ids, record["nprobe"], _video_runs(ids))
        return self._open_parts[name]

    @staticmethod
    def search(snap: Snapshot, queries: np.ndarray, top_k: int, nprobe: int | None = None) -> list[list[Hit]]:
        """Nearest frames of unit-length `queries` (Q, D) over every segment of one snapshot, best first."""
        out = []
        for matches in _merged(snap.frames, queries, top_k, nprobe):
            vectors = _hit_vectors(matches)  # search calibrates each hit against its own vector
            hits = []
            for (score, part, row), vector in zip(matches, vectors):
                rec = part.ids[row]
                video_id = int(rec["video_id"])
                hits.append(Hit(snap.videos[video_id]["path"], float(rec["timestamp_s"]), int(rec["frame_idx"]),
                                score, video_id, vector))
            out.append(hits)
        return out

    @staticmethod
    def sample(snap: Snapshot, kind: str, n: int, seed: int = 0) -> np.ndarray:
        """Up to `n` live vectors of the snapshot's "frames" or "text" parts, drawn at random with a fixed seed
        (each part in proportion to its live rows)."""
        parts = [p for p in (snap.frames if kind == "frames" else snap.text) if p.n_live]
        total = sum(p.n_live for p in parts)
        rng = np.random.default_rng(seed)
        out = [np.zeros((0, 1), np.float32)] if not parts else []
        for live in parts:
            rows = np.arange(len(live.part.ids)) if live.bitmap is None else np.flatnonzero(
                np.unpackbits(live.bitmap, bitorder="little")[:len(live.part.ids)])
            rows = np.sort(rng.choice(rows, size=min(len(rows), max(1, round(n * live.n_live / total))),
                                      replace=False))
            out.append(vectors_at(live.part.index, rows))
        return np.concatenate(out) if len(out) > 1 else out[0]

    @staticmethod
    def search_text(snap: Snapshot, query: np.ndarray, top_k: int,
                    segment_texts: Callable[[str], list]) -> list[TextHit]:
        """Text segments nearest a unit-length query (1, E); `segment_texts(shard)` reads a shard's texts."""
        hits = []
        for score, part, row in _merged(snap.text, query, top_k, None)[0]:
            rec = part.ids[row]
            video_id = int(rec["video_id"])
            if video_id not in snap.segment_texts:  # read once per snapshot, from the shard's metadata
                snap.segment_texts[video_id] = [tuple(x) for x in segment_texts(snap.videos[video_id]["shard"])]
            source, text = snap.segment_texts[video_id][int(rec["segment_idx"])]
            hits.append(TextHit(snap.videos[video_id]["path"], float(rec["start_s"]), float(rec["end_s"]), source,
                                text, score, video_id, vectors_at(part.index, np.array([row]))[0]))
        return hits


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class OpenPart:
    """One kind of one segment, open for search: immutable, so shared by every snapshot that names it."""

    index_file: str
    index: Any
    ids: np.ndarray  # IDS_DTYPE or TEXT_IDS_DTYPE, memory-mapped
    nprobe: int | None
    runs: dict[int, tuple[int, int]]  # video id -> its rows [start, end) in this segment

    def live(self, seg_id: str, videos: dict[int, dict], generation: int) -> LivePart:
        """This part as one generation sees it: rows of videos whose live segment is another one are dead."""
        dead = [(a, b) for video_id, (a, b) in self.runs.items()
                if videos.get(video_id, {}).get("segment") != seg_id]
        if not dead:
            return LivePart(self, None, len(self.ids))
        alive = np.ones(len(self.ids), bool)
        for a, b in dead:
            alive[a:b] = False
        return LivePart(self, np.packbits(alive, bitorder="little"), int(alive.sum()))


class LivePart(NamedTuple):
    part: OpenPart
    bitmap: np.ndarray | None  # live rows (faiss.IDSelectorBitmap), None when all are live
    n_live: int


class Snapshot(NamedTuple):
    """One published generation, as a reader holds it: whatever the writer does next, it stays whole."""

    generation: int
    manifest: dict
    videos: dict[int, dict]
    frames: list[LivePart]
    text: list[LivePart]
    segment_texts: dict  # video_id -> [(source, text)], filled as text searches need them

    @property
    def n_vectors(self) -> int:
        return sum(p.n_live for p in self.frames)

    @property
    def text_n_vectors(self) -> int:
        return sum(p.n_live for p in self.text)


def _video_runs(ids: np.ndarray) -> dict[int, tuple[int, int]]:
    """video id -> [start, end) of its rows (a segment adds each video's rows together)."""
    video_ids = np.asarray(ids["video_id"])
    if not len(video_ids):
        return {}
    starts = np.r_[0, np.flatnonzero(np.diff(video_ids)) + 1]
    ends = np.r_[starts[1:], len(video_ids)]
    return {int(video_ids[a]): (int(a), int(b)) for a, b in zip(starts, ends)}


def _hit_vectors(matches: list[tuple[float, OpenPart, int]]) -> list[np.ndarray]:
    """The stored vectors of (score, part, row) matches, one reconstruction per part."""
    out: list[Any] = [None] * len(matches)
    by_part: dict[int, list[int]] = {}
    for i, (_, part, _) in enumerate(matches):
        by_part.setdefault(id(part), []).append(i)
    for positions in by_part.values():
        part = matches[positions[0]][1]
        for i, vector in zip(positions, vectors_at(part.index, np.array([matches[i][2] for i in positions]))):
            out[i] = vector
    return out


def _merged(parts: list[LivePart], queries: np.ndarray, top_k: int,
            nprobe: int | None) -> list[list[tuple[float, OpenPart, int]]]:
    """Each query's top_k (score, part, row) over all parts, best first."""
    scores, rows, owners = [], [], []
    for i, live in enumerate(parts):
        if live.n_live == 0:
            continue
        s, r = search_index(live.part.index, queries, min(top_k, live.n_live), nprobe or live.part.nprobe,
                            live.bitmap)
        scores.append(s)
        rows.append(r)
        owners.append(np.full(r.shape, i))
    if not scores:
        return [[] for _ in queries]
    scores, rows, owners = np.concatenate(scores, 1), np.concatenate(rows, 1), np.concatenate(owners, 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return [[(float(scores[q, j]), parts[owners[q, j]].part, int(rows[q, j])) for j in order[q] if rows[q, j] >= 0]
            for q in range(len(queries))]


# ----------------------------------------------------------------------------------------------- the manifest


def _part_files(record: dict | None) -> tuple[str, ...]:
    """The files of one kind of one segment (none when the segment holds no rows of that kind)."""
    return (record["index_file"], record["ids_file"]) if record else ()


def segment_files(manifest: dict) -> set[str]:
    """Every file the manifest's segments consist of."""
    return {record[key] for segment in manifest["segments"] for kind in KINDS
            for record in [segment.get(kind)] if record for key in ("index_file", "ids_file")}


def summary(segments: list[dict], videos: dict[str, dict], dims: dict[str, int]) -> dict:
    """The manifest's headline figures: live and dead rows of each kind, the base's factory, dimensions."""
    out: dict[str, Any] = {"n_segments": len(segments)}
    for kind, prefix in (("frames", ""), ("text", "text_")):
        base = segments[0].get(kind) or {} if segments else {}
        live = sum(v.get(COUNT_KEY[kind], 0) for v in videos.values())
        total = sum((s.get(kind) or {}).get("n_vectors", 0) for s in segments)
        out.update({f"{prefix}n_vectors": int(live), f"{prefix}n_deleted": int(total - live),
                    f"{prefix}factory": base.get("factory", "Flat"), f"{prefix}nprobe": base.get("nprobe"),
                    f"{prefix}delta_vectors": int(total - base.get("n_vectors", 0))})
    out["embed_dim"], out["text_dim"] = dims["frames"], dims["text"]
    return out


def compaction_due(manifest: dict, flat_max: int = FLAT_MAX_VECTORS) -> bool:
    """True when the segments should merge into a new base: a size class changed (`index_spec_for`), dead rows
    past COMPACT_DEAD_FRACTION of all rows, or, over an IVF base (whose centroids were trained without the
    deltas' vectors), delta rows past COMPACT_DELTA_FRACTION of the base's. Exact (Flat) segments answer the same
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


def _upgrade(manifest: dict) -> dict:
    """A format-1 manifest (one index per generation) read as one base segment; the next update compacts it."""
    seg_id = f"v1-{manifest['generation']:06d}"
    segment = {"id": seg_id, "kind": "base"}
    for kind, prefix in (("frames", ""), ("text", "text_")):
        segment[kind] = {"factory": manifest.get(f"{prefix}factory") or "Flat", "nprobe": manifest.get(
            f"{prefix}nprobe"), "n_vectors": manifest.get(f"{prefix}n_vectors", 0), "index_file": manifest.get(
            f"{prefix}index_file"), "ids_file": manifest.get(f"{prefix}ids_file")} if manifest.get(
            f"{prefix}index_file") else None
    videos = {k: {**v, "segment": seg_id} for k, v in manifest["videos"].items()}
    return {**manifest, "segments": [segment], "videos": videos, "previous_files": [], "n_deleted": 0,
            "text_n_deleted": 0, "delta_vectors": 0, "text_delta_vectors": 0}
