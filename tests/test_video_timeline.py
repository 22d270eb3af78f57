"""videomini.video.timeline: the sampling rule frame by frame (what live sources reuse) and the nearest resize that
must give torch's pixels bit for bit (the golden and reference ids depend on it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videomini.video.timeline import OnScreen, fps_targets, resize_nearest


@pytest.mark.parametrize("height, width", [(360, 640), (48, 64), (1080, 1920), (336, 336), (200, 999), (7, 5)])
def test_nearest_resize_gives_torchs_pixels(height, width):
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=(336, 336))
    assert np.array_equal(resize_nearest(image, (336, 336)), expected.to(torch.uint8)[0].permute(1, 2, 0).numpy())


def test_on_screen_returns_the_frame_on_screen_at_each_target_once_converted():
    converted = []

    def convert(frame):
        converted.append(frame)
        return np.full((1, 1, 3), frame, np.uint8)

    selector = OnScreen(fps_targets(0.0, 1.0, end_s=6.0), convert)
    samples = []
    # frames at 0.5, 0.9 (on screen at targets 1, 2 and 3), 3.2 and 3.4 (never sampled), 4.0 (exactly target 4)
    for pts, frame in [(0.5, 1), (0.9, 2), (3.2, 3), (3.4, 4), (4.0, 5)]:
        samples += selector.offer(pts, frame, 0.1)
    samples += selector.finish()
    # target 0 is before the first frame: skipped; 5 falls after frame 5 left the screen (4.0 + 0.1)
    assert [(int(image[0, 0, 0]), t) for image, t in samples] == [(2, 0.9), (2, 0.9), (2, 0.9), (5, 4.0)]
    assert converted == [2, 5]  # frame 2 is converted once for three targets; unsampled frames never
    selector = OnScreen(fps_targets(0.0, 1.0, end_s=6.0), convert)
    selector.offer(4.0, 5, 0.1)
    selector.extend_to(6.0)  # the fast mode skipped frames after it: it stays on screen to the data's end
    assert [t for _, t in selector.finish()] == [4.0, 4.0]
    assert selector.done


def test_on_screen_ignores_frames_from_before_a_point_passed():
    selector = OnScreen(iter([0.0, 1.0]), lambda frame: np.full((1, 1, 3), frame == "a", np.uint8))
    assert selector.offer(0.0, "a", 0.1) == []
    assert selector.offer(0.0, "again after a seek", 0.1) == []
    samples = selector.offer(1.5, "b", 0.1)
    assert [(int(image[0, 0, 0]), t) for image, t in samples] == [(1, 0.0), (1, 0.0)]  # "a", at targets 0 and 1
