"""Time references in a question (videomini.timerefs): clock times, spans, ordinals, relative phrases."""

from __future__ import annotations

import pytest

from videomini.timerefs import parse_time_references

HOUR = 3600.0



# ---------------------------------------------------------------------------------------------------------
# Time references
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("question, duration, windows", [
    ("What happens at 12:30?", HOUR, [(745, 755)]),
    ("what is on screen at 1:02:03", 2 * HOUR, [(3718, 3728)]),
    ("What does she hold at 90 seconds?", HOUR, [(85, 95)]),
    ("at 2 min, who speaks?", HOUR, [(90, 150)]),
    ("what happens around 5 min", HOUR, [(240, 360)]),  # "around" doubles the ±30 s of a whole minute
    ("at around 3:00", HOUR, [(170, 190)]),
    ("What is said in the first 5 minutes?", HOUR, [(0, 300)]),
    ("what happens in the last 30 seconds", HOUR, [(3570, 3600)]),
    ("in the last minute", HOUR, [(3540, 3600)]),
    ("What happens at the end?", HOUR, [(3240, 3600)]),  # last 10 %
    ("What happens at the end?", 4 * HOUR, [(4 * HOUR - 600, 4 * HOUR)]),  # at most 10 min
    ("What happens at the end of the video?", 100, [(90, 100)]),  # at least 10 s
    ("who is there at the beginning", HOUR, [(0, 360)]),
    ("at the start of the clip", HOUR, [(0, 360)]),
    ("between 1:00 and 2:00", HOUR, [(60, 120)]),
    ("from 1:00 to 2:00", HOUR, [(60, 120)]),
    ("between 1 and 2 minutes", HOUR, [(60, 120)]),
    ("from 50:00 to the end", HOUR, [(3000, 3600)]),
    ("what changes 1:00-2:00", HOUR, [(60, 120)]),
    ("what happens after 10 minutes", HOUR, [(600, 3600)]),
    ("anything before 3:00?", HOUR, [(0, 180)]),
    ("from 10:00 onwards", HOUR, [(600, 3600)]),
    ("what happens in the middle", HOUR, [(1620, 1980)]),
    ("2 minutes before the end", HOUR, [(3450, 3510)]),
    ("what is shown 5 minutes in?", HOUR, [(270, 330)]),
    ("at the 10-minute mark", HOUR, [(570, 630)]),
    ("at 1h30m", 2 * HOUR, [(5370, 5430)]),
    ("at 1 hour and 5 minutes", 2 * HOUR, [(3870, 3930)]),
    ("at five minutes", HOUR, [(270, 330)]),
    ("in the first half a minute", HOUR, [(0, 30)]),
    ("in the second half", 100, [(50, 100)]),
    ("at 12:30 and in the last minute", HOUR, [(745, 755), (3540, 3600)]),
    ("at 0:02", 10, [(0, 7)]),  # clipped to the video
    ("in the last 30 seconds", 10, [(0, 10)]),
    ("at 2 min", 180, [(111, 129)]),  # never wider than 5 % of a short video
    # Not time references:
    ("What color is the car?", HOUR, []),
    ("what happens at the end of the race", HOUR, []),
    ("the last person at the table", HOUR, []),
    ("often minutes pass", HOUR, []),
    ("at 1:75", HOUR, []),
    ("at 12:30", 600, []),  # outside a 10-minute video
])
def test_parse_time_references(question: str, duration: float, windows: list[tuple[float, float]]) -> None:
    assert parse_time_references(question, duration) == [pytest.approx(w) for w in windows]  # pytest 9: not nested
