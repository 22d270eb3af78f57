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
    as_json: bool = typer.Option(False, "--json", help="Print the library's stats and videos as one JSON object."),
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
    stats["files"] = [_file_row(row) for row in Library(library).videos()]
    stats["models"] = sorted({row["model_id"] for row in stats["files"] if row["model_id"]})
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
    else:
        render(stats)


def _file_row(row: dict) -> dict:
    """One video of the catalog as `library` lists it."""
    return {"path": row["path"], "status": row["status"], "duration_s": row.get("duration_s"),
            "frames": row.get("n_frames") or 0, "signals": [s for s in (row.get("signals") or "").split(",") if s],
            "model_id": row.get("model_id"), "error": row.get("error")}


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
        else:
            print(f"{len(problems)} problem(s) left after the repair: restore each named file from a backup, or "
                  f"remove its video (videomini library {library} --remove VIDEO) and index it again", file=sys.stderr)
        kept = [p for p in (library / "quarantine").glob("*") if not p.name.endswith(".why.txt")]
        if kept:
            print(f"{library / 'quarantine'}: {len(kept)} damaged file(s) repair moved aside, each with a .why.txt "
                  "note; delete them once nothing needs them", file=sys.stderr)
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
    table.add_row("model", ", ".join(stats.get("models") or []) or "none (speech / on-screen text only)")
    console = Console()
    console.print(table)
    if stats.get("files"):
        console.print(_files_table(stats["files"]))
    for problem in stats.get("problems", []):
        Console().print(f"[red]problem[/red] {problem}", highlight=False)
    if stats.get("problems"):
        Console().print(f"fix with: videomini library {stats['library']} --repair", highlight=False)


def _files_table(files: list[dict]):
    """The videos: name, duration, frames, signals, status, and a failure's reason (once: the row names the file)."""
    from rich.markup import escape
    from rich.table import Table

    from videomini.cli.common import display_name, without_path

    table = Table(title="videos")
    for column in ("video", "duration", "frames", "signals", "status"):
        table.add_column(column, justify="right" if column in ("duration", "frames") else "left")
    styles = {"done": "green", "failed": "red"}
    for row in files:
        duration = "" if row["duration_s"] is None else f"{row['duration_s']:.1f} s"
        status = row["status"]
        if status == "failed":  # the row names the file: its error without the path again
            status = f"failed: {without_path(row['error'] or '', row['path'])}"
        table.add_row(escape(display_name(row["path"])), duration, f"{row['frames']:,}",
                      "+".join(row["signals"]) or "-", f"[{styles.get(row['status'], 'yellow')}]{escape(status)}")
    return table
