"""`videomini library DIR`: show a library (videos, frames, hours, bytes on disk, failures, index), or remove
videos from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from videomini.cli.ask import fail
from videomini.cli.main import app


@app.command("library")
def library_info(
    library: Path = typer.Argument(..., help="Library folder."),
    remove: list[Path] = typer.Option([], "--remove", help="Remove this video from the library (repeatable)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a library (videos, frames, hours, bytes on disk, failures), or remove videos from it."""
    from videomini.library import Library
    from videomini.storage import LibraryError

    try:
        if remove:
            removed = Library(library).remove(remove)
            print(f"removed {len(removed)} video(s)", file=sys.stderr)
        stats = Library(library).stats()
    except LibraryError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
    else:
        render(stats)


def render(stats: dict) -> None:
    """The library's stats as a table, then its failures one a line."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(stats["library"]), show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    status = stats["status"]
    table.add_row("videos", f"{stats['videos']} ({status['done']} done, {status['failed']} failed, "
                            f"{status['pending'] + status['running']} unfinished)")
    table.add_row("frames", f"{stats['frames']:,}")
    table.add_row("hours", f"{stats['hours']:.2f}")
    table.add_row("on disk", f"{stats['bytes_on_disk'] / 1e6:.1f} MB")
    index = stats.get("index") or {}
    table.add_row("search index", f"{index.get('factory', 'none')} over {index.get('n_vectors', 0):,} frames"
                                  + ("" if stats.get("index_current") else " (stale: re-run index)"))
    if index.get("text_n_vectors"):
        with_signals = ", ".join(f"{n} with {names.replace(',', '+')}" for names, n in stats["signals"].items())
        table.add_row("text segments", f"{index['text_n_vectors']:,} (speech / on-screen text; videos: {with_signals})")
    Console().print(table)
    for failure in stats["failures"]:
        Console().print(f"[red]failed[/red] {failure['path']}: {failure['error']}")
