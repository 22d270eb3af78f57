"""What every command shares: errors and warnings as one line each on stderr, in one format, and the one place
where an expected failure (a VideominiError) becomes that line and its exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from videomini import limits
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
    fail(error.cli_message(), error.exit_code)


class CommandGroup(TyperGroup):
    """The `videomini` group: whatever command runs, a VideominiError it raises ends as one line and the error's
    exit code — no command keeps its own table of exceptions and codes."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VideominiError as e:
            report(e)


def checked_ask(question: str, fps: float, max_frames: int | None, top_k: int,
                max_new_tokens: int) -> str:
    """`ask`'s question and numbers within videomini/limits.py, before any model loads; the question stripped."""
    limits.check_fps(fps)
    limits.check_max_frames(max_frames)
    limits.check_count(top_k, "--top-k", 1, limits.TOP_K_MAX, "TOP_K_MAX")
    limits.check_count(max_new_tokens, "--max-new-tokens", 1, limits.MAX_NEW_TOKENS_MAX, "MAX_NEW_TOKENS_MAX")
    return limits.check_question(question, "QUESTION")


def checked_index(fps: float, workers: int, timeout: float, wait: float) -> None:
    """`index`'s numbers within videomini/limits.py, before the library is opened: nothing invalid is recorded."""
    limits.check_fps(fps)
    limits.check_count(workers, "--workers", 1, limits.WORKERS_MAX, "WORKERS_MAX")
    limits.check_number(timeout, "--timeout", 0.0, limits.SECONDS_MAX, low_open=True, limit_name="SECONDS_MAX")
    limits.check_number(wait, "--wait", 0.0, limits.SECONDS_MAX, limit_name="SECONDS_MAX")


def checked_search(query: str, top_k: int) -> str:
    """`search`'s query and --top-k within videomini/limits.py; the query stripped."""
    limits.check_count(top_k, "--top-k", 1, limits.TOP_K_MAX, "TOP_K_MAX")
    return limits.check_query(query, "QUERY")

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
