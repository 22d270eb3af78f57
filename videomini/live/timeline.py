"""A live session's timeline with two clocks: stream time (seconds since the session started, continuous across
reconnects, gaps included) and wall-clock time (UTC). Questions may name either; wall-clock times of day are
rewritten into stream time before the shared time-reference parser (`videomini.timerefs`) reads them."""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from videomini.timerefs import format_time

# "14:05", "14:05:30", "2:05 pm", "14:05 UTC": a time of day (an explicit hour 0-23)
_TIME_OF_DAY = re.compile(r"(?<![\d:.])(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?"
                          r"(?:\s*(?P<ampm>[ap]\.?m\.?)(?![a-z]))?(?:\s*(?P<utc>utc|gmt|z)\b)?", re.I)
_SINCE_START = re.compile(r"\bsince\s+(?:the\s+)?(?:start|beginning)\b", re.I)


@dataclass
class Gap:
    """Stream time with no frames: [start_s, end_s) and why (the source dropped, reconnecting...)."""

    start_s: float
    end_s: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


class Timeline:
    """Stream seconds <-> UTC: wall(t) = start_utc + t. Realtime sources place each connection at the wall time it
    began (so a drop shows as a gap); a file decoded faster than real time advances on its own clock."""

    def __init__(self, start_utc: datetime | None = None):
        self.start_utc = start_utc or datetime.now(timezone.utc)
        self.gaps: list[Gap] = []
        self._lock = threading.Lock()

    def wall(self, stream_s: float) -> datetime:
        return self.start_utc + timedelta(seconds=float(stream_s))

    def wall_iso(self, stream_s: float) -> str:
        return self.wall(stream_s).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def stream_at(self, wall: datetime) -> float:
        return (wall - self.start_utc).total_seconds()

    def now_s(self) -> float:
        """Stream time of 'now' on the wall clock (what a realtime source would be showing)."""
        return self.stream_at(datetime.now(timezone.utc))

    def add_gap(self, start_s: float, end_s: float, reason: str) -> Gap:
        gap = Gap(round(float(start_s), 3), round(float(end_s), 3), reason)
        with self._lock:
            self.gaps.append(gap)
        return gap

    def resolve_question(self, question: str, latest_s: float) -> str:
        """The question with wall-clock times of day that fall inside the stream rewritten as stream times
        ("at 14:05" -> "at 5:03" when the stream started at 13:59:57 UTC); "since the start" -> "from the start to
        the end". A clock that is no time of day inside the stream stays a stream time ("at 2:30" = 2 min 30 s)."""
        question = _SINCE_START.sub("from the start to the end", question)

        def rewrite(m: re.Match) -> str:
            stream_s = self._time_of_day_in_stream(m, latest_s)
            return m.group(0) if stream_s is None else format_time(stream_s)

        return _TIME_OF_DAY.sub(rewrite, question)

    def _time_of_day_in_stream(self, m: re.Match, latest_s: float) -> float | None:
        """Stream time of the most recent occurrence of the time of day `m` at or before the latest frame, when
        the stream was running then; None when the clock is better read as a stream time."""
        hour, minute, second = int(m["h"]), int(m["m"]), int(m["s"] or 0)
        if m["ampm"]:
            if hour > 12:
                return None
            hour = hour % 12 + (12 if m["ampm"].lower().startswith("p") else 0)
        latest = self.wall(latest_s)
        candidate = latest.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if candidate > latest:
            candidate -= timedelta(days=1)
        stream_s = self.stream_at(candidate)
        # a time of day within the minute before the first frame still means the start
        return max(0.0, stream_s) if stream_s >= -60.0 else None


_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>d|h|m|s|ms)?\s*$", re.I)
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


def parse_duration(text: str | float, name: str = "duration") -> float:
    """"90", "90s", "10m", "1.5h", "7d" -> seconds; ValueError naming `name` otherwise (or when not positive)."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{name}: {text!r} is not a duration (e.g. 30s, 10m, 1h, 7d)")
    seconds = float(m["n"]) * _UNIT_S[m["unit"].lower() if m["unit"] else None]
    if seconds <= 0:
        raise ValueError(f"{name}: must be more than 0, not {text!r}")
    return seconds
