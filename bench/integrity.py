"""What verifying a library's files costs: checksum throughput, an index file's first open (checksum + memory-mapped
read) and a shard read with and without its checksums; and what a shard holds: its bytes per frame with the fp16
frame tokens format 1 stored and without them (what `index` writes now), and `ask --library`'s read of a shard's
frame times against the whole-shard read it replaced.

Index files are verified whole the first time a process opens them (a search process pays it once per part;
`videomini library DIR --check` pays it for every file); a shard read verifies its header and the tensors it reads.

    python bench/integrity.py                       # a 200k-frame index, a one-hour shard
    python bench/integrity.py --frames 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from videomini.storage.files import checksum_file
from videomini.storage.shards import ShardContent, ShardStore
from videomini.storage.vector_index import IndexSpec, new_index, read_index, write_index

HASH_BYTES = 256 << 20


def best_of(n: int, run) -> float:
    """The fastest of `n` runs, in seconds (the machine is shared: the minimum is the least noisy)."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def hash_throughput(repeats: int) -> list[dict]:
    data = np.random.default_rng(0).bytes(HASH_BYTES)
    rows = []
    for name, run in (("crc32 (used)", lambda: zlib.crc32(data)), ("sha256", lambda: hashlib.sha256(data).digest()),
                      ("blake2b", lambda: hashlib.blake2b(data).digest())):
        seconds = best_of(repeats, run)
        rows.append({"what": f"checksum, {name}", "size_mb": HASH_BYTES / 1e6, "seconds": seconds,
                     "gb_per_s": HASH_BYTES / 1e9 / seconds})
    return rows


def index_open(frames: int, dim: int, folder: Path, repeats: int) -> list[dict]:
    """A Flat index file of `frames` vectors: checksum it (what the first open adds) and read it memory-mapped."""
    index = new_index(dim, IndexSpec("Flat"))
    rng = np.random.default_rng(1)
    for start in range(0, frames, 65536):
        index.add(rng.standard_normal((min(65536, frames - start), dim), dtype=np.float32))
    path = folder / "part.frames.faiss"
    digest = write_index(index, path)
    assert checksum_file(path) == digest.checksum
    size_mb = path.stat().st_size / 1e6
    verify = best_of(repeats, lambda: checksum_file(path))
    mapped = best_of(repeats, lambda: read_index(path, ivf=False))
    return [{"what": f"index file, {frames:,} x {dim}-d: verify (first open)", "size_mb": size_mb, "seconds": verify,
             "gb_per_s": size_mb / 1e3 / verify},
            {"what": "index file: memory-mapped read_index", "size_mb": size_mb, "seconds": mapped, "gb_per_s": None}]


def shard_read(frames: int, dim: int, token_dim: int, folder: Path, repeats: int) -> list[dict]:
    """A one-video shard as format 1 wrote it (with frame tokens): the index build's read (embeddings +
    timestamps), the whole-shard read `ask --library` made for its timestamps, and the times-only read it makes
    now, verified against the shard's checksums and not."""
    rng = np.random.default_rng(2)
    store = ShardStore(folder / "shards")
    tensors = {"frame_tokens": rng.standard_normal((frames, 1, token_dim)).astype(np.float16),
               "embeddings": rng.standard_normal((frames, dim)).astype(np.float32),
               "timestamps_s": np.arange(frames, dtype=np.float64)}
    store.write("1-x.safetensors", ShardContent(tensors, {"video_id": "1"}))
    header = store.header_checksum("1-x.safetensors")
    size_mb = (folder / "shards" / "1-x.safetensors").stat().st_size / 1e6
    rows = []
    for what, read, keys in (("vectors", store.read_vectors, ("embeddings", "timestamps_s")),
                             ("frames (ask --library before)", store.read_frames, tuple(tensors)),
                             ("times (ask --library now)", store.read_times, ("timestamps_s",))):
        plain = best_of(repeats, lambda keys=keys: unverified_read(folder / "shards" / "1-x.safetensors", keys))
        checked = best_of(repeats, lambda read=read: read("1-x.safetensors", header))
        rows.append({"what": f"shard of {frames:,} frames: read {what}, unverified", "size_mb": size_mb,
                     "seconds": plain, "gb_per_s": None})
        rows.append({"what": f"shard: read {what}, verified", "size_mb": size_mb, "seconds": checked,
                     "gb_per_s": None})
    return rows


def shard_bytes(frames: int, dim: int, token_dim: int, folder: Path) -> list[dict]:
    """Bytes per frame of a shard with frame tokens (format 1) and without (what `index` writes), and what the
    difference comes to over a million frames."""
    rng = np.random.default_rng(3)
    store = ShardStore(folder / "sizes")
    vectors = {"embeddings": rng.standard_normal((frames, dim)).astype(np.float32),
               "timestamps_s": np.arange(frames, dtype=np.float64)}
    sizes = {}
    for name, tensors in (("with", {"frame_tokens": rng.standard_normal((frames, 1, token_dim)).astype(np.float16),
                                    **vectors}), ("without", vectors)):
        store.write(f"{name}.safetensors", ShardContent(tensors, {"video_id": "1"}))
        sizes[name] = (folder / "sizes" / f"{name}.safetensors").stat().st_size / frames
    saved_gb = (sizes["with"] - sizes["without"]) * 1e6 / 1e9
    return [{"what": f"shard bytes/frame, with 1 x {token_dim} fp16 frame tokens (format 1)", "size_mb": None,
             "seconds": None, "gb_per_s": None, "bytes_per_frame": sizes["with"]},
            {"what": "shard bytes/frame, without (what index writes now)", "size_mb": None, "seconds": None,
             "gb_per_s": None, "bytes_per_frame": sizes["without"]},
            {"what": "disk saved per million frames (GB)", "size_mb": None, "seconds": None, "gb_per_s": None,
             "bytes_per_frame": None, "saved_gb_per_million_frames": saved_gb}]


def unverified_read(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        return {k: f.get_tensor(k) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000, help="vectors in the index file")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--shard-frames", type=int, default=3600, help="frames of the shard (an hour at 1 fps)")
    parser.add_argument("--token-dim", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = hash_throughput(args.repeats) + index_open(args.frames, args.dim, Path(tmp), args.repeats)
        rows += shard_read(args.shard_frames, args.dim, args.token_dim, Path(tmp), args.repeats)
        rows += shard_bytes(args.shard_frames, args.dim, args.token_dim, Path(tmp))
    table = Table(title=f"verification cost and shard contents (best of {args.repeats}; shared machine, noisy)")
    for column in ("what", "MB", "seconds", "GB/s", "bytes/frame or GB"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for r in rows:
        figure = r.get("bytes_per_frame") or r.get("saved_gb_per_million_frames")
        table.add_row(r["what"], "" if r["size_mb"] is None else f"{r['size_mb']:.0f}",
                      "" if r["seconds"] is None else f"{r['seconds']:.4f}",
                      "" if r["gb_per_s"] is None else f"{r['gb_per_s']:.2f}",
                      "" if figure is None else f"{figure:,.1f}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.platform(), "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
