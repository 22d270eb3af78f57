"""What goes over the wire besides JSON bodies: one-line reasons and server-sent event frames."""

from __future__ import annotations

import json


def one_line(text: str, limit: int = 500) -> str:
    """A reason as one short line (whatever the library said), for error bodies and error events."""
    return " ".join(str(text).split())[:limit]


def sse(event: str | None, data: dict | str) -> str:
    """One server-sent event: `event:` (when named) and one `data:` line of JSON (or a literal like [DONE])."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
