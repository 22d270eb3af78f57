"""Test media: a video with espeak-ng narration of known sentences at known times and captions drawn on frames
at other known times, so speech and OCR extractors can be checked against ground truth.

    python tests/narrated.py out.mp4        # writes the default script and prints what is where
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Line:
    """A sentence spoken from `start_s`; `end_s` is filled in from the synthesised audio's length."""

    start_s: float
    text: str
    paraphrase: str  # same meaning, different words: what a user would search for
    end_s: float = 0.0
    voice: str = "en-us"  # an espeak-ng voice (with a variant: "en-gb+f3"), so a video can have several speakers


@dataclass(frozen=True)
class Caption:
    """Text drawn on every frame with start_s <= t < end_s: a subtitle in the lower third ("lower"), a slide
    title across the top ("top"), or a full-frame title card that replaces the picture ("card")."""

    start_s: float
    end_s: float
    text: str
    style: str = "lower"


@dataclass
class NarratedVideo:
    path: Path
    duration_s: float
    lines: list[Line] = field(default_factory=list)
    captions: list[Caption] = field(default_factory=list)
    has_audio: bool = True


DEFAULT_LINES = [
    Line(2.0, "The weather today is sunny and warm.", "It is a bright and hot day outside."),
    Line(9.0, "Please remember to feed the cat before you leave.", "Do not forget to give the kitten its food."),
    Line(15.0, "The train to London departs at noon.", "The railway service to the capital leaves at midday."),
]
DEFAULT_CAPTIONS = [
    Caption(5.0, 8.0, "OPEN 24 HOURS"),
    Caption(12.0, 14.0, "EXIT ONLY"),
]


def espeak(text: str, words_per_minute: int = 150, voice: str = "en-us") -> tuple[np.ndarray, int]:
    """Synthesise `text` with espeak-ng → (mono float32 samples in [-1, 1], sample rate)."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng not found: apt-get install -y espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "line.wav"
        subprocess.run([binary, "-v", voice, "-s", str(words_per_minute), "-w", str(wav_path), text],
                       check=True, capture_output=True)
        with wave.open(str(wav_path)) as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    assert width == 2, f"espeak-ng wrote {8 * width}-bit audio"
    return (pcm.reshape(-1, channels).mean(axis=1) / 32768.0).astype(np.float32), rate


def _trimmed_length_s(samples: np.ndarray, rate: int, threshold: float = 0.01) -> float:
    """Duration up to the last audible sample (espeak pads a little silence at the end)."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return float(loud[-1] + 1) / rate if loud.size else 0.0


def _background(t: float, width: int, height: int) -> np.ndarray:
    """A slowly moving colour gradient, so the encoder sees motion and frames are not blank."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    phase = 0.15 * t
    r = 90 + 60 * np.sin(2 * np.pi * (x + phase))
    g = 110 + 50 * np.cos(2 * np.pi * (y + 0.5 * phase))
    b = 140 + 40 * np.sin(2 * np.pi * (x + y - phase))
    return np.stack(np.broadcast_arrays(r, g, b), axis=-1).clip(0, 255).astype(np.uint8)


def _draw_caption(image: np.ndarray, text: str, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """White text on a dark box in the lower third, like a burnt-in subtitle or a sign."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(16, image.shape[0] // 9))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left, bottom - top
    x, y = (image.shape[1] - w) // 2 + shift[0], int(image.shape[0] * 0.62) + shift[1]
    draw.rectangle((x - 16, y - 12, x + w + 16, y + h + 16), fill=(20, 20, 20))
    draw.text((x - left, y - top), text, font=font, fill=(255, 255, 255))
    return np.asarray(canvas)


def _draw_title(image: np.ndarray, text: str) -> np.ndarray:
    """A slide title: dark text on a white band across the top fifth of the frame."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(16, image.shape[0] // 10))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    band = image.shape[0] // 5
    draw.rectangle((0, 0, image.shape[1], band), fill=(245, 245, 240))
    draw.text(((image.shape[1] - (right - left)) // 2 - left, (band - (bottom - top)) // 2 - top), text, font=font,
              fill=(20, 30, 80))
    return np.asarray(canvas)


def _draw_card(image: np.ndarray, text: str) -> np.ndarray:
    """A full-frame title card: large light text on a plain dark blue frame (the footage is not seen)."""
    card = np.empty_like(image)
    card[...] = (25, 35, 70)
    canvas = Image.fromarray(card)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(18, image.shape[0] // 8))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((image.shape[1] - (right - left)) // 2 - left, (image.shape[0] - (bottom - top)) // 2 - top), text,
              font=font, fill=(250, 230, 160))
    return np.asarray(canvas)


def _draw_corner(image: np.ndarray, text: str, corner: str) -> np.ndarray:
    """Small white text on a dark strip in a top corner: a burned-in timecode or a channel watermark."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(12, image.shape[0] // 18))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = 10 if corner == "left" else image.shape[1] - (right - left) - 10
    draw.rectangle((x - 4, 6, x + right - left + 4, 14 + bottom - top), fill=(0, 0, 0))
    draw.text((x - left, 10 - top), text, font=font, fill=(255, 255, 255))
    return np.asarray(canvas)


def timecode(t: float, fps: int) -> str:
    """A camera-style timecode with the frame counter: "00:00:26.000 650"."""
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d} {int(round(t * fps))}"


def clip_background(paths: list[Path], size: tuple[int, int] = (640, 360), fps: int = 10) -> Callable:
    """Real footage as the background: the clips decoded at `fps`, scaled to `size` and played one after the
    other in a loop. Returns `frame(t) -> uint8 (H, W, 3)`."""
    from videomini.video import sample_frames

    frames = []
    for path in paths:
        for batch, _times in sample_frames(path, fps=fps, prefetch=0):
            frames.extend(np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in batch)
    if not frames:
        raise ValueError(f"no frames decoded from {paths}")
    return lambda t: frames[int(round(t * fps)) % len(frames)]


def frame_at(t: float, captions: list[Caption], size: tuple[int, int] = (640, 360),
             caption_shift: tuple[int, int] = (0, 0), background: Callable | None = None,
             timecode_fps: int | None = None, watermark: str | None = None) -> np.ndarray:
    """The uint8 RGB frame shown at time `t`: background plus the captions on screen at `t` (and, when asked,
    a burned-in timecode top left and a watermark top right on every frame)."""
    image = background(t) if background is not None else _background(t, *size)
    for caption in captions:
        if caption.start_s <= t < caption.end_s:
            drawn = {"top": _draw_title, "card": _draw_card}.get(caption.style)
            image = drawn(image, caption.text) if drawn else _draw_caption(image, caption.text, caption_shift)
    if timecode_fps:
        image = _draw_corner(image, timecode(t, timecode_fps), "left")
    if watermark:
        image = _draw_corner(image, watermark, "right")
    return image


def make_narrated_video(
    path: str | Path,
    lines: list[Line] | None = None,
    captions: list[Caption] | None = None,
    duration_s: float = 19.0,
    size: tuple[int, int] = (640, 360),
    fps: int = 10,
    with_audio: bool = True,
    audio_delay_s: float = 0.0,
    background: Callable | None = None,
    burned_timecode: bool = False,
    watermark: str | None = None,
    noise: float = 0.0,
) -> NarratedVideo:
    """Write an H.264 (+ AAC) MP4 with the sentences spoken and the captions shown at their times.

    `audio_delay_s` starts the audio track that much after the first video frame (the container records the
    audio stream's later start time, as in clips cut from a longer recording); line times include it.
    `background(t)` gives the picture under the captions (default: a moving gradient; `clip_background` plays
    real footage); `burned_timecode` and `watermark` draw text that is on every frame and says nothing.
    `noise` adds a steady background hiss of that RMS level (speech peaks near 0.9), seeded so it repeats.
    """
    path = Path(path)
    lines = DEFAULT_LINES if lines is None else lines
    captions = DEFAULT_CAPTIONS if captions is None else captions
    width, height = size
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"preset": "ultrafast", "crf": "23"}

    placed: list[Line] = []
    track = None
    if with_audio:
        rate = 22050
        track = np.zeros(int(round(duration_s * rate)), dtype=np.float32)
        for line in lines:
            samples, line_rate = espeak(line.text, voice=line.voice)
            assert line_rate == rate, f"espeak-ng wrote {line_rate} Hz, expected {rate}"
            start = int(round(line.start_s * rate))
            if start + len(samples) > len(track):
                raise ValueError(f"line at {line.start_s}s does not fit in {duration_s}s: {line.text!r}")
            track[start:start + len(samples)] += samples * 0.9
            placed.append(Line(line.start_s + audio_delay_s, line.text, line.paraphrase,
                               line.start_s + audio_delay_s + _trimmed_length_s(samples, rate), line.voice))
        if noise > 0:
            track += noise * np.random.default_rng(len(track)).standard_normal(len(track)).astype(np.float32)
            np.clip(track, -1.0, 1.0, out=track)
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "mono"

    for index in range(int(round(duration_s * fps))):
        image = frame_at(index / fps, captions, size, background=background,
                         timecode_fps=fps if burned_timecode else None, watermark=watermark)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        out.mux(video.encode(frame))
    out.mux(video.encode())

    if track is not None:
        chunk = 1024
        for start in range(0, len(track), chunk):
            frame = av.AudioFrame.from_ndarray(track[None, start:start + chunk], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 22050, start + int(round(audio_delay_s * 22050))
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    out.close()
    return NarratedVideo(path, duration_s, placed if with_audio else list(lines), list(captions), with_audio)


MEETING_LINES = [  # the narrated example of issue 22: three sentences over two minutes
    Line(12.0, "Our quarterly budget meeting has moved to Thursday afternoon.", "When is the budget meeting?"),
    Line(47.0, "The new printer on the second floor is finally working.", "Can I print upstairs now?"),
    Line(98.0, "Lunch will be served in the main hall at one o'clock.", "Where do we eat?"),
]
MEETING_CAPTIONS = [Caption(30.0, 36.0, "STAFF NOTICES"), Caption(75.0, 81.0, "WARNING WET FLOOR")]


def make_meeting_video(path: str | Path, clips: list[Path]) -> NarratedVideo:
    """120 s over real footage (`clips`), three spoken sentences and two drawn captions: the captioned frames
    look unlike the rest, which is what a frame list's calibration must not mistake for a match."""
    return make_narrated_video(path, lines=MEETING_LINES, captions=MEETING_CAPTIONS, duration_s=120.0,
                               background=clip_background(clips))


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "narrated.mp4")
    made = make_narrated_video(target)
    print(f"wrote {made.path} ({made.duration_s}s)")
    for line in made.lines:
        print(f"  speech {line.start_s:5.2f}-{line.end_s:5.2f}s  {line.text}")
    for caption in made.captions:
        print(f"  text   {caption.start_s:5.2f}-{caption.end_s:5.2f}s  {caption.text}")
