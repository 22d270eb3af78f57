"""`videomini info VIDEO [--json]`: what the decoder sees in a video (duration, fps, size, rotation, codecs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from videomini.cli.main import app


@app.command()
def info(
    video: Path = typer.Argument(..., help="Video file to probe."),
    as_json: bool = typer.Option(False, "--json", help="Print the probe as JSON."),
) -> None:
    """Show a video's duration, frame rate, frame count, size (after rotation), rotation and codecs."""
    from videomini.video import probe

    result = probe(video)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(video), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    d = result.to_dict()
    d["duration_s"] = f"{result.duration_s:.3f} s"
    d["fps"] = f"{result.fps:.3f}"
    d["size"] = f"{result.width}×{result.height}"
    for key in ("duration_s", "fps", "frame_count", "size", "rotation", "codec", "has_audio", "container"):
        table.add_row(key, "unknown" if d[key] is None else str(d[key]))
    Console().print(table)
