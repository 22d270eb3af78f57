"""Durable file writes (temp + fsync + rename + fsync of the folder) and the crash seam the tests use.

`crash_hook` is the test seam: production code never sets it. The storage calls `durability_point(name)` at each
step whose interruption matters (a shard's temp file written, a shard durable, a video committed done, index files
written, the manifest published); the kill -9 tests set `crash_hook` to a function that SIGKILLs the process the
n-th time a named point is reached (tests/crash.py), then check that re-running restores the uninterrupted state.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable

TMP_PREFIX = ".tmp-"

crash_hook: Callable[[str], None] | None = None


def durability_point(name: str) -> None:
    """Mark a point a crash may interrupt; calls the test seam `crash_hook` when one is set."""
    if crash_hook is not None:
        crash_hook(name)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], Any], point: str | None = None, by_name: bool = False) -> None:
    """Write `path` durably: write(f) (or write(tmp_path) when `by_name`) into a temp file beside it, fsync,
    rename over `path`, fsync the folder. Readers see the old file or the new one, never a partial one.
    `point` names the durability point reached once the temp file is durable, before the rename."""
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        if by_name:
            write(str(tmp))
        with open(tmp, "ab" if by_name else "wb") as f:
            if not by_name:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        if point:
            durability_point(point)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def remove_temp_files(*folders: Path) -> None:
    """Drop the temp files a killed writer left behind (never renamed, so never part of the library)."""
    for folder in folders:
        for tmp in folder.glob(f"{TMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)
