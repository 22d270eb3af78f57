"""`videomini serve` as a child process: started on a free loopback port, its URL read from its listening line,
always stopped. What the benchmarks and the live-server tests run against (a real server, not an in-process app)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

LISTENING = re.compile(r"listening on (http://\S+?)/? ")


class ServerURL(str):
    """The base URL of a server process, with its `pid` (to measure its memory)."""

    pid: int


@contextmanager
def serve_process(args: list[str], timeout_s: float = 120.0, env: dict | None = None) -> Iterator[ServerURL]:
    """Run `videomini serve --port 0 ARGS...`; yields its base URL (with the process id); terminates it (kill
    after 15 s) on exit."""
    process = subprocess.Popen([sys.executable, "-m", "videomini.cli", "serve", "--port", "0", *args],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env=env if env is not None else dict(os.environ))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr] + [lines.put("")],
                     daemon=True).start()  # drains the log so the server never blocks on a full pipe
    try:
        url, seen, deadline = None, [], time.monotonic() + timeout_s
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:  # the process exited
                break
            seen.append(line)
            found = LISTENING.search(line)
            url = found.group(1) if found else None
        if url is None:
            raise RuntimeError("videomini serve did not start:\n" + "".join(seen))
        served = ServerURL(url)
        served.pid = process.pid
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
