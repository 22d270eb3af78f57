"""What every command shares: errors and warnings as one line each on stderr, in one format, and the one place
where an expected failure (a VideominiError) becomes that line and its exit code."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from videomini.errors import VideominiError, one_line


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: <message>` on stderr and exit with `code` (no traceback: the message says it all)."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print `warning: <message>` on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def report(error: VideominiError) -> NoReturn:
    """An expected failure as one `error:` line, exiting with the code its class carries (videomini/errors.py)."""
    fail(str(error) or type(error).__name__, error.exit_code)


class CommandGroup(TyperGroup):
    """The `videomini` group: whatever command runs, a VideominiError it raises ends as one line and the error's
    exit code — no command keeps its own table of exceptions and codes."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VideominiError as e:
            report(e)
