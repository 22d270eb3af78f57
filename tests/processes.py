"""Reading what a child process (`videomini watch`, `videomini serve`) says on stderr, without sleeping."""

from __future__ import annotations

import selectors
import subprocess
import time


def stderr_line(process: subprocess.Popen, pattern: str, timeout_s: float) -> str:
    """The first stderr line of `process` containing `pattern`, waiting at most `timeout_s` (an AssertionError
    when the process ends or the time runs out first)."""
    deadline = time.monotonic() + timeout_s
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            line = process.stderr.readline()
            if not line:
                break
            if pattern in line:
                return line
    raise AssertionError(f"no stderr line with {pattern!r} within {timeout_s} s")
