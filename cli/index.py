"""`videomini index PATH... --library DIR`: batch indexing with progress and a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from videomini.cli.common import fail, warn
from videomini.cli.main import app


@app.command()
def index(
    paths: list[Path] = typer.Argument(..., help="Video files and folders."),
    library: Path = typer.Option(..., "--library", help="Library folder (created when absent)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Scan folders recursively."),
    fps: float = typer.Option(1.0, "--fps", help="Frames indexed per second of video."),
    model: Optional[str] = typer.Option(None, "--model", envvar="VIDEOMINI_MODEL", help="Checkpoint folder or hub id."),
    workers: int = typer.Option(2, "--workers", help="Decoder processes (videos decoded ahead, in isolation)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again the files that failed before."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds without a decoded frame before a file fails."),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: Optional[str] = typer.Option(None, "--dtype"),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another indexer to finish."),
    engine: str = typer.Option("local", "--engine", help="local (this machine) or ray (Ray Data: decode tasks, "
                               "encoder actors; this process writes the library)."),
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
    from rich.console import Console

    from videomini.pipelines.index_run import IndexRunError, index_videos
    from videomini.storage import LibraryError

    console = Console(stderr=as_json)
    progress, on_event = _progress(console)
    try:
        with progress:
            report = index_videos(library, paths, model_id=model, device=device, dtype=dtype, recursive=recursive,
                                  fps=fps, workers=workers, retry_failed=retry_failed, timeout_s=timeout,
                                  wait_s=wait, engine=engine, ray_address=ray_address, on_event=on_event,
                                  visual=visual, signals=[name.strip() for name in signals.split(",") if name.strip()],
                                  text_model=text_model, asr_model=asr_model)
    except (LibraryError, IndexRunError) as e:
        fail(str(e), 2)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(console, library, report)
    for warning in report.warnings:
        warn(warning)
    if report.failed:
        raise typer.Exit(1)


def _progress(console: Any) -> tuple[Any, Callable[[str, dict], None]]:
    """A progress display (videos, frames of the current video) and the event handler that drives it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[current]}"), console=console, transient=True)
    videos_task = progress.add_task("videos", total=None, current="")
    frames_task = progress.add_task("frames", total=None, current="")

    def on_event(kind: str, details: dict) -> None:
        if kind == "plan":
            progress.update(videos_task, total=details["todo"])
        elif kind == "loading":
            progress.update(videos_task, current=f"loading {details['model_id']} …")
        elif kind == "video":
            progress.update(videos_task, current=Path(details["path"]).name)
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


def _print_report(console: Any, library: Path, report: Any) -> None:
    """The run as a table (one row per file) and a one-line summary."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"indexed into {library}"))
    table.add_column("result")
    table.add_column("file")
    table.add_column("detail")
    for path in report.indexed:
        table.add_row("[green]indexed", escape(path), "")
    for path, why in report.skipped:
        table.add_row("[dim]skipped", escape(path), escape(why))
    for path, error in report.failed:
        table.add_row("[red]failed", escape(path), escape(error.split(": ", 1)[-1]))
    console.print(table)
    console.print(f"{len(report.indexed)} indexed ({report.frames} frames, {report.segments} text segments), "
                  f"{len(report.skipped)} skipped, {len(report.failed)} failed in {report.seconds:.1f} s")

