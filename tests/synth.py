"""Synthetic test videos whose pixels say which frame they are.

Every frame of `make_numbered_video` carries its frame number in a grid of black/white blocks in the top-left
corner (3 rows x 8 columns; first cell always white, last always black, 22 bits of number in between), large
enough to survive lossy H.264. `read_frame_number(frame)` reads it back, so a test can assert exactly which
frame a decoder returned at which time. Also: an optional sine audio track, `rotate` metadata, variable frame
rate (explicit timestamps), byte-level damage (truncation, a header that lies about the duration), and
`make_testsrc_video` for long videos made quickly by ffmpeg's testsrc (benchmarks).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID_ROWS, GRID_COLS = 3, 8
N_BITS = GRID_ROWS * GRID_COLS - 2


def _cell_size(width: int, height: int) -> int:
    cell = min(width // GRID_COLS, height // GRID_ROWS)
    if cell < 4:
        raise ValueError(f"frame {width}x{height} is too small for the frame-number grid (needs >= 32x12)")
    return cell


def draw_frame(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame (height, width, 3) showing `index` as a block grid over a moving gradient."""
    if not 0 <= index < 2**N_BITS:
        raise ValueError(f"frame number {index} does not fit in {N_BITS} bits")
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (xs * 255 // max(width - 1, 1) + 3 * index) % 256 // 2 + 64
    frame[..., 1] = (ys * 255 // max(height - 1, 1)) // 2 + 64
    frame[..., 2] = 96
    cell = _cell_size(width, height)
    bits = [1] + [(index >> b) & 1 for b in range(N_BITS)] + [0]
    for i, bit in enumerate(bits):
        r, c = divmod(i, GRID_COLS)
        frame[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 255 if bit else 0
    return frame


def read_frame_number(frame: np.ndarray) -> int:
    """The number drawn by `draw_frame` into an upright RGB (H, W, 3) frame; ValueError if the grid is absent."""
    height, width = frame.shape[:2]
    cell = _cell_size(width, height)
    luma = frame[..., :3].astype(np.float32).mean(axis=-1)
    bits = []
    for i in range(GRID_ROWS * GRID_COLS):
        r, c = divmod(i, GRID_COLS)
        m = max(cell // 4, 1)
        block = luma[r * cell + m:(r + 1) * cell - m, c * cell + m:(c + 1) * cell - m]
        value = float(block.mean())
        if 60 < value < 195:
            raise ValueError(f"cell {i} is not black or white (mean {value:.0f}): no frame-number grid here")
        bits.append(1 if value >= 128 else 0)
    if bits[0] != 1 or bits[-1] != 0:
        raise ValueError("frame-number grid markers not found (wrong orientation or not a numbered frame)")
    return sum(bit << b for b, bit in enumerate(bits[1:-1]))


def make_numbered_video(
    path: str | Path,
    seconds: float | None = None,
    fps: float = 10.0,
    size: tuple[int, int] = (96, 64),
    codec: str = "libx264",
    *,
    timestamps_s: Sequence[float] | None = None,
    audio: bool = False,
    rotate: int = 0,
    gop: int | None = None,
    faststart: bool = False,
    crf: int = 20,
    pix_fmt: str = "yuv420p",
    bframes: bool = True,
) -> Path:
    """Write a video whose frame i shows the number i. Returns the path.

    Constant frame rate: `seconds` * `fps` frames at i / fps. Variable frame rate: pass `timestamps_s`
    (strictly increasing presentation times; `seconds`/`fps` then only set the time base and audio length).
    `size` is (width, height) as stored; `rotate` is the legacy `rotate` tag (degrees clockwise for display),
    written as a display matrix. `audio` adds a 440 Hz sine track (AAC). `faststart` puts the MP4 index first
    (what truncation tests need to keep the index). `gop` sets the keyframe interval in frames.
    """
    path = Path(path)
    width, height = size
    if timestamps_s is None:
        if seconds is None:
            raise ValueError("give seconds (with fps) or timestamps_s")
        n_frames = max(int(round(seconds * fps)), 1)
        timestamps_s = [i / fps for i in range(n_frames)]
    timestamps_s = list(timestamps_s)
    if any(b <= a for a, b in zip(timestamps_s, timestamps_s[1:])):
        raise ValueError("timestamps_s must be strictly increasing")
    vfr = not all(abs(t - i / fps) < 1e-9 for i, t in enumerate(timestamps_s))
    time_base = Fraction(1, 1000) if vfr else Fraction(1, 1) / Fraction(fps).limit_denominator(100000)
    options = {"movflags": "+faststart"} if faststart and path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt
        stream.time_base = time_base
        opts = {}
        if codec in ("libx264", "libx265"):
            opts = {"crf": str(crf), "preset": "ultrafast" if not bframes else "veryfast"}
            if not bframes:
                opts["bf"] = "0"
        if gop:
            stream.codec_context.gop_size = gop
        stream.codec_context.options = opts
        if vfr:
            stream.codec_context.time_base = time_base
        if rotate % 360:
            stream.set_display_rotation(-rotate)
        audio_stream = None
        if audio:
            audio_stream = container.add_stream("aac", rate=16000)
            audio_stream.layout = "mono"
        for i, t in enumerate(timestamps_s):
            frame = av.VideoFrame.from_ndarray(draw_frame(i, width, height), format="rgb24")
            frame.pts = int(round(t / time_base))
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            duration = seconds if seconds is not None else timestamps_s[-1] + 1 / fps
            _write_sine(container, audio_stream, duration)
    return path


def _write_sine(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    rate, chunk = 16000, 1024
    n_samples = int(seconds * rate)
    for start in range(0, n_samples, chunk):
        t = np.arange(start, min(start + chunk, n_samples)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def make_audio_only(path: str | Path, seconds: float = 2.0) -> Path:
    """An .mp4 holding only a sine audio track (no video stream)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        _write_sine(container, stream, seconds)
    return path


def truncate(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """Copy the first `fraction` of `src`'s bytes to `dst` (a download cut short)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def damage(src: str | Path, dst: str | Path, start_s: float, end_s: float, seed: int = 0) -> Path:
    """Copy a video and overwrite with random bytes the video packets whose decode time is in [start_s, end_s)
    (bit rot or a bad sector in the middle of a file; the container's index stays intact)."""
    import random

    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        spans = [(e.pos, e.size) for e in stream.index_entries
                 if start_s <= float(e.timestamp * stream.time_base) < end_s]
    data, rng = bytearray(Path(src).read_bytes()), random.Random(seed)
    for pos, size in spans:
        data[pos:pos + size] = bytes(rng.randrange(256) for _ in range(size))
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def lie_about_duration(src: str | Path, dst: str | Path, factor: float) -> Path:
    """Copy an MP4 and multiply the durations its header declares (mvhd, tkhd, mdhd) by `factor`.

    The sample tables stay true, so the frames and their timestamps do not change: only the header lies.
    """
    data = bytearray(Path(src).read_bytes())
    for box in (b"mvhd", b"tkhd", b"mdhd"):
        start = 0
        while (at := data.find(box, start)) >= 0:
            start = at + 4
            version = data[at + 4]
            if box == b"tkhd":  # creation, modification, track id, reserved, then duration
                offset = at + 8 + (16 if version == 0 else 24)
            else:  # creation, modification, timescale, then duration
                offset = at + 8 + (12 if version == 0 else 20)
            fmt = ">I" if version == 0 else ">Q"
            (value,) = struct.unpack_from(fmt, data, offset)
            struct.pack_into(fmt, data, offset, int(value * factor))
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def make_testsrc_video(path: str | Path, seconds: float, size: tuple[int, int] = (640, 360), fps: int = 30,
                       preset: str = "ultrafast", pattern: str = "testsrc", keyframe_s: float = 10) -> Path:
    """A long H.264 video from ffmpeg's testsrc (fast to generate; the burnt-in counter shows the second), or
    `pattern` testsrc2 (moving, colourful), with a keyframe every `keyframe_s` seconds."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg binary not found (apt-get install -y ffmpeg)")
    path = Path(path)
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    width, height = size
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
         f"{pattern}=size={width}x{height}:rate={fps}:duration={seconds}",
         "-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-g", str(round(fps * keyframe_s)), str(tmp)],
        check=True,
    )
    tmp.replace(path)
    return path
