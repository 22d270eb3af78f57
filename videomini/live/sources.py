"""Live sources through PyAV: a file (as fast as it decodes, or at its own pace), `udp://` / `srt://` MPEG-TS,
`rtsp://`, `rtmp://`, HTTP(S) HLS playlists, a V4L2 device and `-` (stdin). Every open and read has a timeout;
a source that drops is reopened with backoff and the hole is recorded on the timeline as a gap."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videomini.config import FPS
from videomini.errors import VideominiError
from videomini.live.timeline import Timeline

FRAME_SIDE = 336  # frames are kept at the encoder's input size (the reference squashes every frame to 336 x 336)
NETWORK_SCHEMES = ("udp", "srt", "rtsp", "rtmp", "rtmps", "http", "https", "tcp")
BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # waits between reconnect attempts; the last one repeats
AUDIO_RATE = 16000  # Whisper's sampling rate
GAP_MIN_S = 1.5  # a hole longer than 1.5 sampling intervals is recorded as a gap


class SourceError(VideominiError):
    """A source that cannot be used: one line naming it and the reason."""


@dataclass(frozen=True)
class SourceSpec:
    """What to open and how: `kind` file / network / device / stdin; `realtime` paces a file at its own speed;
    `loop` reopens a file at its end (the timeline keeps advancing)."""

    url: str
    kind: str
    realtime: bool
    loop: bool = False

    @property
    def live(self) -> bool:
        """A source that does not wait for us: frames not taken in time are dropped, never queued without end."""
        return self.kind != "file" or self.realtime

    @property
    def reconnects(self) -> bool:
        return self.kind == "network"


def parse_source(text: str, realtime: bool = False, loop: bool = False) -> SourceSpec:
    """`text` -> SourceSpec; SourceError (one line) for a file that does not exist or an unknown scheme."""
    text = str(text).strip()
    if text == "-":
        return SourceSpec("pipe:0", "stdin", realtime=True)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in NETWORK_SCHEMES:
        return SourceSpec(text, "network", realtime=True)
    if scheme and scheme != "file":
        raise SourceError(f"{text}: unsupported source scheme {scheme!r} (use a file, -, /dev/videoN or "
                          f"{', '.join(s + '://' for s in NETWORK_SCHEMES)})")
    path = Path(text[7:] if scheme == "file" else text)
    if str(path).startswith("/dev/video"):
        if not path.exists():
            raise SourceError(f"{path}: no such capture device")
        return SourceSpec(str(path), "device", realtime=True)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    return SourceSpec(str(path), "file", realtime=realtime, loop=loop)


def open_source(spec: SourceSpec, timeout_s: float) -> Any:
    """An open PyAV container; opening and every later read give up after `timeout_s` (PyAV's interrupt)."""
    import av

    options = {}
    fmt = None
    if spec.kind == "network":
        micro = str(int(timeout_s * 1e6))
        # probe at most 1 s of a live stream before the first frame (FFmpeg's default is 5 s)
        options = {"rw_timeout": micro, "fflags": "nobuffer", "analyzeduration": "1000000"}
        if spec.url.startswith("udp://"):
            options.update(timeout=micro, overrun_nonfatal="1", fifo_size="1000000")
        if spec.url.startswith("rtsp://"):
            options.update(rtsp_transport="tcp", timeout=micro)
    elif spec.kind == "device":
        fmt = "v4l2"
    try:
        return av.open(spec.url, format=fmt, options=options, timeout=(timeout_s, timeout_s))
    except (av.error.FFmpegError, OSError) as e:
        raise SourceError(f"{spec.url}: cannot open ({_reason(e)})") from None


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.splitlines()[0].strip().rstrip(":")


@dataclass
class SampledFrame:
    """One frame kept at the sampling rate: its stream time and pixels (FRAME_SIDE x FRAME_SIDE RGB)."""

    stream_s: float
    pixels: np.ndarray


@dataclass
class SampledAudio:
    """Sound from `stream_s` on: mono float32 samples at AUDIO_RATE."""

    stream_s: float
    samples: np.ndarray


class StreamReader:
    """Frames of a source at `fps` on the session's timeline, across reconnects.

    Stream time of a frame = where its connection starts on the timeline + (pts - the connection's first pts).
    A realtime source's connection starts at the wall time it opened; a file decoded as fast as it goes starts
    where the previous pass ended. `events(kind, details)` hears connects, drops and gaps."""

    def __init__(self, spec: SourceSpec, timeline: Timeline, fps: float = FPS, timeout_s: float = 10.0,
                 stop: threading.Event | None = None, events: Callable[[str, dict], None] | None = None,
                 audio: bool = False):
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        self.spec, self.timeline, self.fps, self.timeout_s, self.audio = spec, timeline, fps, timeout_s, audio
        self.stop = stop or threading.Event()
        self.events = events or (lambda kind, details: None)
        self.end_s = 0.0  # stream time just after the last frame taken
        self.connections = 0
        self.decoded = 0  # frames decoded (all of them, not only the sampled ones)

    def frames(self) -> Iterator[SampledFrame | SampledAudio]:
        """Sampled frames until the source ends (a file without loop) or `stop` is set; SourceError when the
        source gives no frame within the timeout. A connection counts once it gives its first frame."""
        started = time.monotonic()
        failures = 0
        while not self.stop.is_set():
            try:
                container = open_source(self.spec, self.timeout_s)
                try:
                    connected_before = self.connections
                    yield from self._connection(container)
                finally:
                    container.close()
            except SourceError as e:
                if not self.spec.reconnects:
                    raise
                if self.connections == 0 and time.monotonic() - started >= self.timeout_s:
                    raise SourceError(f"{e} — no connection within {self.timeout_s:g} s") from None
                self.events("retry", {"error": str(e)})
                self.stop.wait(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                continue
            if self.spec.kind == "file" and not self.spec.loop or self.spec.kind == "stdin":
                return
            if self.connections > connected_before:  # it gave frames, then stopped: a drop
                failures = 0
                if self.spec.reconnects and not self.stop.is_set():
                    self.events("dropped", {"at_s": round(self.end_s, 3)})
            elif self.spec.reconnects:  # opened but gave nothing: wait before the next attempt
                if self.connections == 0 and time.monotonic() - started >= self.timeout_s:
                    raise SourceError(f"{self.spec.url}: no frames within {self.timeout_s:g} s")
                self.stop.wait(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
            elif self.spec.kind == "file" and self.connections == 0:
                raise SourceError(f"{self.spec.url}: no frame could be decoded")

    def _connection(self, container: Any) -> Iterator[SampledFrame | SampledAudio]:
        """One open container's frames (1/fps sampling by pts) and, with `audio`, its sound at 16 kHz mono; the
        connection is placed on the timeline at its first video frame."""
        import av

        if not container.streams.video:
            raise SourceError(f"{self.spec.url}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        sound = container.streams.audio[0] if self.audio and container.streams.audio else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE) if sound is not None else None
        self._offset, self._first_pts, self._next_t, self._paced_from = None, None, 0.0, time.monotonic()
        try:
            for packet in container.demux(*([stream] + ([sound] if sound is not None else []))):
                for frame in packet.decode():
                    if self.stop.is_set():
                        return
                    item = self._audio(frame, resampler) if packet.stream is sound else self._video(frame)
                    if item is not None:
                        yield item
        except (av.error.FFmpegError, OSError) as e:  # a drop mid-stream: the caller reconnects
            self.events("error", {"error": f"{self.spec.url}: {_reason(e)}"})

    def _video(self, frame: Any) -> SampledFrame | None:
        """The frame when it is the first at or after the next 1/fps mark, else None."""
        self.decoded += 1
        if frame.time is None:
            return None
        if self._offset is None:
            self._offset, self._first_pts = self._place_connection(), frame.time
        t = frame.time - self._first_pts
        if t + 1e-6 < self._next_t:
            return None
        if self.spec.kind == "file" and self.spec.realtime:  # the file's own pace
            self.stop.wait(max(0.0, self._paced_from + t - time.monotonic()))
        pixels = frame.to_ndarray(format="rgb24", width=FRAME_SIDE, height=FRAME_SIDE)
        self._next_t = (int(t * self.fps + 1e-6) + 1) / self.fps
        self.end_s = self._offset + t + 1.0 / self.fps
        return SampledFrame(self._offset + t, pixels)

    def _audio(self, frame: Any, resampler: Any) -> SampledAudio | None:
        """Sound on the stream clock (none before the connection's first video frame places it)."""
        if self._offset is None or frame.time is None:
            return None
        samples = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        if not samples:
            return None
        return SampledAudio(self._offset + frame.time - self._first_pts, np.concatenate(samples).astype(np.float32))

    def _place_connection(self) -> float:
        """Where a new connection starts on the timeline; records the gap before it (realtime sources)."""
        self.connections += 1
        if self.spec.kind == "file":
            offset = self.end_s
        else:
            offset = max(self.end_s, self.timeline.now_s())
            if self.connections > 1 and offset - self.end_s > GAP_MIN_S / self.fps:
                gap = self.timeline.add_gap(self.end_s, offset, "source dropped; reconnected")
                self.events("gap", gap.to_dict())
        self.events("connected", {"url": self.spec.url, "at_s": round(offset, 3), "connection": self.connections})
        return offset
