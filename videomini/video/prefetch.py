"""`FrameBatches`: a backend's (frame, time) stream gathered into batches, decoded ahead in a thread into a
bounded queue, so decoding overlaps whatever the consumer does with the previous batch (encoding) while memory
stays bounded by `prefetch` batches whatever the video's length. `start()` begins decoding before the consumer
exists (`ask` starts it before the model is loaded, so the two overlap)."""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from videomini.video.timeline import Warn


class FrameBatches:
    """Iterator of `(frames uint8 (B,H,W,3), timestamps_s float64 (B,))` with a decode thread running ahead.

    Use as a context manager or call `close()` to stop early: the thread stops and the file is released.
    """

    _DONE = object()

    def __init__(self, make_items: Callable[[], Iterator[Any]], batch_size: int, prefetch: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._make_items = make_items
        self._batch_size = batch_size
        self._prefetch = prefetch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._inline: Iterator[Any] | None = None
        self._closed = False
        self.made_for: tuple | None = None  # what the stream was made for (path, fps, sampling, decode), if said
        self.info: Any = None  # the file's VideoInfo, probed when the stream was made (sample_frames)
        self.started_at: float | None = None  # time.perf_counter() when decoding started
        self.first_frame_at: float | None = None  # ... when the decoder delivered its first frame
        self.first_batch_at: float | None = None  # ... when the consumer got the first batch
        self.decoder_waited_s = 0.0  # the decoder blocked on a full queue: it was ahead (decoding is not the limit)
        self.consumer_waited_s = 0.0  # the consumer blocked on an empty queue: it waited for decoding

    def _batches(self) -> Iterator[Any]:
        items = self._make_items()
        try:
            frames, times = [], []
            for item in items:
                if isinstance(item, Warn):
                    yield item
                    continue
                if self.first_frame_at is None:
                    self.first_frame_at = time.perf_counter()
                frames.append(item[0])
                times.append(item[1])
                if len(frames) == self._batch_size:
                    yield np.stack(frames), np.asarray(times, dtype=np.float64)
                    frames, times = [], []
                if self._stop.is_set():
                    return
            if frames:
                yield np.stack(frames), np.asarray(times, dtype=np.float64)
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    def _worker(self) -> None:
        assert self._queue is not None
        try:
            for batch in self._batches():
                if not self._put(batch):
                    return
            self._put(self._DONE)
        except BaseException as e:  # handed to the consumer, re-raised in its thread
            self._put(e)

    def _put(self, item: Any) -> bool:
        """Put into the bounded queue, waiting for room; False once the consumer has closed the iterator."""
        assert self._queue is not None
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            pass
        waited_from = time.perf_counter()
        try:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            self.decoder_waited_s += time.perf_counter() - waited_from

    @property
    def prefetch(self) -> int:
        """Batches the decoder may hold ahead of the consumer (0: decoded on demand, no thread)."""
        return self._prefetch

    def start(self) -> FrameBatches:
        """Begin decoding now, into the bounded queue (inline streams, `prefetch=0`, start on first use)."""
        if self.started_at is None:
            self.started_at = time.perf_counter()
        if self._prefetch > 0 and self._thread is None and not self._closed:
            self._queue = queue.Queue(maxsize=self._prefetch)
            self._thread = threading.Thread(target=self._worker, name="videomini-decode", daemon=True)
            self._thread.start()
        return self

    def __iter__(self) -> FrameBatches:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        while True:
            if self._closed:
                raise StopIteration
            if self._prefetch <= 0:
                if self._inline is None:
                    self.started_at = self.started_at or time.perf_counter()
                    self._inline = self._batches()
                try:
                    item = next(self._inline)
                except StopIteration:
                    self.close()
                    raise
                except BaseException:
                    self.close()
                    raise
            else:
                self.start()
                assert self._queue is not None
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    waited_from = time.perf_counter()
                    item = self._queue.get()
                    self.consumer_waited_s += time.perf_counter() - waited_from
                if item is self._DONE:
                    self.close()
                    raise StopIteration
                if isinstance(item, BaseException):
                    self.close()
                    raise item
            if isinstance(item, Warn):
                warnings.warn(str(item), RuntimeWarning, stacklevel=2)
                continue
            if self.first_batch_at is None:
                self.first_batch_at = time.perf_counter()
            return item

    def close(self) -> None:
        """Stop decoding, join the thread and release the file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    assert self._queue is not None
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
        if self._inline is not None:
            self._inline.close()

    def __enter__(self) -> FrameBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
