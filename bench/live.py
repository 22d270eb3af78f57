"""`videomini watch` on this machine with the tiny random checkpoint and generated streams.

1. ingest   A looped file decoded as fast as it goes (the timeline advancing on the file's clock), `--retain 1h`:
            sustained ingestion against real time, and resident memory (RSS) once 1 h and once 8 h of stream are
            in (goal: RSS at 8 h <= 1.1 x RSS at 1 h; the archive holds the same hour both times).
2. realtime A file played at its own pace (`--realtime`) for `--realtime-s` seconds while questions are asked
            back to back: ask latency p50 / p99 during ingestion, lag behind live, frames dropped.
3. library  A narrated stream (tests/narrated.py: espeak-ng sentences) played at its pace with `--signals speech`,
            committed into a library in `--piece-s` pieces: time from a frame being shown, and from a sentence
            being said, to it being searchable (its piece committed and its index segment published).

The model is videomini.tiny_checkpoint (random weights: the numbers measure the pipeline, not a model).

    python bench/live.py [--hours 1 8] [--realtime-s 60] [--piece-s 10] [--sections ingest realtime library]
                         [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # narrated.py: the narrated test stream

QUESTIONS = ("What happened in the last 10 seconds?", "What is on the screen?", "What changed since the start?",
             "What colour is the bar at the top?")


def make_source(path: Path, seconds: int, fps: int, size: str = "320x240") -> Path:
    """testsrc2 with a frame every 1/fps s (a keyframe each second): the looped file of the ingestion run."""
    if not path.exists():
        subprocess.run(["ffmpeg", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={size}:rate={fps}", "-t", str(seconds), "-c:v", "libx264", "-g", str(fps),
                        "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def tiny_checkpoint(cache: Path) -> str:
    from videomini.tiny_checkpoint import make_tiny_checkpoint

    folder = cache / "tiny-checkpoint"
    if not (folder / "config.json").is_file():
        make_tiny_checkpoint(folder, with_clip_text=True)
    return str(folder)


def ingest(vm, source: Path, hours: list[float], archive: Path) -> dict:
    """Loop `source` as fast as it decodes; RSS and ingestion rate when each mark of stream hours is reached."""
    from videomini.live import WatchOptions, parse_source, watch

    options = WatchOptions(retain_s=3600.0, window_s=600.0, archive_dir=str(archive))
    started = time.perf_counter()
    session = watch(vm, parse_source(str(source), loop=True), options)
    marks = []
    try:
        for hour in hours:
            session.wait_for_stream(hour * 3600.0)
            status = session.status()
            wall = time.perf_counter() - started
            marks.append({"stream_h": hour, "wall_s": round(wall, 1), "x_realtime": round(hour * 3600.0 / wall, 1),
                          "rss_mb": round(status["resident_bytes"] / 2**20, 1),
                          "frames_retained": status["frames_retained"], "frames_in_ram": status["frames_in_ram"],
                          "archive_mb": round(sum(f.stat().st_size for f in archive.rglob("*") if f.is_file())
                                              / 2**20, 1)})
            print(f"  {hour:g} h of stream after {wall:.0f} s: RSS {marks[-1]['rss_mb']} MB", flush=True)
    finally:
        session.close()
    return {"marks": marks, "rss_ratio": round(marks[-1]["rss_mb"] / marks[0]["rss_mb"], 3)}


def realtime(vm, source: Path, seconds: float, library: Path | None, piece_s: float,
             signals: tuple[str, ...] = ()) -> dict:
    """Play `source` at its own pace for `seconds`, asking questions back to back; lag and drops sampled."""
    from videomini.live import WatchOptions, parse_source
    from videomini.pipelines.watch import start_watch

    committed: list[tuple[float, dict]] = []
    options = WatchOptions(max_new_tokens=16, piece_s=piece_s if library else None, signals=signals)
    session, pieces = start_watch(vm, parse_source(str(source), realtime=True, loop=True), options, library,
                                  on_event=lambda kind, d: committed.append((time.time(), d)) if kind == "piece"
                                  else None)
    latencies, lags = [], []
    try:
        session.wait_for_frames(2, 30)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            asked = time.perf_counter()
            session.ask(QUESTIONS[len(latencies) % len(QUESTIONS)])
            latencies.append(time.perf_counter() - asked)
            lags.append(session.status()["lag_s"])
        status = session.status()
    finally:
        session.close()
        if pieces is not None:
            pieces.close()
    out = {"seconds": seconds, "questions": len(latencies),
           "ask_p50_s": round(statistics.median(latencies), 3),
           "ask_p99_s": round(sorted(latencies)[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
           "lag_max_s": round(max(lags), 3), "lag_mean_s": round(statistics.mean(lags), 3),
           "frames_encoded": status["frames_encoded"], "frames_dropped": status["frames_dropped"]}
    if library is not None:
        out["searchable_after_s"] = _searchable_delays(session, committed, piece_s)
    return out


def _searchable_delays(session, committed: list[tuple[float, dict]], piece_s: float) -> dict:
    """A frame is searchable once its piece is committed: from the piece's first frame (the oldest in it, the
    worst case) and from its last frame (the best case) to the commit, in wall seconds; and from the end of
    each spoken sentence (the wall time it finished being said) to the commit of the piece it is in."""
    from datetime import datetime

    worst, best, spoken = [], [], []
    starts = []
    for at, details in committed:
        start = datetime.fromisoformat(details["start_utc"].replace("Z", "+00:00")).timestamp()
        end = start + (details["frames"] - 1) / session.options.fps
        worst.append(at - start)
        best.append(at - end)
        starts.append((start - session.timeline.start_utc.timestamp(), end + 1.0, at))
    for seg in (session.signals.segments() if session.signals is not None else []):
        for start_s, _end_wall, at in starts:
            if start_s <= seg.start_s < start_s + piece_s:
                spoken.append(at - session.timeline.wall(seg.end_s).timestamp())
    return {"pieces": len(committed), "piece_s": piece_s,
            "oldest_frame_mean": round(statistics.mean(worst), 2) if worst else None,
            "newest_frame_mean": round(statistics.mean(best), 2) if best else None,
            "sentences": len(spoken),
            "sentence_mean": round(statistics.mean(spoken), 2) if spoken else None,
            "sentence_max": round(max(spoken), 2) if spoken else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--realtime-s", type=float, default=60.0)
    parser.add_argument("--piece-s", type=float, default=10.0)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "videomini-bench-live")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sections", nargs="+", default=["ingest", "realtime", "library"],
                        choices=["ingest", "realtime", "library"])
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    from videomini.ask import VideoMini

    vm = VideoMini.from_pretrained(tiny_checkpoint(args.cache), device="cpu")
    work = Path(tempfile.mkdtemp(prefix="live-", dir=args.cache))
    results: dict = {}
    try:
        if "ingest" in args.sections:
            print("ingest (looped file, as fast as it decodes, --retain 1h):", flush=True)
            results["ingest"] = ingest(vm, make_source(args.cache / "loop_1fps.mp4", 600, 1), args.hours,
                                       work / "archive")
        if "realtime" in args.sections:
            print("realtime (questions back to back while the stream plays):", flush=True)
            source = make_source(args.cache / "realtime_10fps.mp4", 120, 10)
            results["realtime"] = realtime(vm, source, args.realtime_s, None, args.piece_s)
        if "library" in args.sections:
            print("library (a narrated stream committed in pieces with its speech while it plays):", flush=True)
            from narrated import make_narrated_video

            narrated = args.cache / "narrated.mp4"
            if not narrated.exists():
                make_narrated_video(narrated)
            results["library"] = realtime(vm, narrated, args.realtime_s, work / "library", args.piece_s,
                                          signals=("speech",))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="videomini watch, tiny checkpoint, this machine's CPU")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for mark in results.get("ingest", {}).get("marks", []):
        table.add_row(f"RSS after {mark['stream_h']:g} h of stream", f"{mark['rss_mb']} MB")
        table.add_row(f"ingestion to {mark['stream_h']:g} h", f"{mark['x_realtime']}x real time")
    if "ingest" in results:
        table.add_row("RSS ratio (last / first mark)", f"{results['ingest']['rss_ratio']}")
    for name in ("realtime", "library"):
        if name not in results:
            continue
        live = results[name]
        table.add_row(f"{name}: ask latency p50 / p99 while ingesting", f"{live['ask_p50_s']} / {live['ask_p99_s']} s")
        table.add_row(f"{name}: lag behind live mean / max", f"{live['lag_mean_s']} / {live['lag_max_s']} s")
        table.add_row(f"{name}: frames encoded / dropped", f"{live['frames_encoded']} / {live['frames_dropped']}")
    if "library" in results:
        delays = results["library"]["searchable_after_s"]
        table.add_row(f"frame -> searchable ({delays['piece_s']:g} s pieces), newest / oldest frame",
                      f"{delays['newest_frame_mean']} / {delays['oldest_frame_mean']} s")
        table.add_row(f"spoken sentence -> searchable, mean / max ({delays['sentences']} sentences)",
                      f"{delays['sentence_mean']} / {delays['sentence_max']} s")
    Console().print(table)


if __name__ == "__main__":
    main()
