"""`videomini serve` under load: N concurrent clients searching (and a few asking) a generated library.

Builds a library of `--videos` short generated videos (a different caption on screen in each; frames with the tiny
random checkpoint the tests use, on-screen text with the bundled RapidOCR and MiniLM), starts a real
`videomini serve` process on a free loopback port, warms it (first search, first ask: the model loads once), then
runs `--clients` concurrent clients, each issuing `--searches` searches back to back, while `--asks` asks go to
the generation queue beside them. Reports throughput, p50/p99 latency and errors per kind (errors must be 0).
Loopback only; every loop is bounded; the server is always stopped.

    python bench/serve.py                     # 24 videos, 8 clients x 25 searches, 4 asks
    python bench/serve.py --clients 16 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from videomini.pipelines.serve.process import serve_process

REPO = Path(__file__).resolve().parents[1]
WORDS = ["LOADING DOCK", "FIRE EXIT", "STAFF ONLY", "OPEN 24 HOURS", "NO PARKING", "PLATFORM 9", "GATE B12",
         "CHECK IN", "BAGGAGE CLAIM", "TICKET OFFICE", "CAFE", "PHARMACY", "RECEPTION", "LIBRARY", "GARDEN",
         "BAKERY", "MUSEUM", "STATION", "HARBOUR", "BRIDGE", "MARKET", "THEATRE", "STADIUM", "HOSPITAL"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bench never downloads
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_library(workdir: Path, n_videos: int, seconds: float) -> tuple[Path, Path]:
    """(library folder, checkpoint folder): generated captioned videos indexed with frames and on-screen text."""
    sys.path.insert(0, str(REPO / "tests"))
    from videomini.ask import VideoMini
    from videomini.pipelines import index_videos

    from conftest import make_tiny_checkpoint
    from narrated import Caption, make_narrated_video

    checkpoint = make_tiny_checkpoint(workdir / "tiny", with_clip_text=True)
    videos = []
    (workdir / "videos").mkdir()
    for i in range(n_videos):
        caption = Caption(1.0, seconds, WORDS[i % len(WORDS)] + ("" if i < len(WORDS) else f" {i}"))
        videos.append(make_narrated_video(workdir / "videos" / f"clip{i:02d}.mp4", duration_s=seconds, lines=[],
                                          captions=[caption], with_audio=False, size=(320, 180)).path)
    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    report = index_videos(workdir / "library", videos, vm, model_id=str(checkpoint), signals=("ocr",))
    if report.failed:
        raise SystemExit(f"indexing failed: {report.failed}")
    return workdir / "library", checkpoint


async def timed(client, method: str, url: str, **kwargs) -> tuple[float, int]:
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
        status = response.status_code
    except Exception:  # noqa: BLE001 - any transport failure is an error of the run
        status = -1
    return time.perf_counter() - started, status


async def load(base: str, clients: int, searches: int, asks: int) -> tuple[dict[str, list], float]:
    import httpx

    results: dict[str, list] = {"search": [], "ask": []}
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        await client.get("/api/search", params={"q": "warm up"})  # text tower and MiniLM load once
        await client.post("/api/ask", json={"question": "warm up", "max_new_tokens": 2})  # the LLM loads once

        async def searcher(i: int) -> None:
            for j in range(searches):
                query = WORDS[(i * searches + j) % len(WORDS)].lower()
                results["search"].append(await timed(client, "GET", "/api/search", params={"q": query}))

        async def asker(i: int) -> None:
            results["ask"].append(await timed(client, "POST", "/api/ask", json={
                "question": f"What is written at the {WORDS[i % len(WORDS)].lower()}?", "max_new_tokens": 8}))

        started = time.perf_counter()
        await asyncio.gather(*(searcher(i) for i in range(clients)), *(asker(i) for i in range(asks)))
        wall = time.perf_counter() - started
    return results, wall


def summarise(results: dict[str, list], wall: float) -> list[dict]:
    import numpy as np

    rows = []
    for kind, samples in results.items():
        if not samples:
            continue
        seconds = np.array([s for s, _ in samples])
        errors = sum(1 for _, status in samples if not 200 <= status < 300)
        rows.append({"kind": kind, "requests": len(samples), "errors": errors,
                     "throughput_per_s": round(len(samples) / wall, 2),
                     "p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 1),
                     "p99_ms": round(float(np.percentile(seconds, 99)) * 1000, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each generated video")
    parser.add_argument("--clients", type=int, default=8, help="concurrent searching clients")
    parser.add_argument("--searches", type=int, default=25, help="searches per client")
    parser.add_argument("--asks", type=int, default=4, help="asks sent beside the searches")
    parser.add_argument("--queue", type=int, default=4, help="the server's --queue (waiting generations)")
    parser.add_argument("--workdir", default=None, help="where the library goes (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if args.videos < 20:
        parser.error("--videos: at least 20")

    from rich.console import Console
    from rich.table import Table

    console = Console()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="videomini-bench-serve-") as tmp:
        started = time.perf_counter()
        with console.status(f"generating and indexing {args.videos} videos …"):
            library, checkpoint = build_library(Path(tmp), args.videos, args.seconds)
        build_s = time.perf_counter() - started
        with serve_process(["--library", str(library), "--model", str(checkpoint), "--device", "cpu",
                            "--queue", str(args.queue)]) as base:  # loopback, a free port, always stopped
            results, wall = asyncio.run(load(base, args.clients, args.searches, args.asks))
    rows = summarise(results, wall)
    table = Table(title=f"videomini serve: {args.clients} clients x {args.searches} searches + {args.asks} asks, "
                        f"{args.videos} videos ({wall:.1f} s wall)")
    for column in ("kind", "requests", "errors", "throughput/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for row in rows:
        table.add_row(row["kind"], str(row["requests"]), str(row["errors"]), f"{row['throughput_per_s']:.1f}",
                      f"{row['p50_ms']:.0f}", f"{row['p99_ms']:.0f}")
    console.print(table)
    console.print(f"[dim]library built in {build_s:.0f} s; CPU: {os.cpu_count()} cores ({platform.machine()}); "
                  f"tiny random checkpoint, so ask latency is queueing + a tiny model, not LLaVA-Mini's[/dim]")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "wall_s": round(wall, 2), "build_s": round(build_s, 1),
                                         "args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()}}, indent=2))
    if any(row["errors"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
