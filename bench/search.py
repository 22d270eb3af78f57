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
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from videomini.storage import FLAT_MAX_VECTORS, LibraryStore

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
        video_center = topic_centers[rng.integers(topics)] + 0.35 * rng.standard_normal(LATENT, dtype=np.float32)
        cuts = np.sort(rng.choice(np.arange(1, m), size=m // 40, replace=False)) if m > 40 else np.zeros(0, int)
        shot = np.zeros(m, np.int64)
        shot[cuts] = 1
        shot = np.cumsum(shot)
        shot_centers = video_center + 0.35 * rng.standard_normal((shot[-1] + 1, LATENT), dtype=np.float32)
        walk = np.cumsum(0.02 * rng.standard_normal((m, LATENT), dtype=np.float32), axis=0)
        walk -= walk[np.r_[0, cuts]][shot]  # each shot's walk starts at its center
        out[start : start + m] = (shot_centers[shot] + walk) @ proj
        out[start : start + m] += 0.02 * rng.standard_normal((m, dim), dtype=np.float32)
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
        manifest = lib.rebuild_index()
        build_s = time.perf_counter() - t0
        shard_bytes = folder_bytes(list(lib.shards_dir.iterdir()))
        index_bytes = folder_bytes([lib.root / manifest["index_file"]])
        ids_bytes = folder_bytes([lib.root / manifest["ids_file"]])
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
    args = parser.parse_args()

    console = Console(width=None if sys.stdout.isatty() else 160)  # keep the table readable in logs
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "search", "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "faiss": faiss.__version__},
            "goal": "1M frames at p50 <= 20 ms", "results": results}, indent=1))
        console.log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
