"""Durable file writes (temp + fsync + rename + fsync of the folder) and the crash seam the tests use.

`crash_hook` is the test seam: production code never sets it. The storage calls `durability_point(name)` at each
step whose interruption matters (a shard's temp file written, a shard durable, a video committed done, index files
written, the manifest published); the kill -9 tests set `crash_hook` to a function that SIGKILLs the process the
n-th time a named point is reached (tests/crash.py), then check that re-running restores the uninterrupted state.
"""

from __future__ import annotations

import contextlib
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

TMP_PREFIX = ".tmp-"
QUARANTINE = "quarantine"  # where repair moves a damaged file instead of deleting it, each with a note of why
CHECKSUM_CHUNK = 1 << 22  # bytes hashed at a time when checksumming a file

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


class FileDigest(NamedTuple):
    """Size and checksum of a file as written: what a reader checks it against (recorded in the manifest)."""

    size: int
    checksum: str  # "crc32:xxxxxxxx", as checksum_file computes it


class _HashingFile:
    """A write-only file that checksums what goes through it."""

    def __init__(self, f: Any) -> None:
        self.f, self.size, self.crc = f, 0, 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.crc = zlib.crc32(view, self.crc)
        self.size += len(view)
        return self.f.write(view)


def atomic_write(path: Path, write: Callable[[Any], Any], point: str | None = None) -> FileDigest:
    """Write `path` durably: write(f) into a temp file beside it, fsync, rename over `path`, fsync the folder.
    Readers see the old file or the new one, never a partial one. `point` names the durability point reached once
    the temp file is durable, before the rename. Returns the size and checksum of what was written."""
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            hashing = _HashingFile(f)
            write(hashing)
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
    return FileDigest(hashing.size, f"crc32:{hashing.crc & 0xFFFFFFFF:08x}")


def remove_temp_files(*folders: Path) -> None:
    """Drop the temp files a killed writer left behind (never renamed, so never part of the library)."""
    for folder in folders:
        for tmp in folder.glob(f"{TMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)


def set_aside(root: Path, path: Path, why: str) -> Path | None:
    """Move `path` (a file of library `root`) into DIR/quarantine/, beside a `.why.txt` note, instead of deleting
    it: repair never destroys what it cannot rebuild. Returns where it went (None when there was no file)."""
    if not path.exists():
        return None
    folder = root / QUARANTINE
    folder.mkdir(exist_ok=True)
    kept = folder / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.replace(path, kept)
    (folder / f"{kept.name}.why.txt").write_text(why.rstrip() + "\n")
    fsync_dir(folder)
    return kept


# Checksums detect accidental damage (bit flips, truncation, a file overwritten), not tampering: CRC-32 finds every
# burst of up to 32 flipped bits and any odd number of flips, and is the fastest of the standard library's
# (bench/integrity.py on this shared 2-core machine: crc32 1.1-1.6 GB/s, sha256 0.3-0.5, blake2b 0.15-0.33).


def checksum_bytes(data: Any) -> str:
    """The checksum of a bytes-like object or a numpy array's bytes, as "crc32:xxxxxxxx"."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return f"crc32:{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def checksum_file(path: Path) -> str:
    """The checksum of a file's bytes (read in chunks: the file is never held whole in memory)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHECKSUM_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"crc32:{crc & 0xFFFFFFFF:08x}"
