"""Wall time of the commands a new user runs first, and how much of it is spent importing.

    python bench/cli.py [--runs 3] [--library DIR] [--json out.json]

Each command runs as the console script in a fresh interpreter (`python -m videomini.cli`), as a user runs it:
`--help`, `ask` on a missing file, `info` on the example video, `search` on a small library — the example video
indexed with a tiny random checkpoint (frames: the CLIP text tower embeds the query) plus its on-screen text —
cold (the first search: the checkpoint, the library and the text models are read for the first time; the page
cache is not dropped, that needs root) and warm (the median of the next runs). The import share comes from one
more run under `python -X importtime`:
the summed time of the top-level imports over that run's wall time. The machine's load average is printed
beside the table: other jobs on a shared machine lengthen every figure; the shares hold better than the times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTION = "When does the train to London leave?"


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: list[str], env: dict, importtime: bool = False) -> tuple[float, float, float | None]:
    """(wall seconds, CPU seconds, seconds of top-level imports when `importtime`) of one run of the console
    script. CPU time (user + system) is what the command costs; wall time adds the waits for a busy machine."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "videomini.cli", *args]
    started, cpu = time.perf_counter(), cpu_of_children()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    wall, cpu = time.perf_counter() - started, cpu_of_children() - cpu
    if not importtime:
        return wall, cpu, None
    # lines "import time: self | cumulative | name"; a top-level import's name has no leading spaces
    top = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")]
    imports_us = sum(int(cumulative) for _, cumulative, name in top[1:] if not name.startswith("  ")
                     and cumulative.strip().isdigit())
    return wall, cpu, imports_us / 1e6


def build_library(workdir: Path, env: dict) -> Path:
    """The example video indexed with a tiny random checkpoint (frames) and its on-screen text."""
    video, checkpoint, library = workdir / "example.mp4", workdir / "tiny", workdir / "example.vmlib"
    subprocess.run([sys.executable, str(REPO / "examples" / "make_example.py"), str(video)], check=True, env=env,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "videomini.tiny_checkpoint", str(checkpoint)], check=True, env=env,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "videomini.cli", "index", str(video), "--library", str(library),
                    "--model", str(checkpoint), "--signals", "ocr"], check=True, env=env, capture_output=True)
    return library


def measure(name: str, args: list[str], env: dict, runs: int, cold_warm: bool) -> list[dict]:
    """Rows for one command: (cold and) warm wall time, and the import share."""
    timed = [run(args, env)[:2] for _ in range(runs + (1 if cold_warm else 0))]
    wall, _, imports = run(args, env, importtime=True)
    share = round(imports / wall, 2)
    rows = []
    if cold_warm:
        first_wall, first_cpu = timed.pop(0)
        rows.append({"command": name, "cache": "cold", "wall_s": round(first_wall, 2), "cpu_s": round(first_cpu, 2),
                     "import_share": share})
    rows.append({"command": name, "cache": "warm" if cold_warm else "-", "runs": len(timed),
                 "wall_s": round(statistics.median(w for w, _ in timed), 2),
                 "cpu_s": round(statistics.median(c for _, c in timed), 2), "import_s": round(imports, 2),
                 "import_share": share})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="warm runs per command (median reported)")
    parser.add_argument("--library", type=Path, help="search this library instead of building the example's")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    workdir = Path(tempfile.mkdtemp(prefix="videomini-bench-cli-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    library = args.library or build_library(workdir, env)
    video = workdir / "example.mp4" if not args.library else REPO / "examples" / "example.mp4"
    rows: list[dict] = []
    rows += measure("--help", ["--help"], env, args.runs, False)
    rows += measure("ask (missing file)", ["ask", str(workdir / "missing.mp4"), QUESTION], env, args.runs, False)
    rows += measure("info", ["info", str(video)], env, args.runs, False)
    rows += measure("search (small library)", ["search", "train to London", "--library", str(library)], env,
                    args.runs, True)
    load = os.getloadavg()
    table = Table(title=f"videomini commands, {os.cpu_count()} cores, load average {load[0]:.1f} (1 min)")
    for column in ("command", "cache", "wall s", "cpu s", "import s", "import share"):
        table.add_column(column, justify="left" if column in ("command", "cache") else "right")
    for row in rows:
        table.add_row(row["command"], row["cache"], f"{row['wall_s']:.2f}", f"{row['cpu_s']:.2f}",
                      "" if row.get("import_s") is None else f"{row['import_s']:.2f}",
                      f"{row['import_share']:.0%}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"cores": os.cpu_count(), "load_average": load, "rows": rows}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
