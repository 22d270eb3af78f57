"""One error type for the whole project, and one line per failure.

Every expected failure raises a `VideominiError` subclass. The class says how each front end reports it, so no
command and no route keeps a table of its own: the CLI exits with `exit_code` after one `error: <reason>` line
(cli/common.py), the server answers `http_status` with the reason in the route's error shape
(pipelines/serve/wire.py). Anything else that escapes is a bug (a traceback in the CLI, a 500 on the server).

Exit codes: 0 done; 1 the work failed (a bad input, a file that could not be read, a damaged library, a limit);
2 the run could not start (a usage error, a model that cannot be loaded, a library another process holds, an
unsafe bind) — the same 2 that the CLI framework gives a usage error.
"""

from __future__ import annotations

LINE_LIMIT = 2000  # characters of a reason on its one line (a path or two and the cause; as the catalog stores it)


class VideominiError(Exception):
    """An expected failure; its message is one line naming the file or field and the reason.

    Subclasses set `exit_code` (the CLI's exit status) and `http_status` (the server's status); `retry_after_s`
    (when set) tells an HTTP client when to try again."""

    exit_code: int = 1
    http_status: int = 400
    retry_after_s: int | None = None

    def http_headers(self) -> dict[str, str]:
        """Headers the server adds to this error's response (Retry-After for a busy resource)."""
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}

    def cli_message(self) -> str:
        """The reason as the CLI prints it (a subclass may name the command-line option instead of a field)."""
        return str(self) or type(self).__name__


class InvalidInput(VideominiError, ValueError):
    """A value a user gave (a flag, a request field) is outside what it may be; also a ValueError, so code that
    validates with `except ValueError` keeps working."""


class LimitExceeded(InvalidInput):
    """An input over one of the limits of videomini/limits.py; the message names the limit."""


def first_line(error: BaseException, with_type: bool = False) -> str:
    """An exception as one line: its message's first line (the type's name when it has none), after the type's
    name when `with_type`."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type:
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text or type(error).__name__


def one_line(text: object, limit: int = LINE_LIMIT) -> str:
    """`text` on one line (whitespace runs, newlines included, become one space), cut to `limit` characters
    (the last one an ellipsis, so a reader sees it was cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CheckpointError(VideominiError, RuntimeError):
    """A checkpoint that cannot be loaded; the message is one line naming the checkpoint and the reason. Here,
    not in videomini.loading (which imports torch), so that a command can catch it without loading the model stack."""
    exit_code, http_status = 2, 503  # nothing can be answered until the model is there
