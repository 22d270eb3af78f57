"""Indexing throughput (frames/s) of the local engine vs the Ray engine on this machine: Ray's overhead.

Indexes the same generated videos (ffmpeg testsrc, 640x360 H.264) into a fresh library with each engine, each run
in a fresh subprocess, timed end to end (model loading included):

    local      decoder processes + the encoder in this process (the default engine)
    ray        --engine ray without an address: starts a local Ray, runs, shuts it down
    ray-warm   a Ray already running in the process (as on a cluster): the job alone, actor start included

The model defaults to a tiny random checkpoint (tests/conftest.make_tiny_checkpoint), so the numbers measure the
pipeline, not a model; pass --model for a real one.

    python bench/engines.py [--videos 4] [--seconds 60] [--model PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENGINES = ("local", "ray", "ray-warm")


def measure(engine: str, videos: list[str], model: str, fps: float, batch_size: int) -> dict:
    """Child process: index `videos` into a fresh library with `engine`; report frames and wall time."""
    import shutil

    from videomini.pipelines import index_videos
    from videomini.pipelines.local_engine import LocalEngine
    from videomini.pipelines.ray_engine import RayEngine

    ray_started = 0.0
    if engine == "ray-warm":
        import logging

        import ray

        from videomini.pipelines.ray_engine import short_temp_dir

        temp_dir = short_temp_dir()
        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
                 logging_level=logging.WARNING)
        ray_started = time.perf_counter() - start
    library = tempfile.mkdtemp(prefix="videomini-bench-lib-")
    try:
        start = time.perf_counter()
        report = index_videos(library, videos, model_id=model, fps=fps, batch_size=batch_size,
                              engine=LocalEngine() if engine == "local" else RayEngine())
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(library, ignore_errors=True)
        if engine == "ray-warm":
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
    return {"engine": engine, "videos": len(report.indexed), "failed": len(report.failed), "frames": report.frames,
            "seconds": round(seconds, 2), "frames_per_s": round(report.frames / seconds, 1),
            "ray_init_s": round(ray_started, 2) if ray_started else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each generated video")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=None, help="checkpoint (default: a tiny random one in the cache)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "videomini-bench")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "VIDEOS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        row = measure(args.child[0], json.loads(args.child[1]), args.model, args.fps, args.batch_size)
        print(json.dumps(row))
        return

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    from rich.console import Console
    from rich.table import Table

    from tests.synth import make_testsrc_video

    console = Console()
    args.cache.mkdir(parents=True, exist_ok=True)
    videos = []
    for i in range(args.videos):  # lengths differ by a second so that no two files are the same
        path = args.cache / f"testsrc_640x360_{args.seconds + i:g}s.mp4"
        if not path.exists():
            console.print(f"generating {path} ...")
            make_testsrc_video(path, args.seconds + i, size=(640, 360), fps=30)
        videos.append(str(path))
    model = args.model
    if model is None:
        model = str(args.cache / "tiny-checkpoint")
        if not (Path(model) / "config.json").is_file():
            from conftest import make_tiny_checkpoint

            console.print(f"building a tiny random checkpoint in {model} ...")
            make_tiny_checkpoint(Path(model), with_clip_text=True)

    # no token file in ~/.ray for these short local runs (the Ray binds this machine only for the run)
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    rows = []
    for engine in args.engines:
        out = subprocess.run([sys.executable, __file__, "--child", engine, json.dumps(videos), "--model", model,
                              "--fps", str(args.fps), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, env=env, cwd=str(REPO))
        if out.returncode != 0:
            console.print(f"[red]{engine} failed:[/red] {out.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        console.print(f"{engine:8s}: {row['frames']} frames in {row['seconds']:.1f} s")

    base = next((r for r in rows if r["engine"] == "local"), None)
    for row in rows:
        row["overhead"] = round(row["seconds"] / base["seconds"] - 1, 3) if base else None
    table = Table(title=f"videomini index: {args.videos} videos x {args.seconds:g} s, 640x360 H.264, "
                        f"{args.fps:g} fps, {os.cpu_count()} CPUs, model {Path(model).name}")
    for col in ("engine", "videos", "frames", "seconds", "frames/s", "overhead vs local"):
        table.add_column(col, justify="right")
    for r in rows:
        overhead = "" if r["overhead"] is None or r["engine"] == "local" else f"{r['overhead']:+.0%}"
        table.add_row(r["engine"], str(r["videos"]), str(r["frames"]), f"{r['seconds']:.1f}",
                      f"{r['frames_per_s']:.1f}", overhead)
    console.print(table)
    for r in rows:
        if r["ray_init_s"]:
            console.print(f"{r['engine']}: its Ray started in {r['ray_init_s']:.1f} s before the timed run")
    if args.json:
        args.json.write_text(json.dumps({"videos": args.videos, "seconds_per_video": args.seconds, "fps": args.fps,
                                         "batch_size": args.batch_size, "model": model, "cpus": os.cpu_count(),
                                         "results": rows}, indent=2))
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
