"""Backpressure between the decoder and the encoder: a bounded buffer that, for a live source, never blocks the
decoder and drops frames evenly when the encoder falls behind (for a file decoded as fast as it goes, it waits)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")


class FrameBuffer(Generic[Item]):
    """At most `capacity` frames. Live (`drop=True`): when full, every other buffered frame is dropped and from
    then on only one frame in `stride` is accepted (stride doubles at each overflow), so what survives stays evenly
    spaced in time; stride halves again whenever the encoder empties the buffer. Not live: `put` waits for room."""

    def __init__(self, capacity: int, drop: bool):
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, not {capacity}")
        self.capacity, self.drop = capacity, drop
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._offered = 0
        self.stride = 1
        self.dropped = 0

    def put(self, item: Item) -> None:
        """Offer one frame (in time order). Never blocks when live; raises nothing after `close` (ignored)."""
        with self._cond:
            if self._closed:
                return
            if self.drop:
                self._offered += 1
                if self._offered % self.stride:
                    self.dropped += 1
                    return
                if len(self._items) >= self.capacity:
                    kept = list(self._items)[1::2]  # keep every other frame: drops spread evenly over the buffer
                    self.dropped += len(self._items) - len(kept)
                    self._items = deque(kept)
                    self.stride *= 2
            else:
                while len(self._items) >= self.capacity and not self._closed:
                    self._cond.wait()
            self._items.append(item)
            self._cond.notify_all()

    def take(self, max_items: int, timeout_s: float) -> list[Item]:
        """Up to `max_items` frames, waiting up to `timeout_s` for the first; [] when closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout=timeout_s)
            taken = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            if not self._items and self.stride > 1:
                self.stride //= 2
            self._cond.notify_all()
            return taken

    def close(self) -> None:
        """No more frames: `take` drains what is left, then returns []."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed_and_empty(self) -> bool:
        with self._cond:
            return self._closed and not self._items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
