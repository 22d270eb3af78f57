"""`videomini search QUERY --library DIR`: moments that match a plain-language query."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from videomini.cli.common import checked_search, fail
from videomini.cli.main import app
from videomini.config import TOP_K


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for, in plain language."),
    library: Path = typer.Option(..., "--library", help="Library folder."),
    top_k: int = typer.Option(TOP_K, "--top-k", help="Moments to return."),
    thumbnails: Optional[Path] = typer.Option(None, "--thumbnails", help="Write each moment's best frame here."),
    signal: list[str] = typer.Option([], "--signal", help="Search only these: visual, speech, ocr (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Moments as JSON: full paths, each signal's cosine and z."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Each signal's cosine, z and evidence too."),
) -> None:
    """Search an indexed library: frames (CLIP) and stored speech / on-screen text (sentence embeddings), each
    calibrated against the query's background and fused by evidence. Relevance runs from 0 (no signal rises
    above what unrelated content scores) through 0.5 (confident: marked *) towards 1."""
    query = checked_search(query, top_k)  # before the heavy import: a bad query is answered at once
    from videomini.search import search_library

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
    render(query, results, verbose, bool(thumbnails))


SIGNAL_LABELS = {"visual": "frames", "speech": "speech", "ocr": "on screen"}
HEADERS = ("#", "video", "time", "rel.", "signal", "quote")


def _row(rank: int, r: Any) -> list[str]:
    """One moment's cells: rank, file name, time range, relevance (* when confident), the signals that carry it
    (its strongest when none does), the first quote."""
    from videomini.timerefs import format_time

    carried = [SIGNAL_LABELS[m["signal"]] for m in r.matches if m["evidence"] > 0]
    quote = next((f"“{m['text']}”" for m in r.matches if "text" in m), "")
    return [str(rank), r.name, format_time(r.start_s, r.end_s), f"{r.relevance:.2f}{'*' if r.confident else ' '}",
            "+".join(carried) or SIGNAL_LABELS[r.matches[0]["signal"]], quote]


def render(query: str, results: list[Any], verbose: bool, thumbnails: bool) -> None:
    """One line per moment, whatever the terminal's width: rank, the video's file name, time range, relevance
    (* when confident), the signal that carries it, and its quote cut to fit (`-v`: each signal's detail)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    matched = any(r.confident for r in results)
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left",
                  title=f"{query!r}: " + ("moments that match (* = confident)" if matched
                                          else "nothing in the library matches; the closest are shown"))
    rows = [_row(rank, r) for rank, r in enumerate(results, 1)]
    widths = [max([len(h)] + [len(str(row[i])) for row in rows]) for i, h in enumerate(HEADERS)]
    widths[1], widths[4] = min(widths[1], 24), min(widths[4], 16)  # long file names and signal lists are cut
    widths[5] = max(8, console.width - sum(widths[:5]) - 2 * 5)  # the quote takes what is left (2 spaces a gap)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="right" if header in ("#", "rel.") else "left", no_wrap=True,
                         overflow="ellipsis", width=widths[i])
    for r, row in zip(results, rows):
        table.add_row(*row[:3], Text(row[3], style="bold green" if r.confident else "dim"), *row[4:])
        if verbose:
            for m in r.matches:
                table.add_row("", "", "", "", f"  {m['signal']}", f"cosine {m.get('cosine', m['similarity']):.3f}  "
                              f"z {m['z']:.1f}  evidence {m['evidence']:.2f}  #{m['rank']} in its list")
        if verbose and thumbnails and r.thumbnail:
            table.add_row("", "", "", "", "  thumbnail", r.thumbnail)
    console.print(table)
