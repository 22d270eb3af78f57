"""videomini.video's PyAV backend in fast mode and with the decoder's squash: which frames a fast decode uses
(and that it says so), and that frames squashed in the decoder are the encoder's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

try:  # `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests import synth
except ImportError:
    import synth
from videomini.video import sample_frames

FPS = 10


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("fast")
    return {
        "bframes": synth.make_numbered_video(d / "bframes.mp4", 12, FPS, gop=40, bframes=True),
        "long_gop": synth.make_numbered_video(d / "long_gop.mp4", 30, FPS, gop=20, bframes=False),
        "rot": synth.make_numbered_video(d / "rot.mp4", 3, FPS, rotate=90, size=(96, 64), bframes=False),
    }


def collect(path, **kwargs):
    frames, times = [], []
    with sample_frames(path, **kwargs) as batches:
        for batch, ts in batches:
            frames.extend(batch)
            times.extend(ts.tolist())
    return frames, times


def blocks(image):
    """A 336 x 336 image as 21 x 21 block means: the picture, without the resize filter's edges."""
    return image.reshape(21, 16, 21, 16, 3).mean(axis=(1, 3))


def test_fast_decode_reports_the_frames_it_used(clips):
    exact, exact_times = collect(clips["bframes"], fps=1.0)
    fast, fast_times = collect(clips["bframes"], fps=1.0, decode="fast")
    assert len(fast) == len(exact) == 12
    numbers = [synth.read_frame_number(f) for f in fast]
    assert fast_times == pytest.approx([n / FPS for n in numbers])  # each time is the returned frame's own
    moved = np.asarray(exact_times) - np.asarray(fast_times)
    assert moved.min() >= 0 and moved.max() <= 4 / FPS  # never later than the exact frame, a B-frame run earlier


def test_fast_decode_takes_keyframes_when_sampling_is_sparser_than_them(clips):
    frames, times = collect(clips["long_gop"], fps=1 / 5, decode="fast")  # keyframes every 2 s, targets every 5 s
    assert [synth.read_frame_number(f) for f in frames] == [0, 40, 100, 140, 200, 240]
    assert times == pytest.approx([0, 4, 10, 14, 20, 24])  # the keyframe on screen at 0, 5, 10 ... s


def test_decoder_squash_is_the_encoders_pixels(clips):
    full, times = collect(clips["rot"], fps=2.0)
    squashed, squashed_times = collect(clips["rot"], fps=2.0, size=(336, 336))
    assert squashed_times == times and squashed[0].shape == (336, 336, 3)
    for a, b in zip(full, squashed):
        expected = F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].float(), size=(336, 336))
        assert np.array_equal(b, expected.to(torch.uint8)[0].permute(1, 2, 0).numpy())
    fast, fast_times = collect(clips["rot"], fps=2.0, size=(336, 336), decode="fast")
    assert fast_times == times  # no B-frames: fast decoding skips nothing here
    for a, b in zip(fast, squashed):  # one smoother libswscale pass: the same picture, upright, other pixels
        assert a.shape == (336, 336, 3) and np.abs(blocks(a) - blocks(b)).mean() < 12  # turned wrong: ~90


def test_bad_decode_options_are_refused_before_decoding(clips):
    with pytest.raises(ValueError, match="unknown decode mode 'quick'"):
        sample_frames(clips["rot"], decode="quick")
    with pytest.raises(ValueError, match="decode='fast' skips frames inside PyAV"):
        sample_frames(clips["rot"], decode="fast", backend="ffmpeg")
    with pytest.raises(ValueError, match="size must be"):
        sample_frames(clips["rot"], size=(0, 336))
