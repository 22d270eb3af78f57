"""What every command shares: errors and warnings as one line each on stderr, in one format."""

from __future__ import annotations

import sys
import warnings
from typing import Any, NoReturn

import typer

from videomini.errors import first_line


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: <message>` on stderr and exit with `code` (no traceback: the message says it all)."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print `warning: <message>` on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    warn(first_line(message) if isinstance(message, BaseException) else str(message).strip().splitlines()[0])


def route_warnings() -> None:
    """Show Python warnings (the decoders report a damaged or truncated file with one) as `warning: <line>` on
    stderr, not as Python's two lines naming the source file that issued them."""
    warnings.showwarning = _show_warning
