"""What every command shares: errors and warnings as one line each on stderr, in one format."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import typer


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: <message>` on stderr and exit with `code` (no traceback: the message says it all)."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print `warning: <message>` on stderr."""
    print(f"warning: {message}", file=sys.stderr)



def display_name(path: str | os.PathLike) -> str:
    """A file as a person reads it in a table: relative to the current folder when it lies under it, else its
    name (an absolute path cut by the table's width shows only its first folders)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path.name or str(path)


def without_path(error: str, path: str | os.PathLike) -> str:
    """An error line without its leading `<path>: ` when the row it goes into names the file already."""
    prefix = f"{path}: "
    return error[len(prefix):] if error.startswith(prefix) else error
