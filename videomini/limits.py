"""Every limit on what a user or a client may send, in one place, and the checks that enforce them at the edge
(CLI flags, HTTP fields) before any model loads or any row reaches the catalog.

Each check returns the cleaned value or raises InvalidInput / LimitExceeded (exit 1 in the CLI, HTTP 400 on
the server) whose one line names the field and the limit. README's "Limits" table lists the same numbers.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from videomini.errors import InvalidInput, LimitExceeded, VideominiError

# -- questions and queries: characters before anything runs; tokens once the question is tokenized. The
# question is fused with every frame (LLaVA-Mini's pre-fusion), so its length multiplies the whole prefill:
# 100,000 characters tried to allocate 40 GB; 1,024 tokens keep the fusion at frames x ~1k positions.
QUESTION_MAX_CHARS = 4000
QUESTION_MAX_TOKENS = 1024
QUERY_MAX_CHARS = 2000  # search queries (CLIP reads 77 tokens of them, MiniLM 256)

# -- sampling and frames
FPS_MIN = 0.001  # one frame per 1,000 s (16.7 min)
FPS_MAX = 60.0  # the frame rate of most videos; more only repeats frames
FRAMES_MAX = 100_000  # --max-frames, max_frames, num_frames: 27.8 h at 1 fps, past any model's context
FRAMES_PER_REQUEST_MAX = 512  # image_url parts of one chat request (the frames of one video)

# -- images: the pixel count is read from the header, before decoding. PIL's own bomb guard warns at 89.5 MP
# and refuses at 179 MP; 16.8 MP (4096 x 4096 = 50 MB as RGB) is far below and above any camera frame we sample.
IMAGE_MAX_PIXELS = 4096 * 4096
# decoded pixels all requests of one server may hold at once: 128 Mi pixels = 384 MiB of RGB frames
SERVER_DECODED_PIXELS = 128 << 20

# -- ids, counts, times
ID_MAX = 2**63 - 1  # SQLite's INTEGER: a larger id cannot name a row
TOP_K_MAX = 1000  # moments a search returns or an ask retrieves
MAX_NEW_TOKENS_MAX = 8192
WORKERS_MAX = 64
SECONDS_MAX = 7 * 24 * 3600.0  # --timeout, --wait: a week


def check_text(text: Any, field: str, max_chars: int, what: str, limit_name: str) -> str:
    """`text` stripped; InvalidInput when blank or not a string, LimitExceeded over `max_chars`."""
    if not isinstance(text, str):
        raise InvalidInput(f"{field}: expected {what} as a string")
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(f"{field}: empty {what}; give one")
    if len(stripped) > max_chars:
        raise LimitExceeded(f"{field}: {len(stripped):,} characters, over the limit of {max_chars:,} ({limit_name})")
    return stripped


def check_question(text: Any, field: str = "question") -> str:
    """A question: not blank, at most QUESTION_MAX_CHARS characters."""
    return check_text(text, field, QUESTION_MAX_CHARS, "question", "QUESTION_MAX_CHARS")


def check_query(text: Any, field: str = "query") -> str:
    """A search query: not blank, at most QUERY_MAX_CHARS characters."""
    return check_text(text, field, QUERY_MAX_CHARS, "query", "QUERY_MAX_CHARS")


def check_question_tokens(n_tokens: int, field: str = "question") -> None:
    """The tokenized question at most QUESTION_MAX_TOKENS tokens (checked before any frame is fused)."""
    if n_tokens > QUESTION_MAX_TOKENS:
        raise LimitExceeded(f"{field}: {n_tokens:,} tokens, over the limit of {QUESTION_MAX_TOKENS:,} "
                            "(QUESTION_MAX_TOKENS); ask a shorter question")


def check_number(value: Any, field: str, low: float, high: float, low_open: bool = False,
                 limit_name: str = "") -> float:
    """A finite number within [low, high] ((low, high] when `low_open`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{field}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise InvalidInput(f"{field}: must be a finite number, got {value}")
    if value > high or value < low or (low_open and value == low):
        bound = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise LimitExceeded(f"{field}: {value:g} is outside {bound}" + (f" ({limit_name})" if limit_name else ""))
    return float(value)


def check_count(value: Any, field: str, low: int, high: int, limit_name: str = "") -> int:
    """An integer within [low, high] (a float with an integer value counts; inf, NaN, 2.5 and "3" do not)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise LimitExceeded(f"{field}: {value:,} is outside {low:,} to {high:,}"
                            + (f" ({limit_name})" if limit_name else ""))
    return value


def check_fps(value: Any, field: str = "--fps") -> float:
    """Frames per second: finite, FPS_MIN to FPS_MAX."""
    return check_number(value, field, FPS_MIN, FPS_MAX, limit_name="FPS_MIN to FPS_MAX")


def check_max_frames(value: Any, field: str = "--max-frames") -> int | None:
    """A frame cap: None (no cap) or 1 to FRAMES_MAX."""
    return None if value is None else check_count(value, field, 1, FRAMES_MAX, "FRAMES_MAX")


def check_id(value: Any, field: str = "id") -> int:
    """A catalog id: a non-negative integer (ASCII digits when text) of at most ID_MAX."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            raise InvalidInput(f"{field}: expected a video id (digits, at most {ID_MAX}), got {value[:40]!r}")
        value = int(text)
    return check_count(value, field, 0, ID_MAX, "ID_MAX")


def check_image_pixels(width: int, height: int, field: str = "image") -> int:
    """An image's pixel count, read from its header, at most IMAGE_MAX_PIXELS."""
    pixels = int(width) * int(height)
    if pixels > IMAGE_MAX_PIXELS:
        raise LimitExceeded(f"{field}: {width}x{height} = {pixels:,} pixels, over the limit of "
                            f"{IMAGE_MAX_PIXELS:,} (IMAGE_MAX_PIXELS)")
    return pixels


class DecodeBudgetFull(VideominiError):
    """Requests in flight already hold the server's budget of decoded pixels: retry shortly."""

    http_status, retry_after_s = 503, 2


class PixelBudget:
    """The decoded pixels all requests of one server hold at once (SERVER_DECODED_PIXELS): a request takes its
    share before decoding and gives it back when done; one that can never fit is refused as over the limit."""

    def __init__(self, total: int = SERVER_DECODED_PIXELS) -> None:
        self.total, self.held = total, 0
        self._lock = threading.Lock()

    def take(self, pixels: int, field: str = "messages") -> int:
        if pixels > self.total:
            raise LimitExceeded(f"{field}: {pixels:,} decoded pixels in one request, over the limit of "
                                f"{self.total:,} (SERVER_DECODED_PIXELS)")
        with self._lock:
            if self.held + pixels > self.total:
                raise DecodeBudgetFull(f"{field}: the server is decoding {self.held:,} pixels for other requests "
                                       f"(budget {self.total:,}); retry shortly")
            self.held += pixels
        return pixels

    def give_back(self, pixels: int) -> None:
        with self._lock:
            self.held = max(0, self.held - pixels)
