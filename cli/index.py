"""`videomini index PATH... --library DIR`: batch indexing with progress and a summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from videomini.cli.main import app


def _fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


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
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Index videos into a library: incremental (unchanged files are skipped), resumable and crash-safe."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from videomini.library import LazyModel
    from videomini.loading import CheckpointError
    from videomini.pipelines.ask import VideoMini, default_model_id
    from videomini.pipelines.index import IndexError_, index_videos
    from videomini.storage import LibraryError

    console = Console(stderr=as_json)
    loaded: list = []

    def model_for_run():
        if not loaded:
            with console.status(f"loading {model or default_model_id()} …"):
                loaded.append(VideoMini.from_pretrained(model, device=device, dtype=dtype))
        return loaded[0]

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[current]}"), console=console, transient=True)
    videos_task = progress.add_task("videos", total=None, current="")
    frames_task = progress.add_task("frames", total=None, current="")

    def on_event(kind: str, details: dict) -> None:
        if kind == "plan":
            progress.update(videos_task, total=details["todo"])
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

    try:
        with progress:
            report = index_videos(library, paths, LazyModel(model_for_run),
                                  model_id=model or default_model_id(), recursive=recursive, fps=fps,
                                  workers=workers, retry_failed=retry_failed, timeout_s=timeout, wait_s=wait,
                                  engine=engine, ray_address=ray_address, on_event=on_event, visual=visual,
                                  signals=[name.strip() for name in signals.split(",") if name.strip()])
    except CheckpointError as e:
        hint = " (or index speech and on-screen text only: --no-visual --signals speech,ocr)" if not signals else (
            " (or index the signals only: --no-visual)")
        _fail(f"{e}{hint}", 2)
    except (LibraryError, IndexError_) as e:
        _fail(str(e), 2)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        table = Table(title=f"indexed into {library}")
        table.add_column("result")
        table.add_column("file")
        table.add_column("detail")
        for path in report.indexed:
            table.add_row("[green]indexed", path, "")
        for path, why in report.skipped:
            table.add_row("[dim]skipped", path, why)
        for path, error in report.failed:
            table.add_row("[red]failed", path, error.split(": ", 1)[-1])
        console.print(table)
        console.print(f"{len(report.indexed)} indexed ({report.frames} frames, {report.segments} text segments), "
                      f"{len(report.skipped)} skipped, "
                      f"{len(report.failed)} failed in {report.seconds:.1f} s")
        for warning in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
    if report.failed:
        raise typer.Exit(1)
