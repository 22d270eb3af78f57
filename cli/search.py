"""`videomini search QUERY --library DIR`: moments that match a plain-language query."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from videomini.cli.common import checked_search, fail
from videomini.cli.main import app


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for, in plain language."),
    library: Path = typer.Option(..., "--library", help="Library folder."),
    top_k: int = typer.Option(10, "--top-k", help="Moments to return."),
    thumbnails: Optional[Path] = typer.Option(None, "--thumbnails", help="Write each moment's best frame here."),
    signal: list[str] = typer.Option([], "--signal", help="Search only these: visual, speech, ocr (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Moments as JSON, with the signals and text that matched."),
) -> None:
    """Search an indexed library: frames (CLIP) and stored speech / on-screen text (MiniLM), each calibrated
    against the query's background and fused by evidence."""
    from rich.console import Console
    from rich.table import Table

    from videomini.answer import format_time
    from videomini.search import search_library

    query = checked_search(query, top_k)
    wanted = tuple(signal) or ("visual", "speech", "ocr")
    unknown = sorted(set(wanted) - {"visual", "speech", "ocr"})
    if unknown:
        fail(f"unknown signal {unknown[0]!r}: choose from visual, speech, ocr", 2)
    notes: list[str] = []
    results = search_library(library, query, top_k=top_k, thumbnails_dir=thumbnails, signals=wanted, notes=notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    table = Table(title=f"{query!r} in {library}")
    for column in ("#", "video", "from", "to", "best", "score", "matched") + (("thumbnail",) if thumbnails else ()):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, r in enumerate(results, 1):
        matched = "\n".join(f"{m['signal']} #{m['rank']} (cosine {m.get('cosine', m['similarity']):.2f}, "
                             f"z {m['z']:.1f})"
                             + (f" “{m['text']}”" if "text" in m else "") for m in r.matches)
        table.add_row(str(rank), r.video, format_time(r.start_s), format_time(r.end_s), format_time(r.best_s),
                      f"{r.score:.2f}", matched, *((r.thumbnail or "",) if thumbnails else ()))
    Console().print(table)
