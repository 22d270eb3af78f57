"""`videomini library DIR`: show a library (videos, frames, hours, bytes on disk, failures, index), remove videos
from it, check it (`--check`: every file against its checksum) or repair it (`--repair`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from videomini.cli.main import app


@app.command("library")
def library_info(
    library: Path = typer.Argument(..., help="Library folder."),
    remove: list[Path] = typer.Option([], "--remove", help="Remove this video from the library (repeatable)."),
    compact: bool = typer.Option(False, "--compact", help="Merge the search index's parts into one now "
                                 "(index does it on its own past a threshold)."),
    check: bool = typer.Option(False, "--check", help="Verify the catalog, every shard and index file against its "
                               "checksum, and that they agree; exit 1 when something is wrong."),
    repair: bool = typer.Option(False, "--repair", help="Rebuild a damaged catalog from the shards, send videos "
                                "whose shard is missing or damaged back for re-indexing, rebuild the index."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a library (videos, frames, hours, bytes on disk, failures), remove videos, compact its search index,
    check or repair it."""
    from videomini.library import Library

    if check or repair:
        check_or_repair(library, repair, as_json)
        return
    if remove:
        removed = Library(library).remove(remove)
        print(f"removed {len(removed)} video(s)", file=sys.stderr)
    if compact:
        manifest = Library(library).compact()
        print(f"compacted the search index into one {manifest['factory']} part in {manifest['build_s']:.1f} s",
              file=sys.stderr)
    stats = Library(library).stats()
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
    else:
        render(stats)


def check_or_repair(library: Path, repair: bool, as_json: bool) -> None:
    """--check: print what is wrong (exit 1 when anything is); --repair: fix it, print what was done, check again."""
    from videomini.library import Library

    repaired = Library(library).repair() if repair else []
    problems = Library(library).check()
    if as_json:
        typer.echo(json.dumps({"library": str(library), "repaired": repaired, "problems": problems}, indent=2))
    else:
        for line in repaired:
            print(f"repaired: {line}")
        for line in problems:
            print(f"problem: {line}")
        if not problems:
            print(f"{library}: ok (catalog, shards and search index verified)")
        elif not repair:
            print(f"{len(problems)} problem(s); fix with: videomini library {library} --repair", file=sys.stderr)
    if problems:
        raise typer.Exit(1)


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
    parts = index.get("n_parts") or 1
    table.add_row("search index", f"{index.get('factory', 'none')} over {index.get('n_vectors', 0):,} frames"
                                  + (f" in {parts} parts" if parts > 1 else "")
                                  + (f", {index['n_deleted']:,} deleted rows" if index.get("n_deleted") else "")
                                  + ("" if stats.get("index_current") else " (stale: re-run index)"))
    if index.get("text_n_vectors"):
        with_signals = ", ".join(f"{n} with {names.replace(',', '+')}" for names, n in stats["signals"].items())
        table.add_row("text segments", f"{index['text_n_vectors']:,} (speech / on-screen text; videos: {with_signals})")
    Console().print(table)
    for failure in stats["failures"]:
        Console().print(f"[red]failed[/red] {failure['path']}: {failure['error']}", markup=True, highlight=False)
    for problem in stats.get("problems", []):
        Console().print(f"[red]problem[/red] {problem}", highlight=False)
    if stats.get("problems"):
        Console().print(f"fix with: videomini library {stats['library']} --repair", highlight=False)
