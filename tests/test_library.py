"""The on-disk library: catalog states, durable shards, index generations, search, locking and kill -9 safety.
Synthetic "videos" are small byte files (plan() fingerprints real files); their frames are seeded vectors."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videomini.storage import (
    Hit,
    IndexSpec,
    LibraryBusy,
    LibraryError,
    LibraryStore,
    build_index,
    fingerprint,
    index_spec_for,
    moments,
)

D, H, T = 16, 8, 1  # embedding dim, frame-token dim, tokens per frame (tiny stand-ins for 768 / 4096 / 1)
MTIME_NS = 1_700_000_000_000_000_000  # fixed, so fingerprints (and shard names) are the same in every tmp dir


def make_video(folder: Path, name: str, size: int = 4096, seed: int = 0) -> Path:
    path = folder / name
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return path


def frames(seed: int, n: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, T, H)).astype(np.float16), rng.standard_normal((n, D)).astype(np.float32),
            np.arange(n, dtype=np.float64) * 1.0)


def add_video(lib: LibraryStore, path: Path, frame_tokens, embeddings, timestamps_s) -> int:
    (item,) = lib.plan([path])
    video_id = lib.mark_running(item.path, item.fingerprint, model_id="tiny", fps=1.0)
    lib.write_shard(video_id, frame_tokens, embeddings, timestamps_s, duration_s=float(len(timestamps_s)),
                    model_id="tiny", fps=1.0, timings={"encode_s": 0.1})
    lib.mark_done(video_id)
    return video_id


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".tmp-*"))


# ----------------------------------------------------------------------------------------------- basics


def test_fingerprint_tracks_content_size_and_mtime(tmp_path):
    path = make_video(tmp_path, "a.mp4", size=3 << 20)
    fp = fingerprint(path)
    assert fp == fingerprint(path) and len(fp) == 32
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # tail byte changed, same size, same mtime
    path.write_bytes(bytes(data))
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    assert fingerprint(path) != fp
    os.utime(path, ns=(MTIME_NS + 1, MTIME_NS + 1))
    assert fingerprint(path) != fp
    with pytest.raises(LibraryError, match="missing.mp4: cannot fingerprint"):
        fingerprint(tmp_path / "missing.mp4")
    with pytest.raises(LibraryError, match="not a regular file"):
        fingerprint(tmp_path)


def test_open_requires_a_library_and_writes_require_the_lock(tmp_path):
    with pytest.raises(LibraryError, match="not a videomini library"):
        LibraryStore(tmp_path / "nope")
    with LibraryStore.create(tmp_path / "lib") as lib:
        assert lib.update_index()["n_vectors"] == 0  # an empty library publishes an empty generation
    con = sqlite3.connect(tmp_path / "lib" / "catalog.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert dict(con.execute("SELECT key, value FROM meta"))["format_version"] == "1"
    con.close()
    with LibraryStore(tmp_path / "lib") as reader:
        with pytest.raises(LibraryError, match="read-only"):
            reader.mark_running(make_video(tmp_path, "a.mp4"))
        assert reader.search_vectors(np.ones(D)) == []


def test_status_transitions_and_plan_actions(tmp_path):
    a, b, c = (make_video(tmp_path, f"{n}.mp4", seed=i) for i, n in enumerate("abc"))
    with LibraryStore.create(tmp_path / "lib") as lib:
        assert [i.action for i in lib.plan([a, b, a])] == ["new", "new"]  # duplicates collapse
        vid = lib.mark_running(a)
        assert lib.video(vid)["status"] == "running"
        assert lib.plan([a])[0].action == "resume"
        lib.write_shard(vid, *frames(0), duration_s=6.0, model_id="tiny", fps=1.0, timings={"decode_s": 0.5})
        assert lib.video(a)["status"] == "running"  # durable shard alone does not make it done
        lib.mark_done(vid)
        row = lib.video(a)
        assert (row["status"], row["n_frames"], row["duration_s"], row["model_id"]) == ("done", 6, 6.0, "tiny")
        assert row["timings"] == {"decode_s": 0.5} and row["shard"].startswith(f"{vid}-")
        assert lib.plan([a])[0].action == "unchanged"
        assert lib.plan([a], model_id="other-model")[0].action == "changed"

        lib.mark_failed(b, "decoder crashed:\n  invalid NAL unit")
        assert lib.video(b)["error"] == "decoder crashed: invalid NAL unit"  # one line
        assert lib.plan([b])[0].action == "skip_failed"
        assert lib.plan([b], retry_failed=True)[0].action == "retry_failed"
        lib.mark_running(c)
        with pytest.raises(LibraryError, match="not running"):
            lib.mark_done(lib.video(b)["id"])
        with pytest.raises(LibraryError, match="missing or unreadable"):
            lib.mark_done(lib.video(c)["id"])  # no shard written yet

        # a changed file is detected and re-indexed under the same id with a new shard
        a.write_bytes(a.read_bytes() + b"more")
        assert lib.plan([a])[0].action == "changed"
        old_shard = row["shard"]
        lib.update_index()
        assert add_video(lib, a, *frames(5, n=4)) == vid
        assert lib.video(a)["shard"] != old_shard and lib.video(a)["n_frames"] == 4
        assert (lib.shards_dir / old_shard).exists()  # still referenced by the published index
        lib.update_index()
        assert not (lib.shards_dir / old_shard).exists()
        assert len(lib.load_frames(vid).timestamps_s) == 4


def test_shard_write_is_atomic_and_roundtrips(tmp_path, monkeypatch):
    import torch
    a = make_video(tmp_path, "a.mp4")
    with LibraryStore.create(tmp_path / "lib") as lib:
        vid = lib.mark_running(a)
        tokens, emb, ts = frames(1)
        name = lib.write_shard(vid, torch.from_numpy(tokens.astype(np.float32)).bfloat16(), emb * 3.0, ts)
        shard = lib.shards_dir / name
        before = shard.read_bytes()

        def crash(src, dst):  # the rename never happens: the old shard must stay intact, no temp file left
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(LibraryError, match="disk full"):  # one line naming the library, not an OSError
            lib.write_shard(vid, *frames(2))
        monkeypatch.undo()
        assert shard.read_bytes() == before and leftovers(lib.root) == []
        lib.mark_done(vid)
        stored = lib.load_frames(vid)
        assert stored.frame_tokens.dtype == np.float16 and stored.frame_tokens.shape == (6, T, H)
        assert stored.embeddings.dtype == np.float32 and stored.timestamps_s.dtype == np.float64
        np.testing.assert_allclose(np.linalg.norm(stored.embeddings, axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(stored.embeddings, emb / np.linalg.norm(emb, axis=1, keepdims=True), rtol=1e-6)
        np.testing.assert_allclose(stored.frame_tokens.astype(np.float32), tokens.astype(np.float32), atol=0.02)


def test_shard_holds_what_its_readers_read_and_its_format(tmp_path):
    from safetensors import safe_open

    from videomini.storage.shards import SHARD_FORMAT_VERSION

    with LibraryStore.create(tmp_path / "lib") as lib:
        _, emb, ts = frames(3)
        vid = add_video(lib, make_video(tmp_path, "a.mp4"), None, emb, ts)  # what `index` writes: no frame tokens
        shard = lib.shards_dir / lib.video(vid)["shard"]
        with safe_open(shard, framework="np") as f:
            assert set(f.keys()) == {"embeddings", "timestamps_s"}
            assert f.metadata()["format_version"] == SHARD_FORMAT_VERSION == "2"
        np.testing.assert_array_equal(lib.frame_times(vid), ts)  # ask --library's read: the times alone
        assert lib.load_frames(vid).frame_tokens is None
        lib.update_index()
        assert len(lib.search_vectors(emb[0], top_k=1)) == 1


def test_shard_of_a_newer_format_is_one_line(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with LibraryStore.create(tmp_path / "lib") as lib:
        vid = add_video(lib, make_video(tmp_path, "a.mp4"), *frames(1))
        shard = lib.shards_dir / lib.video(vid)["shard"]
        with safe_open(shard, framework="np") as f:
            metadata = dict(f.metadata(), format_version="9")
        save_file(load_file(shard), shard, metadata=metadata)
        with pytest.raises(LibraryError, match="shard format 9, this videomini reads formats 1, 2; upgrade"):
            lib.shards.read_times(shard.name)


def test_write_shard_rejects_bad_input(tmp_path):
    a, b = make_video(tmp_path, "a.mp4"), make_video(tmp_path, "b.mp4", seed=1)
    with LibraryStore.create(tmp_path / "lib") as lib:
        vid = lib.mark_running(a)
        tokens, emb, ts = frames(0)
        with pytest.raises(LibraryError, match="a.mp4: frame counts differ"):
            lib.write_shard(vid, tokens[:5], emb, ts)
        with pytest.raises(LibraryError, match="not sorted"):
            lib.write_shard(vid, tokens, emb, ts[::-1].copy())
        with pytest.raises(LibraryError, match="non-finite"):
            lib.write_shard(vid, tokens, np.full_like(emb, np.nan), ts)
        lib.write_shard(vid, tokens, emb, ts)
        vid_b = lib.mark_running(b)
        with pytest.raises(LibraryError, match="embed_dim is 8, but this library holds embed_dim 16"):
            lib.write_shard(vid_b, tokens, emb[:, :8], ts)
        with pytest.raises(LibraryError, match="not running"):
            lib.write_shard(12345, tokens, emb, ts)


# ----------------------------------------------------------------------------------------------- search


def test_search_finds_injected_vectors(tmp_path):
    rng = np.random.default_rng(0)
    target = rng.standard_normal(D).astype(np.float32)
    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(3)]
    with LibraryStore.create(tmp_path / "lib") as lib:
        for i, path in enumerate(paths):
            tokens, emb, _ = frames(10 + i, n=20)
            ts = np.arange(20) * 0.5 + 100.0 * i  # 2 fps, offset per video
            if i == 1:
                emb[14] = target  # video 1 shows the answer at frame 14 = 107.0 s
                emb[15] = target + 0.3 * rng.standard_normal(D)  # and nearly at the next frame
            add_video(lib, path, tokens, emb, ts)
        manifest = lib.update_index()
        assert manifest["factory"] == "Flat" and manifest["n_vectors"] == 60
    with LibraryStore(tmp_path / "lib") as reader:  # a reader: no lock needed
        hits = reader.search_vectors(target + 0.05 * rng.standard_normal(D), top_k=5)
        assert isinstance(hits[0], Hit)
        assert (hits[0].path, hits[0].timestamp_s, hits[0].frame_idx) == (str(paths[1]), 107.0, 14)
        assert hits[0].score > 0.99 and hits[1].timestamp_s == 107.5
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        batched = reader.search_vectors(np.stack([target, -target]), top_k=3)
        assert len(batched) == 2 and batched[0][0].frame_idx == 14 and batched[1][0].frame_idx != 14
        best = reader.moments(hits, gap_s=1.0)[0]
        assert (best.path, best.start_s, best.end_s, best.best_s) == (str(paths[1]), 107.0, 107.5, 107.0)
        assert len(reader.search_vectors(target, top_k=1000)) == 60
        with pytest.raises(LibraryError, match="holds 16-d embeddings"):
            reader.search_vectors(np.ones(7))


def test_moments_merge_adjacent_hits():
    def hit(path, t, score, vid):
        return Hit(path, t, int(t), score, vid)

    hits = [hit("a", 10, 0.5, 1), hit("a", 11, 0.9, 1), hit("a", 13, 0.6, 1), hit("a", 30, 0.7, 1),
            hit("b", 11, 0.8, 2), hit("b", 12, 0.2, 2)]
    got = moments(hits, gap_s=2.0)
    assert [(m.path, m.start_s, m.end_s, m.score, m.best_s, m.n_hits) for m in got] == [
        ("a", 10, 13, 0.9, 11, 3), ("b", 11, 12, 0.8, 11, 2), ("a", 30, 30, 0.7, 30, 1)]
    assert len(moments(hits, gap_s=0.5)) == 6 and moments([]) == []


def test_index_factory_switches_past_the_threshold(tmp_path):
    assert index_spec_for(10) == IndexSpec("Flat")
    big = index_spec_for(1_000_000)
    assert big.factory.startswith("IVF") and big.nprobe and big.factory.endswith(",Flat")
    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(4)]
    target = np.random.default_rng(7).standard_normal(D).astype(np.float32)
    with LibraryStore.create(tmp_path / "lib", flat_max=100) as lib:
        add_video(lib, paths[0], *frames(0, n=60))
        assert lib.update_index()["factory"] == "Flat"
        for i, path in enumerate(paths[1:], start=1):
            tokens, emb, ts = frames(i, n=60)
            if i == 2:
                emb[33] = target
            add_video(lib, path, tokens, emb, ts)
        manifest = lib.update_index()
        assert manifest["factory"] == index_spec_for(240, 100).factory and manifest["factory"].startswith("IVF")
        hits = lib.search_vectors(target, top_k=3, nprobe=1_000)
        assert (hits[0].path, hits[0].frame_idx) == (str(paths[2]), 33)


def test_build_index_ivf_recall_is_high_on_clustered_vectors():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 32)).astype(np.float32)
    xb = centers[rng.integers(20, size=5000)] + 0.3 * rng.standard_normal((5000, 32)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[:50] + 0.05 * rng.standard_normal((50, 32)).astype(np.float32)
    _, exact = build_index(xb, IndexSpec("Flat")).search(xq, 10)
    _, approx = build_index(xb, IndexSpec("IVF64,Flat", nprobe=8)).search(xq, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.9


def test_remove_deletes_rows_shards_and_index_entries(tmp_path):
    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(3)]
    with LibraryStore.create(tmp_path / "lib") as lib:
        ids = [add_video(lib, p, *frames(i)) for i, p in enumerate(paths)]
        lib.mark_failed(make_video(tmp_path, "bad.mp4", seed=9), "not a video")
        lib.update_index()
        shard = lib.video(ids[1])["shard"]
        with pytest.raises(LibraryError, match="nope.mp4: not in library"):
            lib.remove([paths[1], tmp_path / "nope.mp4"])
        assert lib.video(ids[1]) is not None  # all-or-nothing
        assert lib.remove([paths[1], tmp_path / "bad.mp4"]) == [str(paths[1]), str(tmp_path / "bad.mp4")]
        assert lib.video(ids[1]) is None and not (lib.shards_dir / shard).exists()
        hits = lib.search_vectors(frames(1)[1][0], top_k=100)
        assert {h.video_id for h in hits} == {ids[0], ids[2]} and len(hits) == 12
        stats = lib.stats()
        assert (stats["videos"], stats["frames"], stats["failures"]) == (2, 12, [])


def test_stats_reports_counts_hours_bytes_and_failures(tmp_path):
    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(2)]
    with LibraryStore.create(tmp_path / "lib") as lib:
        for i, p in enumerate(paths):
            add_video(lib, p, *frames(i, n=1800))  # duration_s = 1800 each
        lib.mark_failed(make_video(tmp_path, "bad.mp4", seed=5), "zero-byte file")
        assert not lib.index_is_current()
        lib.update_index()
        stats = lib.stats()
    assert stats["videos"] == 3 and stats["status"] == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    assert stats["frames"] == 3600 and stats["hours"] == pytest.approx(1.0)
    assert stats["failures"] == [{"path": str(tmp_path / "bad.mp4"), "error": "zero-byte file"}]
    data = [*(tmp_path / "lib" / "shards").iterdir(), *(tmp_path / "lib").glob("part-*")]
    assert stats["bytes_on_disk"] > sum(f.stat().st_size for f in data) > 3600 * (H * 2 + D * 4 * 2 + 8)
    assert stats["index"]["n_vectors"] == 3600 and stats["index_current"] is True
    json.dumps(stats)


def test_a_format_2_library_reads_then_grows_in_format_3(tmp_path):
    """Libraries written before the rename (manifest "segments", files seg-<n>.*, no manifest checksum) read as
    they are; the next update adds a part-<n> delta beside the old files and publishes a checksummed manifest."""
    from videomini.storage.manifest import INDEX_FORMAT_VERSION

    root = tmp_path / "lib"
    with LibraryStore.create(root) as lib:
        first = add_video(lib, make_video(tmp_path, "a.mp4"), *frames(1))
        lib.update_index()
    manifest = json.loads((root / "index.json").read_text())
    for part in manifest["parts"]:  # written as format 2 was: seg- ids and files, "segments", no checksum
        part["id"] = part["id"].replace("part-", "seg-")
        for kind in ("frames", "text"):
            if part.get(kind):
                for key in ("index_file", "ids_file"):
                    old = part[kind][key].replace("part-", "seg-")
                    os.replace(root / part[kind][key], root / old)
                    part[kind]["files"][old] = part[kind]["files"].pop(part[kind][key])
                    part[kind][key] = old
    old_format = {k: v for k, v in manifest.items() if k not in ("parts", "n_parts", "checksum")}
    old_format.update(format_version=2, segments=manifest["parts"], n_segments=manifest["n_parts"],
                      videos={k: {**{n: x for n, x in v.items() if n != "part"},
                                  "segment": v["part"].replace("part-", "seg-")}
                              for k, v in manifest["videos"].items()})
    (root / "index.json").write_text(json.dumps(old_format))
    query = frames(1)[1][2]
    with LibraryStore(root) as lib:
        assert lib.search_vectors(query, top_k=1)[0].video_id == first and LibraryStore.check(root) == []
    with LibraryStore(root, writer=True) as lib:
        second = add_video(lib, make_video(tmp_path, "b.mp4", seed=1), *frames(2))
        grown = lib.update_index()
    published = json.loads((root / "index.json").read_text())
    assert published["format_version"] == INDEX_FORMAT_VERSION and "checksum" in published
    assert [p["id"][:5] for p in grown["parts"]] == ["seg-0", "part-"]
    with LibraryStore(root) as lib:
        assert lib.search_vectors(frames(2)[1][4], top_k=1)[0].video_id == second
        assert lib.search_vectors(query, top_k=1)[0].video_id == first and LibraryStore.check(root) == []


def test_repair_fixes_records_from_their_shards_and_quarantines_damaged_shards(tmp_path):
    """Fast lane of tests/test_integrity.py: synthetic shards, each repair as the user sees it."""
    root = tmp_path / "lib"
    with LibraryStore.create(root) as lib:
        ids = [add_video(lib, make_video(tmp_path, f"{n}.mp4", seed=n), *frames(n)) for n in range(3)]
        lib.update_index()
        shards = {i: lib.shards_dir / lib.video(i)["shard"] for i in ids}
    db = sqlite3.connect(root / "catalog.sqlite")
    db.execute("UPDATE videos SET checksum = 'crc32:00000000', n_frames = 5 WHERE id = ?", (ids[0],))
    db.commit()
    db.close()
    damaged = bytearray(shards[ids[1]].read_bytes())
    damaged[-3] ^= 0xFF  # the last tensor's bytes
    shards[ids[1]].write_bytes(bytes(damaged))
    intact = shards[ids[0]].read_bytes()
    problems = LibraryStore.check(root)
    assert any("recorded checksum of this shard is wrong" in p for p in problems)
    assert any(shards[ids[1]].name in p and "shard damaged" in p for p in problems)
    done = LibraryStore.repair(root)
    assert any("repaired the catalog's record from the shard" in line for line in done)
    assert any("moved to" in line and "quarantine" in line for line in done)
    assert shards[ids[0]].read_bytes() == intact and not shards[ids[1]].exists()
    (kept,) = [p for p in (root / "quarantine").iterdir() if not p.name.endswith(".why.txt")]
    assert kept.read_bytes() == bytes(damaged)
    assert LibraryStore.check(root) == []
    with LibraryStore(root) as lib:
        assert lib.video(ids[0])["n_frames"] == 6 and lib.video(ids[1])["status"] == "pending"
        assert lib.search_vectors(frames(0)[1][2], top_k=1)[0].video_id == ids[0]


# ----------------------------------------------------------------------------------------------- concurrency


def test_second_writer_is_refused_readers_are_not(tmp_path):
    root = tmp_path / "lib"
    with LibraryStore.create(root):
        with pytest.raises(LibraryBusy) as busy:
            LibraryStore.open(root, writer=True)
        assert str(root) in str(busy.value) and f"pid {os.getpid()}" in str(busy.value)
        assert "\n" not in str(busy.value)
        with pytest.raises(LibraryBusy, match="after waiting 0.05 s"):
            LibraryStore.open(root, writer=True, wait_s=0.05)
        with LibraryStore.open(root) as reader:  # readers never take the lock
            assert reader.stats()["videos"] == 0
    with LibraryStore.open(root, writer=True, wait_s=0.05):  # released on close
        pass


def test_second_writer_in_another_process_is_refused(tmp_path):
    root = tmp_path / "lib"
    with LibraryStore.create(root):
        code = ("import sys\nfrom videomini.storage import LibraryBusy, LibraryStore\n"
                "try:\n    LibraryStore.open(sys.argv[1], writer=True)\n"
                "except LibraryBusy as e:\n    print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert out.stdout.strip() == f"{root}: library is being written by another process (pid {os.getpid()})"


def test_reader_sees_published_generations_only(tmp_path):
    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(3)]
    with LibraryStore.create(tmp_path / "lib") as lib, LibraryStore(tmp_path / "lib") as reader:
        add_video(lib, paths[0], *frames(0))
        lib.update_index()
        query = frames(1)[1][2]
        assert {h.video_id for h in reader.search_vectors(query, top_k=50)} == {1}
        add_video(lib, paths[1], *frames(1))
        # done in the catalog but not yet published: readers still see generation 1
        assert {h.video_id for h in reader.search_vectors(query, top_k=50)} == {1}
        lib.update_index()
        hits = reader.search_vectors(query, top_k=50)
        assert hits[0].video_id == 2 and hits[0].frame_idx == 2 and len(hits) == 12
        add_video(lib, paths[2], *frames(2))
        lib.update_index()
        names = sorted(p.name for p in lib.root.glob("part-*"))
        assert names == [f"part-00000{g}.frames.{ext}" for g in (1, 2, 3) for ext in ("faiss", "ids.npy")]


def test_open_for_writing_recovers_from_a_crash(tmp_path):
    a, b = make_video(tmp_path, "a.mp4"), make_video(tmp_path, "b.mp4", seed=1)
    root = tmp_path / "lib"
    lib = LibraryStore.create(root)
    va, vb = lib.mark_running(a), lib.mark_running(b)
    lib.write_shard(va, *frames(0), duration_s=6.0)  # durable, but the process "dies" before mark_done
    lib.catalog.close()
    lib._lock.release()  # the kernel drops the flock of a dead process
    (root / "shards" / ".tmp-999-2-abc.safetensors").write_bytes(b"partial")
    (root / ".tmp-999-index.json").write_bytes(b"{")
    with LibraryStore.open(root, writer=True) as lib:
        assert leftovers(root) == []
        assert lib.video(va)["status"] == "done" and lib.video(va)["duration_s"] == 6.0
        assert lib.video(vb)["status"] == "pending" and lib.plan([b])[0].action == "resume"


# ----------------------------------------------------------------------------------------------- kill -9

INDEXER = r"""
import sys
from pathlib import Path
import numpy as np
from videomini.storage import LibraryStore

tests, crash_at, root, *files = sys.argv[1:]
if crash_at:
    sys.path.insert(0, tests)
    from crash import sigkill_at

    sigkill_at(crash_at.split(":")[0], int(crash_at.split(":")[1]))
with LibraryStore.create(root) as lib:
    for item in lib.plan(files):
        if item.action in ("unchanged", "skip_failed"):
            continue
        seed = int(Path(item.path).stem[1:])
        video_id = lib.mark_running(item.path, item.fingerprint, model_id="tiny", fps=1.0)
        if seed == 3:
            lib.mark_failed(item.path, "decoder crashed")
            continue
        rng = np.random.default_rng(seed)
        n = 5 + seed
        lib.write_shard(video_id, rng.standard_normal((n, 1, 8)).astype(np.float16),
                        rng.standard_normal((n, 16)).astype(np.float32), np.arange(n) * 2.0,
                        duration_s=2.0 * n, model_id="tiny", fps=0.5)
        lib.mark_done(video_id)
    lib.update_index()
"""
N_VIDEOS = 6


def run_indexer(root: Path, files: list[Path], crash_at: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", INDEXER, str(Path(__file__).parent), crash_at or "", str(root),
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def library_state(root: Path) -> dict:
    """Everything a user relies on, with paths made relative so two libraries can be compared."""
    with LibraryStore(root) as lib:
        rows = [(Path(r["path"]).name, r["fingerprint"], r["status"], r["n_frames"], r["shard"], r["error"],
                 r["model_id"], r["fps"], r["duration_s"]) for r in lib.videos()]
        snap = lib.snapshot()
        ids, vectors = lib.indexed_vectors()
        shards = {p.name: lib.load_frames(int(p.name.split("-")[0])).embeddings.tobytes()
                  for p in sorted(lib.shards_dir.iterdir())}
        return {"rows": rows, "ids": ids.tolist(), "vectors": vectors.tobytes(), "shards": shards,
                "index_videos": {k: (Path(v["path"]).name, v["shard"]) for k, v in snap.videos.items()},
                "files": sorted(p.name for p in root.rglob("*") if p.name.startswith(".tmp-"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    files = [make_video(folder, f"v{i}.mp4", seed=i) for i in range(N_VIDEOS)]
    out = run_indexer(folder / "lib", files)
    assert out.returncode == 0, out.stderr
    return library_state(folder / "lib")


_rng = random.Random(5)  # random but reproducible kill points (the n-th time a point is reached)
KILL_POINTS = [f"shard_tmp_written:{_rng.randint(1, N_VIDEOS - 1)}", f"shard_durable:{_rng.randint(1, N_VIDEOS - 1)}",
               f"done_committed:{_rng.randint(1, N_VIDEOS - 1)}", "index_files_written:1", "manifest_published:1",
               f"shard_durable:{N_VIDEOS - 1}"]


@pytest.mark.parametrize("crash_at", KILL_POINTS)
def test_sigkilled_writer_resumes_to_the_uninterrupted_state(tmp_path, reference, crash_at):
    files = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(N_VIDEOS)]
    root = tmp_path / "lib"
    killed = run_indexer(root, files, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with LibraryStore(root) as reader:  # a reader can open the crashed library without recovering it
        reader.stats()
    resumed = run_indexer(root, files)
    assert resumed.returncode == 0, resumed.stderr
    assert library_state(root) == reference


UPDATER = r"""
import sys
from pathlib import Path
import numpy as np
from videomini.storage import LibraryStore

tests, crash_at, root, remove, *files = sys.argv[1:]
if crash_at:
    sys.path.insert(0, tests)
    from crash import sigkill_at

    sigkill_at(crash_at.split(":")[0], int(crash_at.split(":")[1]))
with LibraryStore.open(root, writer=True) as lib:
    for item in lib.plan(files):  # each new video published as its own delta part
        if item.action == "unchanged":
            continue
        seed = int(Path(item.path).stem[1:])
        video_id = lib.mark_running(item.path, item.fingerprint, model_id="tiny", fps=1.0)
        rng = np.random.default_rng(seed)
        lib.write_shard(video_id, rng.standard_normal((7, 1, 8)).astype(np.float16),
                        rng.standard_normal((7, 16)).astype(np.float32), np.arange(7) * 2.0, duration_s=14.0,
                        model_id="tiny", fps=0.5)
        lib.mark_done(video_id)
        lib.update_index()
    if lib.video(remove) is not None:
        lib.remove([remove])  # recorded as deleted rows, no rebuild
    lib.compact_index()
"""
N_ADDED = 3


def run_updater(root: Path, remove: Path, files: list[Path],
                crash_at: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", UPDATER, str(Path(__file__).parent), crash_at or "", str(root),
                           str(remove), *map(str, files)], capture_output=True, text=True, timeout=120)


def updated_library(folder: Path, crash_at: str | None = None) -> Path:
    """A library indexed by INDEXER, then grown by UPDATER (killed at `crash_at` and re-run, when given)."""
    base = [make_video(folder, f"v{i}.mp4", seed=i) for i in range(N_VIDEOS)]
    added = [make_video(folder, f"v{i}.mp4", seed=i) for i in range(N_VIDEOS, N_VIDEOS + N_ADDED)]
    assert run_indexer(folder / "lib", base).returncode == 0
    if crash_at:
        killed = run_updater(folder / "lib", base[1], added, crash_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        with LibraryStore(folder / "lib") as reader:  # the published generation stays searchable
            hits = reader.search_vectors(np.ones(D), top_k=100)
            assert len(hits) == reader.snapshot().n_vectors
    out = run_updater(folder / "lib", base[1], added)
    assert out.returncode == 0, out.stderr
    return folder / "lib"


# deltas: index_files_written 1-3, manifest_published 1-3; the removal: manifest_published 4; the compaction:
# index_files_written 4, manifest_published 5
UPDATE_KILL_POINTS = ["index_files_written:2", "manifest_published:1", "manifest_published:4",
                      "index_files_written:4", "manifest_published:5"]


@pytest.mark.parametrize("crash_at", UPDATE_KILL_POINTS)
def test_sigkill_during_delta_write_or_compaction_then_rerun_is_consistent(tmp_path_factory, crash_at):
    reference = library_state(updated_library(tmp_path_factory.mktemp("reference")))
    assert library_state(updated_library(tmp_path_factory.mktemp("killed"), crash_at)) == reference


def test_adds_and_removals_without_rebuild_equal_a_full_rebuild_on_flat(tmp_path):
    root = tmp_path / "lib"
    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(12)]
    with LibraryStore.create(root) as lib:
        for path in paths[:8]:
            add_video(lib, path, *frames(int(path.stem[1:]), n=20))
        lib.update_index()
        for path in paths[8:]:  # one delta part each
            add_video(lib, path, *frames(int(path.stem[1:]), n=20))
            lib.update_index()
        paths[2].write_bytes(paths[2].read_bytes() + b"edited")  # changed: new rows in a delta, old ones dead
        add_video(lib, paths[2], *frames(99, n=20))
        lib.update_index()
        manifest = lib.remove([paths[5]]) and lib.manifest()
        assert manifest["n_parts"] == 6 and manifest["n_deleted"] == 40 and manifest["n_vectors"] == 220
        assert {s["kind"] for s in manifest["parts"][1:]} == {"delta"}
    shutil.copytree(root, tmp_path / "rebuilt")
    with LibraryStore.open(tmp_path / "rebuilt", writer=True) as rebuilt:
        assert rebuilt.compact_index()["n_parts"] == 1
    queries = np.random.default_rng(1).standard_normal((30, D)).astype(np.float32)
    with LibraryStore(root) as parted, LibraryStore(tmp_path / "rebuilt") as rebuilt:
        for got, want in zip(parted.search_vectors(queries, top_k=25), rebuilt.search_vectors(queries, top_k=25)):
            assert [(h.video_id, h.frame_idx) for h in got] == [(h.video_id, h.frame_idx) for h in want]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-6)
        assert {h.video_id for h in parted.search_vectors(queries[0], top_k=1000)} == set(range(1, 13)) - {6}
        for a, b in zip(parted.indexed_vectors(), rebuilt.indexed_vectors()):
            np.testing.assert_array_equal(a, b)


def test_an_interrupted_compaction_is_finished_by_the_next_update(tmp_path, monkeypatch):
    from videomini.storage import files

    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(4)]
    with LibraryStore.create(tmp_path / "lib") as lib:
        for i, path in enumerate(paths):
            add_video(lib, path, *frames(i, n=10))
        lib.update_index()

        def interrupt(point: str) -> None:  # the writer dies once the compacted part's files are written
            if point == "index_files_written":
                raise SystemExit("killed")

        monkeypatch.setattr(files, "crash_hook", interrupt)
        with pytest.raises(SystemExit):
            lib.remove(paths[:2])  # half the rows dead: the removal publishes, then compaction is due
        monkeypatch.setattr(files, "crash_hook", None)
        published = lib.manifest()
        assert published["n_deleted"] == 20 and published["n_parts"] == 1  # the deletion, not the compaction
    with LibraryStore.open(tmp_path / "lib", writer=True) as lib:
        assert lib.index_is_current() and lib.index_needs_update()
        manifest = lib.update_index()
        assert manifest["n_deleted"] == 0 and manifest["n_vectors"] == 20 and not lib.index_needs_update()
        assert sorted(p.name for p in lib.root.glob("part-*")) == sorted(
            set(manifest["previous_files"]) | {s["frames"][k] for s in manifest["parts"]
                                               for k in ("index_file", "ids_file")})


def test_library_cli_compacts(tmp_path):
    from typer.testing import CliRunner

    from videomini.cli.main import app

    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(3)]
    with LibraryStore.create(tmp_path / "lib") as lib:
        for i, path in enumerate(paths):
            add_video(lib, path, *frames(i, n=10))
            lib.update_index()
        assert lib.manifest()["n_parts"] == 3
    out = CliRunner().invoke(app, ["library", str(tmp_path / "lib"), "--compact", "--json"])
    assert out.exit_code == 0, out.output
    index = json.loads(out.stdout)["index"]
    assert (index["n_parts"], index["n_vectors"], index["n_deleted"]) == (1, 30, 0)


def test_deltas_on_an_ivf_base_keep_recall(tmp_path):
    """Past flat_max a large delta shares the base's trained centroids, a small one is exact; dead rows never
    come back, and recall@10 against exact search stays high."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((30, D)).astype(np.float32)

    def clustered(n: int) -> tuple:
        tokens, _, ts = frames(0, n)
        return tokens, centers[rng.integers(30, size=n)] + 0.3 * rng.standard_normal((n, D)).astype(np.float32), ts

    paths = [make_video(tmp_path, f"v{i}.mp4", seed=i) for i in range(15)]
    with LibraryStore.create(tmp_path / "lib", flat_max=200) as lib:
        for path in paths[:12]:
            add_video(lib, path, *clustered(100))
        base = lib.update_index()["parts"][0]["frames"]
        assert base["factory"].startswith("IVF")
        add_video(lib, paths[12], *clustered(250))
        add_video(lib, paths[13], *clustered(40))
        lib.update_index()
        lib.remove([paths[0]])
        manifest = lib.manifest()
        delta = manifest["parts"][1]["frames"]
        assert manifest["n_parts"] == 2 and delta["factory"] == base["factory"] and manifest["n_deleted"] == 100
        ids, vectors = lib.indexed_vectors()
        assert len(ids) == 1390 and 1 not in set(ids["video_id"])
        queries = clustered(50)[1]
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        found = lib.search_vectors(queries, top_k=10)
        truth = [{(int(ids[j]["video_id"]), int(ids[j]["frame_idx"])) for j in row} for row in exact]
        recall = np.mean([len({(h.video_id, h.frame_idx) for h in hits} & t) / 10 for hits, t in zip(found, truth)])
        assert recall >= 0.9 and all(h.video_id != 1 for hits in found for h in hits)


# ----------------------------------------------------------------------------------------------- concurrency

WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_library import add_video, frames, make_video
from videomini.storage import LibraryStore

root, n = Path(sys.argv[1]), int(sys.argv[3])
with LibraryStore.create(root) as lib:
    for i in range(1, n):
        add_video(lib, make_video(root.parent, f"v{i}.mp4", seed=i), *frames(i, n=6 + i))
        lib.compact_index() if i % 4 == 0 else lib.update_index()  # readers see compactions whole too
"""


def test_search_while_indexing_sees_consistent_snapshots(tmp_path):
    """A reader searching in a loop while another process adds videos and publishes an index per video: every
    result must come from one published generation -- all its videos' frames, no half-built index, scores
    equal to the stored vectors -- and nothing may fail on files the writer replaces or deletes."""
    root, n_videos = tmp_path / "lib", 30
    with LibraryStore.create(root) as lib:
        add_video(lib, make_video(tmp_path, "v0.mp4", seed=0), *frames(0, n=6))
        lib.update_index()
    stored = {i + 1: frames(i, n=6 + i)[1] for i in range(n_videos)}  # video id -> its embeddings
    stored = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in stored.items()}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(Path(__file__).parent), str(n_videos)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen_generations, searches = set(), 0
    with LibraryStore(root) as reader:
        while True:
            done = writer.poll() is not None  # one more search after the writer ends: the final state
            snapshot = reader.snapshot()
            videos = set(snapshot.videos)
            assert videos == set(range(1, len(videos) + 1))  # whole videos, in order: never a partial publish
            assert snapshot.n_vectors == sum(6 + i for i in range(len(videos)))
            target = max(videos)
            hits = reader.search_vectors(stored[target][2], top_k=5)
            assert hits[0].video_id == target and hits[0].frame_idx == 2 and hits[0].score == pytest.approx(1.0)
            for hit in hits:
                assert hit.score == pytest.approx(float(stored[hit.video_id][hit.frame_idx] @ stored[target][2]),
                                                  abs=1e-5)
            seen_generations.add(snapshot.generation)
            searches += 1
            if done:
                break
    assert writer.returncode == 0, writer.stderr.read()
    print(f"{searches} searches saw {len(seen_generations)} generations")
    assert max(seen_generations) == n_videos and searches > n_videos // 2
    assert len(seen_generations) > 2  # the reader really ran while the writer published
