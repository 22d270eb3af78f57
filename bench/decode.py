"""1 fps sampling speed (x real time) and peak RSS per backend (and PyAV's fast mode) on generated 640x360 H.264.

Each measurement runs in a fresh subprocess so that its peak RSS (ru_maxrss) belongs to that backend and
length alone. Videos come from ffmpeg's testsrc and are cached under a temp folder.

    python bench/decode.py [--minutes 6 60] [--backends pyav decord ffmpeg] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(path: str, backend: str, fps: float, batch_size: int) -> dict:
    """Child process: stream the whole video, touch every batch, report time and peak RSS."""
    from videomini.video import probe, sample_frames

    info = probe(path)
    start = time.perf_counter()
    n_frames, checksum = 0, 0
    name, _, mode = backend.partition("-")  # "pyav-fast": PyAV with decode="fast"
    with sample_frames(path, fps=fps, batch_size=batch_size, backend=name, decode=mode or "exact") as batches:
        for frames, _timestamps_s in batches:
            n_frames += len(frames)
            checksum += int(frames[:, ::97, ::97].sum())
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"backend": backend, "video_s": info.duration_s, "frames": n_frames, "wall_s": round(seconds, 2),
            "x_realtime": round(info.duration_s / seconds, 1), "peak_rss_mb": round(peak_mb, 1),
            "checksum": checksum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[6, 60])
    parser.add_argument("--backends", nargs="+", default=["pyav", "pyav-fast", "decord", "ffmpeg"],
                        help="pyav-fast: PyAV skipping the frames nobody samples (sample_frames(decode='fast'))")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "videomini-bench")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.fps, args.batch_size)))
        return

    sys.path.insert(0, str(REPO))
    from rich.console import Console
    from rich.table import Table

    from tests.synth import make_testsrc_video

    console = Console()
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for minutes in args.minutes:
        path = args.cache / f"testsrc_640x360_{minutes:g}min.mp4"
        if not path.exists():
            console.print(f"generating {path} ...")
            make_testsrc_video(path, minutes * 60, size=(640, 360), fps=30)
        for backend in args.backends:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), backend, "--fps", str(args.fps),
                 "--batch-size", str(args.batch_size)],
                capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            if out.returncode != 0:
                console.print(f"[red]{backend} {minutes:g} min failed:[/red] {out.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["minutes"] = minutes
            rows.append(row)
            console.print(f"{backend:7s} {minutes:5g} min: {row['x_realtime']}x real time, {row['peak_rss_mb']} MB")

    ratios = {}
    if len(args.minutes) >= 2:
        short, long = min(args.minutes), max(args.minutes)
        for backend in args.backends:
            a = [r for r in rows if r["backend"] == backend and r["minutes"] == short]
            b = [r for r in rows if r["backend"] == backend and r["minutes"] == long]
            if a and b:
                ratios[backend] = round(b[0]["peak_rss_mb"] / a[0]["peak_rss_mb"], 3)

    table = Table(title=f"videomini decode: {args.fps:g} fps sampling of 640x360 H.264 (30 fps)")
    for col in ("backend", "video", "frames", "wall s", "× real time", "peak RSS MB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["backend"], f"{r['minutes']:g} min", str(r["frames"]), f"{r['wall_s']:.1f}",
                      f"{r['x_realtime']:.1f}", f"{r['peak_rss_mb']:.0f}")
    console.print(table)
    for backend, ratio in ratios.items():
        ok = "[green]flat[/green]" if ratio <= 1.15 else "[red]grows[/red]"
        console.print(f"{backend}: peak RSS {max(args.minutes):g} min / {min(args.minutes):g} min = {ratio} {ok}")
    if args.json:
        args.json.write_text(json.dumps({"fps": args.fps, "batch_size": args.batch_size, "results": rows,
                                         "rss_ratio_long_over_short": ratios}, indent=2))
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
