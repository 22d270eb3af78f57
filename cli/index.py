"""`videomini index PATH... --library DIR`: batch indexing with progress and a summary."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from videomini.cli.common import checked_index, display_name, warn, without_path
from videomini.cli.main import app
from videomini.config import FPS


@app.command()
def index(
    paths: list[Path] = typer.Argument(..., help="Video files and folders."),
    library: Path = typer.Option(..., "--library", help="Library folder (created when absent)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Scan folders recursively."),
    fps: float = typer.Option(FPS, "--fps", help="Frames indexed per second of video."),
    decode: str = typer.Option("exact", "--decode", help="exact: decode every frame; fast: skip frames nobody "
                                                         "samples (B-frames; keyframes when sparser than them)."),
    model: Optional[str] = typer.Option(None, "--model", envvar="VIDEOMINI_MODEL", metavar="ID_OR_PATH",
                                        help="Checkpoint folder or hub id; default: the model the library was "
                                             "indexed with, else ICTNLP/llava-mini-llama-3.1-8b"),
    workers: int = typer.Option(2, "--workers", help="Decoder processes (videos decoded ahead, in isolation)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again the files that failed before."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds without a decoded frame before a file fails."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda when present)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on "
                                        "CPU)."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another indexer to finish."),
    engine: str = typer.Option("local", "--engine", help="local (this machine), ray (Ray Data: decode tasks, "
                               "encoder actors; this process writes the library), or an installed engine's name."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster for --engine ray "
                                              "(default: $RAY_ADDRESS, else a local Ray on this machine)."),
    signals: str = typer.Option("", "--signals", help="Also store speech and/or on-screen text: speech,ocr "
                                "(offline models from pip packages; searchable beside the frames)."),
    visual: bool = typer.Option(True, "--visual/--no-visual", help="--no-visual: no LLaVA-Mini model, store only "
                                "--signals (frames already stored for a file are kept)."),
    text_model: Optional[str] = typer.Option(None, "--text-model", help="Sentence embedder of speech / on-screen "
                                             "text: a sentence-transformers folder or hub id (default: the bundled "
                                             "all-MiniLM-L6-v2); recorded in the library, used by search and ask."),
    asr_model: Optional[str] = typer.Option(None, "--asr-model", help="Speech recogniser: a Whisper size "
                                            "(small.en) or a CTranslate2 faster-whisper folder (default: the "
                                            "bundled tiny.en); recorded in the library."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Index videos into a library: incremental (unchanged files are skipped), resumable and crash-safe."""
    checked_index(fps, workers, timeout, wait)  # before any heavy import: a bad flag is answered at once

    from rich.console import Console

    from videomini.config import IndexConfig
    from videomini.library import load_engine
    from videomini.pipelines.local_engine import LocalEngine
    from videomini.pipelines.ray_engine import RayEngine

    console = Console(stderr=as_json)
    progress, on_event = _progress(console, quiet=as_json)
    config = IndexConfig(model_id=model, device=device, dtype=dtype, recursive=recursive, fps=fps, decode=decode,
                         timeout_s=timeout, wait_s=wait, retry_failed=retry_failed, visual=visual,
                         signals=tuple(name.strip() for name in signals.split(",") if name.strip()),
                         text_model=text_model, asr_model=asr_model)
    engines = {"local": lambda: LocalEngine(workers=workers), "ray": lambda: RayEngine(address=ray_address)}
    chosen = engines[engine]() if engine in engines else load_engine(engine)  # a third-party engine by name
    with progress:
        report = chosen.index(library, paths, None, config, on_event)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(console, library, report)
    for warning in report.warnings:
        warn(warning)
    if report.failed:
        raise typer.Exit(1)


def _progress(console: Any, quiet: bool = False) -> tuple[Any, Callable[[str, dict], None]]:
    """On a terminal a progress display (files, frames of the current file, time left) and the event handler that
    drives it; elsewhere (a pipe, a log) one plain line per file, none when `quiet` (--json for a program)."""
    if not console.is_terminal:
        return contextlib.nullcontext(), (lambda kind, details: None) if quiet else _plain_lines(console)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[current]}"), console=console, transient=True)
    videos_task = progress.add_task("files", total=None, current="")
    frames_task = progress.add_task("frames", total=None, current="")

    def on_event(kind: str, details: dict) -> None:
        if kind == "plan":
            progress.update(videos_task, total=details["todo"])
        elif kind == "loading":
            progress.update(videos_task, current=f"loading {details['model_id']} …")
        elif kind == "video":
            progress.update(videos_task, current=display_name(details["path"]))
            progress.reset(frames_task, total=None)
        elif kind == "info":
            progress.update(frames_task, total=details["frames"])
        elif kind == "frames":
            progress.advance(frames_task, details["count"])
        elif kind in ("done", "failed"):
            progress.advance(videos_task)
        elif kind == "index":
            progress.update(videos_task, current="building the search index")

    return progress, on_event


def _plain_lines(console: Any) -> Callable[[str, dict], None]:
    """Progress as plain lines (no cursor movement): the plan, each file as it starts, the index build."""
    counts = {"todo": 0, "started": 0}

    def on_event(kind: str, details: dict) -> None:
        if kind == "plan":
            counts["todo"] = details["todo"]
            console.print(f"{details['todo']} to index, {details['skipped']} unchanged or skipped", highlight=False)
        elif kind == "loading":
            console.print(f"loading {details['model_id']}", highlight=False, markup=False)
        elif kind == "video":
            counts["started"] += 1
            console.print(f"[{counts['started']}/{counts['todo']}] {display_name(details['path'])}",
                          highlight=False, markup=False)
        elif kind == "index":
            console.print("building the search index", highlight=False)

    return on_event


def _print_report(console: Any, library: Path, report: Any) -> None:
    """The run as a table (one row per file) and a one-line summary."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"indexed into {library}"))
    table.add_column("result")
    table.add_column("file")
    table.add_column("detail")
    for path in report.indexed:
        table.add_row("[green]indexed", escape(display_name(path)), "")
    for path, why in report.skipped:
        table.add_row("[dim]skipped", escape(display_name(path)), escape(why))
    for path, error in report.failed:
        table.add_row("[red]failed", escape(display_name(path)), escape(without_path(error, path)))
    console.print(table)
    console.print(f"{len(report.indexed)} indexed ({report.frames} frames, {report.segments} text segments), "
                  f"{len(report.skipped)} skipped, {len(report.failed)} failed in {report.seconds:.1f} s")

