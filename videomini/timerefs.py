"""Explicit time references in a question ("at 12:30", "the last minute", "between 1 and 2 minutes") -> windows
of the video, in seconds; and the one format every printed time takes (`format_time`). Pure text: no model, no
video."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty": 40, "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90,
}
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_VIDEO_NOUNS = r"(?:the\s+)?(?:video|clip|film|movie|recording|footage|stream|vid)\b"

# A number: digits, or a word ("five", "half an"). Single-letter units (h/m/s) only right after digits,
# so that "a s..." or "one m..." in ordinary prose never reads as a time.
_WORD_NUM = r"(?:half\s+an?|forty-five|" + "|".join(sorted((w for w in _NUMBER_WORDS if w != "forty-five"),
                                                            key=len, reverse=True)) + r")"
_DIGITS = r"\d+(?:\.\d+)?"
_UNITS = r"hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s"


def _amount(long_units: str, short_unit: str) -> str:
    return (rf"(?:{_DIGITS}\s*-?\s*(?:{long_units}|{short_unit})(?![a-z])"
            rf"|\b{_WORD_NUM}\s*-?\s*(?:{long_units})(?![a-z]))")


_H = _amount(r"hours?|hrs?", "h")
_M = _amount(r"minutes?|mins?", "m")
_S = _amount(r"seconds?|secs?", "s")
_SEP = r"\s*(?:,\s*|and\s+)?"
# Units in decreasing order only, so "between 1 minute and 2 minutes" stays two times, not one sum.
_DURATION = rf"(?:{_H}(?:{_SEP}{_M})?(?:{_SEP}{_S})?|{_M}(?:{_SEP}{_S})?|{_S})"
_CLOCK = r"(?<![\d:.])\d{1,3}(?::\d{2}){1,2}(?:\.\d+)?(?![\d:])"
_TIME = rf"(?:{_CLOCK}|{_DURATION})"
_BARE = rf"(?:{_DIGITS}|\b{_WORD_NUM})"
_FUZZY = ("around", "about", "approximately", "approx", "roughly", "near", "circa", "~")


def _number(text: str) -> float:
    text = re.sub(r"\s+", " ", text.strip())
    if text.startswith("half"):
        return 0.5
    return float(_NUMBER_WORDS[text]) if text in _NUMBER_WORDS else float(text)


def _parse_time(text: str) -> tuple[float, float] | None:
    """`"12:30"` → (750, 1); `"2 min"` → (120, 60): seconds, and the size of the finest unit given."""
    text = text.strip()
    if re.fullmatch(_CLOCK, text):
        parts = text.split(":")
        if any(float(p) >= 60 for p in parts[1:]):
            return None  # "1:75" is not a time
        seconds = 0.0
        for p in parts:
            seconds = seconds * 60 + float(p)
        return seconds, 1.0
    seconds, finest = 0.0, None
    for m in re.finditer(rf"({_DIGITS}|\b{_WORD_NUM})\s*-?\s*({_UNITS})(?![a-z])", text):
        unit = _UNIT_SECONDS[m.group(2)[0]]
        seconds += _number(m.group(1)) * unit
        finest = unit if finest is None else min(finest, unit)
    return (seconds, finest) if finest is not None else None


def _seconds(text: str) -> float | None:
    """The time `text` names, in seconds (None when it names none)."""
    parsed = _parse_time(text)
    return None if parsed is None else parsed[0]


def _leading_unit(text: str) -> float:
    """The unit a bare number borrows from its partner ("between 1 and 2 minutes", "between 1 and 1:30")."""
    if re.fullmatch(_CLOCK, text.strip()):
        return 3600.0 if text.count(":") == 2 else 60.0
    m = re.search(rf"(?:{_DIGITS}|\b{_WORD_NUM})\s*-?\s*({_UNITS})(?![a-z])", text)
    return _UNIT_SECONDS[m.group(1)[0]] if m else 1.0


def _edge_width(duration_s: float) -> float:
    # "at the end" / "at the beginning": the last/first 10 % of the video, at least 10 s, at most 10 min.
    return max(10.0, min(0.10 * duration_s, 600.0))


def _point_half_width(finest_unit_s: float, fuzzy: bool, duration_s: float) -> float:
    # Precision of the reference: to the second ±5 s, whole minutes ±30 s, whole hours ±60 s; never wider
    # than 5 % of the video (but at least 5 s); "around"/"about" doubles it.
    half = 5.0 if finest_unit_s <= 1 else 30.0 if finest_unit_s <= 60 else 60.0
    half = min(half, max(5.0, 0.05 * duration_s))
    return 2 * half if fuzzy else half


Window = tuple[float, float]


def _point(center: float, finest: float, fuzzy: bool, duration: float) -> Window:
    half = _point_half_width(finest, fuzzy, duration)
    return center - half, center + half


def _range(m: re.Match, duration: float) -> Window | None:
    a_text, b_text = m.group("a"), m.group("b")
    b = duration if re.fullmatch(r"end|finish", b_text) else _seconds(b_text)
    if re.fullmatch(r"start|beginning", a_text):
        a = 0.0
    elif re.fullmatch(_TIME, a_text):
        a = _seconds(a_text)
    else:  # a bare number: "between 1 and 2 minutes"
        a = _number(a_text) * _leading_unit(b_text)
    return None if a is None or b is None else (min(a, b), max(a, b))


def _from_end(m: re.Match, duration: float) -> Window | None:
    parsed = _parse_time(m.group("t"))
    return None if parsed is None else _point(duration - parsed[0], parsed[1], False, duration)


def _first_last(m: re.Match, duration: float) -> Window | None:
    t_text = m.group("t")
    if re.fullmatch(_TIME, t_text):
        span = _seconds(t_text)
        if span is None:
            return None
    else:  # "minute", "few seconds", "minutes"
        unit = _UNIT_SECONDS[t_text.split()[-1][0]]
        span = unit * (3 if (t_text.startswith("few") or t_text.endswith("s")) else 1)
    if m.group("which") in ("first", "opening"):
        return 0.0, span
    return duration - span, duration


def _fraction(m: re.Match, duration: float) -> Window:
    size = duration / {"half": 2, "third": 3, "quarter": 4}[m.group("frac")]
    nth = {"first": 0, "second": 1, "third": 2}.get(m.group("which"))
    if nth is None:  # last / final
        return duration - size, duration
    return nth * size, (nth + 1) * size


def _after(m: re.Match, duration: float) -> Window | None:
    t = _seconds(m.group("t"))
    return None if t is None else (t, duration)


def _before(m: re.Match, duration: float) -> Window | None:
    t = _seconds(m.group("t"))
    return None if t is None else (0.0, t)


def _at(m: re.Match, duration: float) -> Window | None:
    parsed = _parse_time(m.group("t"))
    if parsed is None:
        return None
    prep = m.groupdict().get("prep") or ""
    return _point(parsed[0], parsed[1], any(w in prep for w in _FUZZY), duration)


def _end(m: re.Match, duration: float) -> Window:
    return duration - _edge_width(duration), duration


def _start(m: re.Match, duration: float) -> Window:
    return 0.0, _edge_width(duration)


def _middle(m: re.Match, duration: float) -> Window:
    half = max(5.0, min(0.05 * duration, 300.0))
    return duration / 2 - half, duration / 2 + half


_NOT_OTHER = rf"(?!\s+of\s+(?!{_VIDEO_NOUNS}))"  # "the end of the race" is about the race, not the video
_UNIT_ONLY = r"(?:few\s+)?(?:hours?|minutes?|seconds?)(?![a-z])"
# In priority order: the text a rule uses is blanked before the next rule reads the question.
_RULES: list[tuple[re.Pattern, Callable[[re.Match, float], Window | None]]] = [(re.compile(p), h) for p, h in [
    (rf"\b(?:between|from)\s+(?:the\s+)?(?P<a>{_TIME}|{_BARE}|start|beginning)\s*(?:mark\s*)?"
     rf"(?:and|to|until|till|through|-)\s*(?:the\s+)?(?P<b>{_TIME}|end|finish)(?![a-z])", _range),
    (rf"(?P<a>{_CLOCK})\s*(?:-|to|until|till)\s*(?P<b>{_CLOCK})", _range),
    (rf"(?P<t>{_TIME})\s+(?:before|from)\s+the\s+end\b", _from_end),
    (r"\b(?P<which>first|second|third|last|final)\s+(?P<frac>half|third|quarter)\b"
     r"(?!\s+an?\s+(?:hour|minute|second))", _fraction),
    (rf"\b(?P<which>first|opening|last|final|closing)\s+(?P<t>{_TIME}|{_UNIT_ONLY})", _first_last),
    (rf"\bfrom\s+(?:the\s+)?(?P<t>{_TIME})\s*(?:mark\s+)?on(?:wards?)?\b", _after),
    (rf"\b(?:after|since|past|beyond)\s+(?:the\s+)?(?P<t>{_TIME})", _after),
    (rf"\b(?:before|until|till|up\s+to|prior\s+to)\s+(?:the\s+)?(?P<t>{_TIME})", _before),
    (rf"(?P<prep>\bat\s+(?:(?:around|about|approximately|approx\.?|roughly)\s+)?|\b(?:around|about|"
     rf"approximately|approx\.?|roughly|near|circa)\s+|~\s*|@\s*)(?:the\s+)?(?P<t>{_TIME})", _at),
    (rf"(?P<t>{_DURATION})\s+(?:in|into)\b", _at),
    (rf"\bthe\s+(?P<t>{_TIME})\s*mark\b", _at),
    (rf"(?P<t>{_CLOCK})", _at),
    (rf"\b(?:(?:at|near|towards?|by|in)\s+the\s+(?:very\s+)?end(?:ing)?|the\s+ending|the\s+final\s+"
     rf"moments?|end\s+of\s+{_VIDEO_NOUNS})(?![a-z]){_NOT_OTHER}", _end),
    (rf"\b(?:(?:at|near|in|from)\s+the\s+(?:very\s+)?(?:beginning|start|outset)|the\s+opening\s+"
     rf"(?:moments?|scene|shot)|(?:beginning|start)\s+of\s+{_VIDEO_NOUNS})(?![a-z]){_NOT_OTHER}", _start),
    (rf"\b(?:(?:in|near|around)\s+the\s+(?:very\s+)?middle|midway|halfway|half-way|mid-way|"
     rf"middle\s+of\s+{_VIDEO_NOUNS})(?![a-z]){_NOT_OTHER}", _middle),
]]


def _merge_windows(windows: list[Window], duration: float) -> list[Window]:
    """Clip to [0, duration], drop windows wholly outside the video, merge overlaps, sort by start."""
    clipped = sorted((max(0.0, lo), min(duration, hi)) for lo, hi in windows)
    merged: list[Window] = []
    for lo, hi in clipped:
        if hi <= lo and not (lo == hi and 0.0 < lo < duration):
            continue  # wholly outside the video
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def parse_time_references(question: str, duration_s: float) -> list[Window]:
    """Windows (start_s, end_s) of the video that the question names explicitly; [] when it names none.

    Times are written as clocks ("12:30" = 12 min 30 s, "1:02:03" = 1 h 2 min 3 s) or amounts ("90 seconds",
    "2 min", "1h30m", "1 hour and 5 minutes", "five minutes", "half a minute"). Rules, in priority order (the
    text a rule uses is not reused by a later one):

    1. Ranges: "between A and B", "from A to/until B" (also "from the start to B", "from A to the end";
       a bare number borrows B's unit: "between 1 and 2 minutes"), and "A-B" / "A to B" between clocks → [A, B].
    2. "T before the end" / "T from the end" → a point at duration − T.
    3. "first/opening T" → [0, T]; "last/final/closing T" → [duration − T, duration] (no number means one
       unit, "few" or a plural means three: "the last minute", "the last few seconds"); "first/second/last
       half|third|quarter" → that fraction of the video.
    4. "after/since/past T", "from T on(wards)" → [T, duration]; "before/until/till/up to/prior to T" → [0, T].
    5. Points: "at T", "around/about/approximately/roughly/near/~ T", "T in/into (the video)", "the T mark",
       and any bare clock ("12:30") → T ± a half-width set by the precision given: ±5 s to the second,
       ±30 s in whole minutes, ±60 s in hours, capped at 5 % of the video (never below ±5 s); "around"-like
       words double it.
    6. Words: "at/near/towards/by the (very) end", "the ending", "end of the video" → the last 10 % (10 s to
       10 min); the same for "the beginning/start/outset/opening"; "the middle", "midway", "halfway" → the
       centre ± 5 % (5 s to 5 min). "The end of the race" is not a time reference: after "of" only the video
       (clip, film, ...) counts.

    Windows are clipped to [0, duration_s]; one that falls wholly outside the video is dropped ("at 12:30" in a
    10-minute clip), overlapping windows are merged, and the list is sorted by start.
    """
    duration = float(duration_s)
    if not question or not math.isfinite(duration) or duration <= 0:
        return []
    text = question.lower().replace("\u2013", "-").replace("\u2014", "-").replace("\u2019", "'")
    windows: list[Window] = []
    for pattern, handler in _RULES:
        for m in list(pattern.finditer(text)):
            window = handler(m, duration)
            if window is None:
                continue
            windows.append(window)
            # Blank the text this rule used so that later rules do not read it again.
            text = text[: m.start()] + " " * (m.end() - m.start()) + text[m.end():]
    return _merge_windows(windows, duration)


def format_time(seconds: float, end_s: float | None = None) -> str:
    """m:ss (h:mm:ss past an hour) with tenths when they are not 0; with `end_s`, the range "m:ss–m:ss"
    (one time when both ends read the same). The one time format of everything videomini prints."""
    if end_s is not None:
        start, end = format_time(seconds), format_time(end_s)
        return start if start == end else f"{start}–{end}"
    seconds = max(0.0, float(seconds))
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    frac = seconds - int(seconds)
    tail = f"{secs:02d}" + (f".{int(frac * 10)}" if frac >= 0.05 else "")
    return f"{hours}:{minutes:02d}:{tail}" if hours else f"{minutes}:{tail}"
