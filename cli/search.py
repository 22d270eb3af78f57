"""`videomini search QUERY --library DIR`: moments that match a plain-language query."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from videomini.cli.main import app


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for, in plain language."),
    library: Path = typer.Option(..., "--library", help="Library folder."),
    top_k: int = typer.Option(10, "--top-k", help="Moments to return."),
    thumbnails: Optional[Path] = typer.Option(None, "--thumbnails", help="Write each moment's best frame here."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search an indexed library: CLIP text embedding against frame embeddings, hits merged into moments."""
    from rich.console import Console
    from rich.table import Table

    from videomini.answer import format_time
    from videomini.library import LibraryError
    from videomini.loading import CheckpointError
    from videomini.pipelines.search import search_library

    try:
        results = search_library(library, query, top_k=top_k, thumbnails_dir=thumbnails)
    except (LibraryError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2 if isinstance(e, CheckpointError) else 1)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    table = Table(title=f"{query!r} in {library}")
    for column in ("#", "video", "from", "to", "best", "score") + (("thumbnail",) if thumbnails else ()):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, r in enumerate(results, 1):
        table.add_row(str(rank), r.video, format_time(r.start_s), format_time(r.end_s), format_time(r.best_s),
                      f"{r.score:.3f}", *((r.thumbnail or "",) if thumbnails else ()))
    Console().print(table)
