"""The storage's crash seam, for the kill -9 tests: SIGKILL this process the n-th time it reaches a named
durability point (videomini.storage.files.durability_point). Production code never sets the hook.

    python tests/crash.py POINT N index VIDEO... --library DIR    # the videomini CLI, killed at POINT:N
"""

from __future__ import annotations

import os
import signal
import sys


def sigkill_at(point: str, n: int = 1) -> None:
    """Install the hook: the n-th time `point` is reached, the process dies as from kill -9."""
    from videomini.storage import files

    reached = 0

    def hook(name: str) -> None:
        nonlocal reached
        if name == point:
            reached += 1
            if reached >= n:
                os.kill(os.getpid(), signal.SIGKILL)

    files.crash_hook = hook


if __name__ == "__main__":
    point, count, *cli_args = sys.argv[1:]
    sigkill_at(point, int(count))
    from videomini.cli.main import app

    app(args=cli_args, prog_name="videomini")
