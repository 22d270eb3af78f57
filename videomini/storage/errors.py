"""The storage's exceptions: expected failures carry one line naming the library or file and the reason."""

from __future__ import annotations

ERROR_LINE_LIMIT = 2000  # characters kept of an error message stored in the catalog


class LibraryError(Exception):
    """An expected failure with a one-line message naming the library or file and the reason."""


class LibraryBusy(LibraryError):
    """Another process holds the library's writer lock."""


def one_line(text: str, limit: int = ERROR_LINE_LIMIT) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
