"""The writer lock: one writing process per library folder (fcntl.flock on DIR/lock, which holds its PID).
Readers never take it; the kernel drops it when the writer dies, so a kill -9 leaves no stale lock."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from videomini.storage.errors import LibraryBusy, LibraryError

LOCK = "lock"
LOCK_POLL_S = 0.05  # how often a waiting writer retries the lock
PID_BYTES = 64  # the lock file holds the writer's PID and a newline


class WriterLock:
    """Held from construction until `release()`; raises LibraryBusy when another process holds it past `wait_s`."""

    def __init__(self, root: Path, wait_s: float = 0.0) -> None:
        if not root.is_dir():
            raise LibraryError(f"{root}: library folder does not exist")
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, PID_BYTES, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
                    raise LibraryBusy(f"{root}: library is being written by another process (pid {holder})"
                                      f"{waited}") from None
                time.sleep(min(LOCK_POLL_S, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
