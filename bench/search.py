"""Library search benchmark: latency, recall@10 against exact search, index build time and bytes per frame.

Each size goes through the real `videomini.storage.LibraryStore`: synthetic videos of `--frames-per-video` frames are
written as shards (frame tokens of `--token-dim` fp16, 768-d embeddings, timestamps), the index is rebuilt with the
library's own choice of factory and parameters, and queries run one at a time through `search_vectors` (as a user's
search does), so the figures include catalog, shard and hit-resolution costs.

The vectors are clustered like video embeddings, not uniform noise: topics -> videos (offset from a topic) -> shots
(offset from the video, a cut every ~40 frames) -> frames (a slow random walk inside a shot), in a 64-d latent space
mapped to 768-d plus a little isotropic noise, then L2-normalised. Queries are frames of held-out videos drawn from the
same process, so their true neighbours are the similar shots of other videos; recall@10 compares the library's top 10
with an exact (flat, batched) search over the same vectors.

    python bench/search.py                          # 10k, 100k, 1M frames
    python bench/search.py --sizes 10000 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from videomini.storage import FLAT_MAX_VECTORS, LibraryStore
from videomini.storage.manifest import index_files

LATENT = 64


def synthetic_frames(n: int, dim: int = 768, frames_per_video: int = 1000, topics: int = 1000,
                     seed: int = 0) -> np.ndarray:
    """n L2-normalised frame embeddings, video after video (see the module docstring for the model)."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(12345)  # the same topics and projection for the library and its queries
    proj = world.standard_normal((LATENT, dim), dtype=np.float32) / np.sqrt(LATENT)
    topic_centers = world.standard_normal((topics, LATENT), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, frames_per_video):
        m = min(frames_per_video, n - start)
        out[start : start + m] = synthetic_video(rng, m, proj, topic_centers)
    return out


def synthetic_video(rng: np.random.Generator, m: int, proj: np.ndarray, topic_centers: np.ndarray) -> np.ndarray:
    """One video's m L2-normalised frame embeddings: a topic, shots around the video's center, a walk in a shot."""
    video_center = topic_centers[rng.integers(len(topic_centers))] + 0.35 * rng.standard_normal(LATENT,
                                                                                               dtype=np.float32)
    cuts = np.sort(rng.choice(np.arange(1, m), size=m // 40, replace=False)) if m > 40 else np.zeros(0, int)
    shot = np.zeros(m, np.int64)
    shot[cuts] = 1
    shot = np.cumsum(shot)
    shot_centers = video_center + 0.35 * rng.standard_normal((shot[-1] + 1, LATENT), dtype=np.float32)
    walk = np.cumsum(0.02 * rng.standard_normal((m, LATENT), dtype=np.float32), axis=0)
    walk -= walk[np.r_[0, cuts]][shot]  # each shot's walk starts at its center
    out = ((shot_centers[shot] + walk) @ proj).astype(np.float32)
    out += 0.02 * rng.standard_normal((m, proj.shape[1]), dtype=np.float32)
    faiss.normalize_L2(out)
    return out


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def folder_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def run_size(n: int, args: argparse.Namespace, console: Console) -> list[dict]:
    fpv, dim = args.frames_per_video, args.dim
    t0 = time.perf_counter()
    vectors = synthetic_frames(n, dim, fpv, seed=n)
    queries = synthetic_frames(args.queries * 50, dim, 50, seed=n + 1)[::50].copy()  # one frame per held-out video
    gen_s = time.perf_counter() - t0

    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)  # batched: BLAS, exact
    n_flat = min(len(queries), args.flat_queries if n > 100_000 else len(queries))
    flat_lat = []
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # as the library runs one query (see videomini.storage.vector_index.faiss_threads)
    for q in queries[:n_flat]:  # what a one-query exact search would cost at this size
        t = time.perf_counter()
        exact.search(q[None], 10)
        flat_lat.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(threads)
    del exact
    console.log(f"{n:,} frames: generated in {gen_s:.1f} s, exact one-query p50 {percentiles_ms(flat_lat)[0]:.1f} ms")

    rows = []
    with tempfile.TemporaryDirectory(prefix="videomini-bench-", dir=args.workdir) as tmp:
        lib = LibraryStore.create(tmp)
        frame_tokens = np.zeros((fpv, 1, args.token_dim), np.float16)  # content does not matter for size or speed
        t0 = time.perf_counter()
        for v, start in enumerate(range(0, n, fpv)):
            m = min(fpv, n - start)
            video_id = lib.mark_running(f"/synthetic/video{v:07d}.mp4", f"{v:032x}", model_id="synthetic", fps=1.0)
            lib.write_shard(video_id, frame_tokens[:m], vectors[start : start + m], np.arange(m, dtype=np.float64),
                            duration_s=float(m), model_id="synthetic", fps=1.0)
            lib.mark_done(video_id)
        write_s = time.perf_counter() - t0
        del vectors
        t0 = time.perf_counter()
        manifest = lib.compact_index()
        build_s = time.perf_counter() - t0
        shard_bytes = folder_bytes(list(lib.shards_dir.iterdir()))
        base = manifest["parts"][0]["frames"]
        index_bytes = folder_bytes([lib.root / base["index_file"]])
        ids_bytes = folder_bytes([lib.root / base["ids_file"]])
        console.log(f"{n:,} frames: shards written in {write_s:.1f} s, {manifest['factory']} built in {build_s:.1f} s")

        probes = [manifest["nprobe"]] + ([p for p in args.nprobe if p != manifest["nprobe"]]
                                         if manifest["nprobe"] else [])
        for nprobe in probes:
            for q in queries[: args.warmup]:
                lib.search_vectors(q, top_k=10, nprobe=nprobe)
            latencies, found = [], []
            for q in queries:
                t = time.perf_counter()
                hits = lib.search_vectors(q, top_k=10, nprobe=nprobe)
                latencies.append(time.perf_counter() - t)
                found.append([(h.video_id - 1) * fpv + h.frame_idx for h in hits])
            recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
            p50, p99 = percentiles_ms(latencies)
            rows.append({
                "frames": n, "factory": manifest["factory"], "nprobe": nprobe, "library_default": nprobe ==
                manifest["nprobe"], "p50_ms": p50, "p99_ms": p99, "recall_at_10": recall,
                "exact_one_query_p50_ms": percentiles_ms(flat_lat)[0], "index_build_s": build_s,
                "shard_write_s": write_s, "queries": len(queries),
                "bytes_per_frame": {"shards": shard_bytes / n, "index": index_bytes / n, "ids": ids_bytes / n,
                                    "total": (shard_bytes + index_bytes + ids_bytes) / n},
                "token_dim": args.token_dim, "dim": dim,
            })
        lib.close()
    return rows


# ----------------------------------------------------------------------------------------------- updates


def write_video(lib: LibraryStore, name: str, vectors: np.ndarray, token_dim: int) -> int:
    """One synthetic video into the library as the index engines do: running, durable shard, done."""
    m = len(vectors)
    fingerprint = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
    video_id = lib.mark_running(f"/synthetic/{name}.mp4", fingerprint, model_id="synthetic", fps=1.0)
    lib.write_shard(video_id, np.zeros((m, 1, token_dim), np.float16), vectors, np.arange(m, dtype=np.float64),
                    duration_s=float(m), model_id="synthetic", fps=1.0)
    lib.mark_done(video_id)
    return video_id


def exact_top10(lib: LibraryStore, queries: np.ndarray) -> list[set]:
    """Exact top 10 (video_id, frame_idx) of each query over every done video's stored embeddings, streamed
    shard by shard (never the whole library in memory)."""
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best_keys = np.zeros((len(queries), 10, 2), np.int64)
    for row in lib.videos("done"):
        emb = lib.shards.read_vectors(row["shard"])["embeddings"]
        scores = np.concatenate([best_scores, queries @ emb.T], axis=1)
        keys = np.concatenate([best_keys, np.stack(np.broadcast_arrays(
            np.full((len(queries), len(emb)), row["id"]), np.arange(len(emb))[None]), axis=-1)], axis=1)
        top = np.argsort(-scores, axis=1)[:, :10]
        best_scores = np.take_along_axis(scores, top, 1)
        best_keys = np.take_along_axis(keys, top[..., None], 1)
    return [{tuple(k) for k in keys} for keys in best_keys.tolist()]


def search_worker(root: str, queries_path: str, warmup: int) -> None:
    """A fresh search process (`--search-worker`): opens the library, times one query at a time, prints JSON with
    the latencies, the hits and its memory (private vs memory-mapped index pages)."""
    queries = np.load(queries_path)
    with LibraryStore(root) as lib:
        t = time.perf_counter()
        snap = lib.snapshot()
        open_s = time.perf_counter() - t
        for name in sorted(index_files(snap.manifest)):
            with open(Path(root) / name, "rb") as f:  # a warm page cache: a search service's steady state
                while f.read(1 << 24):
                    pass
        for q in queries[:warmup]:
            lib.search_vectors(q, top_k=10)
        latencies, found = [], []
        for q in queries:
            t = time.perf_counter()
            hits = lib.search_vectors(q, top_k=10)
            latencies.append(time.perf_counter() - t)
            found.append([[h.video_id, h.frame_idx] for h in hits])
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        kib = {k: int(status[k].split()[0]) for k in ("RssAnon", "RssFile", "VmHWM")}
        print(json.dumps({"latencies": latencies, "found": found, "open_s": open_s, "parts": len(snap.frames),
                          "rss_anon_mb": kib["RssAnon"] / 1024, "rss_file_mb": kib["RssFile"] / 1024}))


def measure_search(lib: LibraryStore, queries: np.ndarray, truth: list[set], args: argparse.Namespace) -> dict:
    path = Path(lib.root) / "bench-queries.npy"
    np.save(path, queries)
    out = subprocess.run([sys.executable, __file__, "--search-worker", str(lib.root), str(path), str(args.warmup)],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    p50, p99 = percentiles_ms(got["latencies"])
    recall = float(np.mean([len({tuple(h) for h in f} & t) / 10 for f, t in zip(got["found"], truth)]))
    return {"search_p50_ms": p50, "search_p99_ms": p99, "recall_at_10": recall, "parts": got["parts"],
            "open_s": got["open_s"], "rss_anon_mb": got["rss_anon_mb"], "rss_file_mb": got["rss_file_mb"]}


def run_updates(args: argparse.Namespace, console: Console) -> dict:
    """A library of --base-frames, then --adds videos of --add-frames (one publish each) and --removals."""
    rng = np.random.default_rng(args.base_frames)
    world = np.random.default_rng(12345)
    proj = world.standard_normal((LATENT, args.dim), dtype=np.float32) / np.sqrt(LATENT)
    topics = world.standard_normal((1000, LATENT), dtype=np.float32)
    queries = np.stack([synthetic_video(rng, 50, proj, topics)[0] for _ in range(args.queries)])
    result: dict = {"base_frames": args.base_frames, "adds": args.adds, "add_frames": args.add_frames,
                    "removals": args.removals, "queries": args.queries, "dim": args.dim, "token_dim": args.token_dim}
    with tempfile.TemporaryDirectory(prefix="videomini-bench-", dir=args.workdir) as tmp:
        lib = LibraryStore.create(tmp)
        t0 = time.perf_counter()
        for v in range(0, args.base_frames, args.frames_per_video):
            m = min(args.frames_per_video, args.base_frames - v)
            write_video(lib, f"base{v:09d}", synthetic_video(rng, m, proj, topics), args.token_dim)
        console.log(f"{args.base_frames:,} frames written in {time.perf_counter() - t0:.1f} s")
        result["base_build_s"] = lib.compact_index()["build_s"]
        console.log(f"base index built in {result['base_build_s']:.1f} s")
        publish, added = [], []
        for a in range(args.adds):
            added.append(write_video(lib, f"add{a:04d}", synthetic_video(rng, args.add_frames, proj, topics),
                                     args.token_dim))
            t = time.perf_counter()
            lib.update_index()
            publish.append(time.perf_counter() - t)
        base_ids = [row["id"] for row in lib.videos("done") if row["id"] not in added]
        half = args.removals // 2  # half of the removals from the base, half from the added videos
        removed = base_ids[:: max(1, len(base_ids) // max(1, half))][:half] + added[:: 10][: args.removals - half]
        remove_s = []
        for path in [lib.video(video_id)["path"] for video_id in removed]:
            t = time.perf_counter()
            lib.remove([path])
            remove_s.append(time.perf_counter() - t)
        manifest = lib.manifest()
        result.update({"publish_p50_ms": percentiles_ms(publish)[0], "publish_p99_ms": percentiles_ms(publish)[1],
                       "remove_p50_ms": percentiles_ms(remove_s)[0], "remove_p99_ms": percentiles_ms(remove_s)[1],
                       "deleted_rows": manifest["n_deleted"], "delta_rows": manifest["delta_vectors"],
                       "factory": manifest["factory"], "nprobe": manifest["nprobe"]})
        console.log(f"{args.adds} adds published, p50 {result['publish_p50_ms']:.0f} ms; computing exact top 10")
        truth = exact_top10(lib, queries)
        result["after_adds"] = measure_search(lib, queries, truth, args)
        t = time.perf_counter()
        lib.compact_index()
        result["compaction_s"] = time.perf_counter() - t
        result["after_compaction"] = measure_search(lib, queries, truth, args)
        lib.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768, help="embedding dim (CLIP ViT-L/14 projection: 768)")
    parser.add_argument("--token-dim", type=int, default=4096, help="frame token dim stored per frame (Llama-3.1-8B)")
    parser.add_argument("--frames-per-video", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--flat-queries", type=int, default=20, help="one-query exact searches timed past 100k")
    parser.add_argument("--nprobe", type=int, nargs="*", default=[], help="extra IVF nprobe values to measure")
    parser.add_argument("--workdir", default=None, help="where the temporary libraries go (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--update", action="store_true", help="the update benchmark: a library of --base-frames, "
                        "then --adds videos of --add-frames published one by one, then --removals")
    parser.add_argument("--base-frames", type=int, default=1_000_000)
    parser.add_argument("--adds", type=int, default=100)
    parser.add_argument("--add-frames", type=int, default=60)
    parser.add_argument("--removals", type=int, default=10)
    parser.add_argument("--search-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search_worker:
        return search_worker(args.search_worker[0], args.search_worker[1], int(args.search_worker[2]))

    console = Console(width=None if sys.stdout.isatty() else 160)  # keep the table readable in logs
    if args.update:
        return report_updates(run_updates(args, console), args, console)
    results = [row for n in args.sizes for row in run_size(n, args, console)]

    table = Table(title=f"videomini library search, {args.dim}-d, one query at a time "
                        f"({os.cpu_count()} cores, faiss {faiss.__version__}, flat up to {FLAT_MAX_VECTORS:,})")
    for col in ("frames", "index", "nprobe", "p50 ms", "p99 ms", "recall@10", "exact p50 ms", "build s",
                "B/frame shards", "B/frame index+ids", "B/frame total"):
        table.add_column(col, justify="left" if col == "index" else "right")
    for r in results:
        b = r["bytes_per_frame"]
        table.add_row(f"{r['frames']:,}", r["factory"], "-" if r["nprobe"] is None else
                      f"{r['nprobe']}{'' if r['library_default'] else ' (alt)'}",
                      f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['recall_at_10']:.3f}",
                      f"{r['exact_one_query_p50_ms']:.1f}", f"{r['index_build_s']:.1f}", f"{b['shards']:,.0f}",
                      f"{b['index'] + b['ids']:,.0f}", f"{b['total']:,.0f}")
    console.print(table)
    write_json(args.json, {"benchmark": "search", "goal": "1M frames at p50 <= 20 ms", "results": results}, console)


def report_updates(result: dict, args: argparse.Namespace, console: Console) -> None:
    table = Table(title=f"videomini library updates: {result['base_frames']:,}-frame {result['factory']} base, "
                        f"{result['adds']} adds of {result['add_frames']} frames, {result['removals']} removals "
                        f"({os.cpu_count()} cores, faiss {faiss.__version__})")
    for col in ("after", "index parts", "search p50 ms", "search p99 ms", "recall@10", "search RSS anon MB",
                "mapped MB"):
        table.add_column(col, justify="left" if col == "after" else "right")
    for label, key in (("adds + removals", "after_adds"), ("compaction", "after_compaction")):
        r = result[key]
        table.add_row(label, str(r["parts"]), f"{r['search_p50_ms']:.2f}", f"{r['search_p99_ms']:.2f}",
                      f"{r['recall_at_10']:.3f}", f"{r['rss_anon_mb']:.0f}", f"{r['rss_file_mb']:.0f}")
    console.print(table)
    console.print(f"publish an add: p50 {result['publish_p50_ms']:.0f} ms, p99 {result['publish_p99_ms']:.0f} ms; "
                  f"a removal: p50 {result['remove_p50_ms']:.0f} ms, p99 {result['remove_p99_ms']:.0f} ms; "
                  f"compaction {result['compaction_s']:.1f} s (base build {result['base_build_s']:.1f} s)")
    write_json(args.json, {"benchmark": "search-updates",
                           "goal": "publish p99 <= 2 s, search p50 <= 20 ms, recall@10 >= 0.95", "result": result},
               console)


def write_json(path: Path | None, payload: dict, console: Console) -> None:
    """The benchmark's JSON (with the machine it ran on), when --json asked for it."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "faiss": faiss.__version__}
    path.write_text(json.dumps({**payload, "machine": machine}, indent=1))
    console.log(f"wrote {path}")


if __name__ == "__main__":
    main()
