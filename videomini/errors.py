"""One line per failure: how every layer turns an exception (or any text) into the `<file>: <reason>` lines
users read."""

from __future__ import annotations


def first_line(error: BaseException, with_type: bool = False) -> str:
    """An exception as one line: its message's first line (the type's name when it has none), after the type's
    name when `with_type`."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type:
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text or type(error).__name__


def one_line(text: str, limit: int) -> str:
    """`text` on one line (whitespace runs, newlines included, become one space), cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message is one line naming the checkpoint and the reason. Here,
    not in videomini.loading (which imports torch), so that a command can catch it without loading the model stack."""
