"""The storage's exceptions: expected failures carry one line naming the library or file and the reason.

`storage_errors(root)` turns what the operating system and SQLite raise (disk full, read-only file system,
permission denied, a damaged catalog) into that one line, with how to recover; the public methods of
LibraryStore run inside it, so no caller ever sees an OSError or sqlite3 traceback from the storage."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from videomini.errors import VideominiError, one_line  # one_line: re-exported for the storage modules

NEARLY_FULL_BYTES = 1 << 20  # free space below which an I/O error is taken for a full disk


class LibraryError(VideominiError):
    """An expected failure with a one-line message naming the library or file and the reason."""
    http_status = 409  # the request is fine; the library is not in a state to answer it


class LibraryBusy(LibraryError):
    """Another process holds the library's writer lock."""
    exit_code, http_status, retry_after_s = 2, 503, 5


class LibraryDamaged(LibraryError):
    """A file of the library does not match its checksum, is missing, or cannot be parsed."""


def repair_hint(root: Path) -> str:
    return f"run `videomini library {root} --repair`"


def storage_error(root: Path, error: BaseException) -> LibraryError:
    """The one-line LibraryError for an OSError or sqlite3 error met while reading or writing library `root`."""
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
            return LibraryError(f"{root}: disk full{where}; free some space and re-run (nothing indexed is lost)")
        if error.errno == errno.EROFS:
            return LibraryError(f"{root}: library is on a read-only file system{where}; search, ask and library "
                                "can read it, to index into it copy it to a writable folder")
        if error.errno in (errno.EACCES, errno.EPERM):
            return LibraryError(f"{root}: permission denied{where}; index needs write access to the library "
                                "folder (search, ask and library only read it)")
        return LibraryError(f"{root}: {error.strerror or error}{where}")
    message = str(error)
    code = getattr(error, "sqlite_errorname", "") or ""
    if "disk is full" in message or (code.startswith("SQLITE_IOERR") and disk_nearly_full(root)):
        return LibraryError(f"{root}: disk full or failing while writing the catalog ({message}); free some space "
                            "and re-run (nothing indexed is lost)")
    if "readonly database" in message or "read-only" in message:
        return LibraryError(f"{root}: the catalog is read-only ({message}); to index into this library copy it "
                            "to a writable folder")
    if code.startswith("SQLITE_IOERR"):
        return LibraryError(f"{root}: disk I/O error on the catalog ({code}); check the disk, then re-run")
    if "unable to open" in message:
        return LibraryError(f"{root}: cannot open the catalog ({message}); check the folder's permissions")
    if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
        return LibraryDamaged(f"{root}/catalog.sqlite: catalog damaged ({message}); {repair_hint(root)} to "
                              "rebuild it from the shards")
    return LibraryError(f"{root}: catalog error: {one_line(message, 300)}; if it persists, run `videomini library "
                        f"{root} --check`")


def disk_nearly_full(root: Path) -> bool:
    """True when the file system holding `root` has (almost) no space left: SQLite reports a full disk met while
    growing its WAL index as an I/O error (SQLITE_IOERR_SHMSIZE), not as SQLITE_FULL."""
    try:
        st = os.statvfs(root)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES


@contextlib.contextmanager
def storage_errors(root: Path) -> Iterator[None]:
    """Raise what the OS or SQLite raise inside the block as one-line LibraryErrors naming `root`."""
    try:
        yield
    except (OSError, sqlite3.Error) as e:
        raise storage_error(root, e) from None


F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """A LibraryStore method whose OS and SQLite errors become one-line LibraryErrors naming the library."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with storage_errors(self.root):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
