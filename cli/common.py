"""What every command shares: errors and warnings as one line each on stderr, in one format."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: <message>` on stderr and exit with `code` (no traceback: the message says it all)."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print `warning: <message>` on stderr."""
    print(f"warning: {message}", file=sys.stderr)

