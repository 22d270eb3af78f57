"""videomini.video: exact frames at exact times for every backend, bounded streaming, every bad file handled.

Test videos are generated here (tests/synth.py) with each frame's number drawn in its pixels, so every test
asserts which frame came back at which time.
"""

from __future__ import annotations

import json
import re
import threading
import warnings

import numpy as np
import pytest

try:  # `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests import synth
except ImportError:
    import synth
from videomini import video as V
from videomini.video import (
    BackendUnavailable,
    NotAVideo,
    NoVideoStream,
    VideoError,
    VideoNotFound,
    probe,
    read_frames_at,
    reference_video_frames,
    sample_frames,
    sample_uniform,
    source,
    uniform_frame_indices,
)

FPS = 10


def collect(path, **kwargs):
    frames, times = [], []
    with sample_frames(path, **kwargs) as batches:
        for batch, ts in batches:
            assert batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[-1] == 3
            assert ts.dtype == np.float64 and len(ts) == len(batch)
            frames.extend(batch)
            times.extend(ts.tolist())
    return frames, times


def numbers(frames, rotate_back=0):
    return [synth.read_frame_number(np.rot90(f, k=rotate_back // 90)) for f in frames]


def on_screen(pts, targets):
    """The rule, stated independently: index of the last pts <= t, for each target that has one."""
    out = []
    for t in targets:
        idx = [i for i, p in enumerate(pts) if p <= t + 1e-9]
        if idx:
            out.append(idx[-1])
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    m = {
        "cfr": synth.make_numbered_video(d / "cfr.mp4", 6.5, FPS, audio=True),
        "long": synth.make_numbered_video(d / "long.mp4", 90, FPS, gop=20, bframes=False),
        "rot": synth.make_numbered_video(d / "rot.mp4", 3, FPS, rotate=90),
        "short": synth.make_numbered_video(d / "short.mp4", 0.4, FPS),
        "single": synth.make_numbered_video(d / "single.mp4", timestamps_s=[0.0], fps=FPS),
        "audio": synth.make_audio_only(d / "audio_only.mp4"),
        "fast": synth.make_numbered_video(d / "fast.mp4", 6, FPS, faststart=True, size=(320, 192), crf=10),
    }
    m["vfr_pts"] = [0.0, 0.1, 0.15, 0.9, 1.0, 2.5, 2.6, 3.7, 5.2]
    m["vfr"] = synth.make_numbered_video(d / "vfr.mp4", timestamps_s=m["vfr_pts"], fps=FPS)
    m["trunc_fast"] = synth.truncate(m["fast"], d / "trunc_fast.mp4", 0.6)
    m["trunc_moov_end"] = synth.truncate(m["cfr"], d / "trunc_end.mp4", 0.6)
    m["lie"] = synth.lie_about_duration(m["cfr"], d / "lie.mp4", 10)
    m["empty"] = d / "empty.mp4"
    m["empty"].write_bytes(b"")
    m["text"] = d / "notes.mp4"
    m["text"].write_text("this is not a video\n" * 50)
    m["unicode"] = synth.make_numbered_video(d / "vidéo à tester 東京.mp4", 2, FPS)
    return m


# ------------------------------------------------------------------------------------------ the rule


@pytest.mark.parametrize("backend", V.BACKENDS)
def test_one_fps_returns_frame_on_screen_with_its_own_time(media, backend):
    frames, times = collect(media["cfr"], fps=1.0, backend=backend, batch_size=3)
    assert numbers(frames) == [0, 10, 20, 30, 40, 50, 60]
    assert times == pytest.approx([0, 1, 2, 3, 4, 5, 6])


@pytest.mark.parametrize("backend", V.BACKENDS)
def test_fractional_fps_start_end_and_max_frames(media, backend):
    pts = [i / FPS for i in range(65)]
    frames, times = collect(media["cfr"], fps=0.7, start_s=0.55, end_s=5.0, backend=backend)
    targets = [0.55 + k / 0.7 for k in range(10) if 0.55 + k / 0.7 < 5.0]
    expected = on_screen(pts, targets)
    assert numbers(frames) == expected
    assert times == pytest.approx([pts[i] for i in expected])
    frames, _ = collect(media["cfr"], fps=2.0, max_frames=3, backend=backend)
    assert numbers(frames) == [0, 5, 10]


@pytest.mark.parametrize("backend", V.BACKENDS)
def test_variable_frame_rate(media, backend):
    pts = media["vfr_pts"]
    frames, times = collect(media["vfr"], fps=1.0, backend=backend)
    expected = on_screen(pts, [0, 1, 2, 3, 4, 5])  # a frame held over two targets comes back twice
    assert expected == [0, 4, 4, 6, 7, 7]
    assert numbers(frames) == expected
    assert times == pytest.approx([pts[i] for i in expected])


def test_sparse_sampling_seeks_and_matches_straight_decoding(media, monkeypatch):
    seeks = []
    real_open = source.open_container

    class Counting:  # counts container.seek calls, forwards everything else
        def __init__(self, container):
            self._c = container

        def seek(self, *args, **kwargs):
            seeks.append(args)
            return self._c.seek(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._c, name)

    monkeypatch.setattr(source, "open_container", lambda path, *a, **k: Counting(real_open(path, *a, **k)))
    probe(media["long"])
    probe_seeks = len(seeks)
    seeks.clear()
    frames, times = collect(media["long"], fps=1 / 15, start_s=30.2)
    assert numbers(frames) == [302, 452, 602, 752]
    assert times == pytest.approx([30.2, 45.2, 60.2, 75.2])
    assert len(seeks) - probe_seeks >= 4  # one seek per 15 s gap (keyframes every 2 s)
    seeks.clear()
    frames, _ = collect(media["long"], fps=1.0, end_s=10)
    assert numbers(frames) == [10 * k for k in range(10)]
    assert len(seeks) == probe_seeks  # dense: straight through


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_rotation_metadata_is_applied(media, backend):
    info = probe(media["rot"])
    assert (info.rotation, info.width, info.height) == (90, 64, 96)
    frames, times = collect(media["rot"], fps=1.0, backend=backend)
    assert frames[0].shape == (96, 64, 3)  # upright: stored 96x64 turned 90 degrees clockwise
    assert numbers(frames, rotate_back=90) == [0, 10, 20]


def test_decord_refuses_rotated_video_clearly(media):
    with pytest.raises(BackendUnavailable, match="rotat"):
        collect(media["rot"], backend="decord")


@pytest.mark.parametrize("backend", V.BACKENDS)
def test_read_frames_at_returns_callers_order(media, backend):
    frames, times = read_frames_at(media["long"], [61.05, 3.0, 80.0, 3.0, 0.0], backend=backend)
    assert numbers(frames) == [610, 30, 800, 30, 0]
    assert times.tolist() == pytest.approx([61.0, 3.0, 80.0, 3.0, 0.0])


def test_read_frames_at_outside_the_video_raises(media):
    with pytest.raises(ValueError, match="no frame on screen"):
        read_frames_at(media["cfr"], [100.0])


# -------------------------------------------------------------------------------- streaming machinery


def test_close_early_stops_thread_and_releases(media):
    batches = sample_frames(media["long"], fps=10.0, batch_size=4, prefetch=2)
    first, _ = next(batches)
    assert len(first) == 4
    assert any(t.name == "videomini-decode" for t in threading.enumerate())
    batches.close()
    assert not any(t.name == "videomini-decode" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(StopIteration):
        next(batches)


def test_prefetch_off_gives_the_same_batches(media):
    a = [(b.copy(), t) for b, t in sample_frames(media["cfr"], fps=2, batch_size=4, prefetch=0)]
    b = [(b.copy(), t) for b, t in sample_frames(media["cfr"], fps=2, batch_size=4, prefetch=3)]
    assert [len(x[0]) for x in a] == [4, 4, 4, 1]
    for (fa, ta), (fb, tb) in zip(a, b):
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(ta, tb)


def test_decode_ahead_decodes_before_anyone_asks_and_gives_the_same_frames(media):
    """`decode_ahead` (what `ask` starts before its model loads) decodes in its thread at once, into a bounded
    queue: a video that fits the bound is decoded completely before the first batch is asked for, and the frames
    are those `sample_frames` squashes to the tower's 336 x 336."""
    ahead = V.decode_ahead(media["cfr"], fps=2, batch_size=4, ahead_bytes=8 * 4 * 336 * 336 * 3)
    assert ahead.started_at is not None and ahead.made_for == (str(media["cfr"]), 2.0, "fps", "exact")
    ahead._thread.join(timeout=60)  # 13 frames fit a bound of 8 batches of 4: the decoder finishes on its own
    assert not ahead._thread.is_alive() and ahead.first_frame_at is not None and ahead.first_batch_at is None
    got = list(ahead)
    assert ahead.started_at < ahead.first_frame_at < ahead.first_batch_at
    expected = list(sample_frames(media["cfr"], fps=2, batch_size=4, size=(336, 336)))
    assert [len(f) for f, _ in got] == [len(f) for f, _ in expected] == [4, 4, 4, 1]
    for (fa, ta), (fb, tb) in zip(got, expected):
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(ta, tb)


def test_decode_ahead_holds_at_most_its_byte_bound(media):
    """The queue bound is bytes of 336 x 336 RGB frames (at least two batches), whatever the video's length."""
    frame_bytes = 336 * 336 * 3
    with V.decode_ahead(media["long"], fps=2, batch_size=4, ahead_bytes=10 * 4 * frame_bytes) as ahead:
        assert ahead.prefetch == 10
    with V.decode_ahead(media["long"], fps=2, batch_size=4, ahead_bytes=0) as ahead:
        assert ahead.prefetch == 2
        assert len(next(ahead)[0]) == 4
    with V.decode_ahead(media["long"], fps=1) as ahead:  # the default: 12 MiB = 2 batches of 16 frames
        assert ahead.prefetch == V.DECODE_AHEAD_BYTES // (16 * frame_bytes) == 2


def test_decode_ahead_names_a_bad_file_at_once(media, tmp_path):
    with pytest.raises(VideoNotFound, match="missing.mp4"):
        V.decode_ahead(tmp_path / "missing.mp4")
    with pytest.raises(V.NotAVideo):
        V.decode_ahead(media["text"])


def test_max_side_scales_4k_early(tmp_path):
    path = synth.make_numbered_video(tmp_path / "4k.mp4", 0.3, FPS, size=(3840, 2160), bframes=False)
    info = probe(path)
    assert (info.width, info.height) == (3840, 2160)
    for backend in V.BACKENDS:
        frames, times = collect(path, fps=1.0, max_side=480, backend=backend)
        assert frames[0].shape == (270, 480, 3), backend
        assert numbers(frames) == [0]


# ----------------------------------------------------------------------------------------- bad input


def _one_line_naming(err: VideoError, path) -> None:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg and len(msg) > len(str(path)) + 5


def test_missing_path(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoNotFound) as e:
        probe(path)
    _one_line_naming(e.value, path)
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(VideoNotFound):
        sample_frames(path)


@pytest.mark.parametrize("key, error, reason", [
    ("empty", NotAVideo, "empty"), ("text", NotAVideo, "not a"), ("audio", NoVideoStream, "no video stream"),
    ("trunc_moov_end", NotAVideo, "truncated"),
])
def test_unreadable_files_raise_one_line_errors(media, key, error, reason):
    for call in (probe, sample_frames, lambda p: read_frames_at(p, [0.0]), lambda p: sample_uniform(p, 2)):
        with pytest.raises(error, match=reason) as e:
            call(media[key])
        _one_line_naming(e.value, media[key])


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_truncated_file_yields_frames_that_exist_and_warns(media, backend):
    with pytest.warns(RuntimeWarning, match=r"ends early: decoded up to .* of 6\.00 s") as record:
        frames, times = collect(media["trunc_fast"], fps=2.0, backend=backend)
    assert str(media["trunc_fast"]) in str(record[0].message)
    assert 1 <= len(frames) < 12
    assert numbers(frames) == [round(t * FPS) for t in times]
    assert times == pytest.approx([k / 2 for k in range(len(frames))])


def test_damaged_middle_is_reported_as_damage_not_an_early_end(tmp_path):
    """Random bytes over the packets of 4-5 s of an H.264 file: decoding goes on to the end, and the one-line
    warning says where the data is damaged (it used to say "file ends early: decoded up to 10.00 s of 10.00 s")."""
    clip = synth.make_numbered_video(tmp_path / "clip.mp4", 10, FPS, faststart=True)
    path = synth.damage(clip, tmp_path / "damaged.mp4", 4.0, 5.0)
    with pytest.warns(RuntimeWarning, match="damaged video data") as record:
        frames, times = collect(path, fps=1.0)
    [message] = [str(w.message) for w in record]
    assert message.startswith(f"{path}: damaged video data between ") and "\n" not in message
    assert "ends early" not in message and "could not be decoded" in message
    first_s, last_s = (float(x) for x in re.findall(r"between ([\d.]+) s and ([\d.]+) s", message)[0])
    assert 3.5 <= first_s <= last_s <= 6.0
    assert times[-1] == pytest.approx(9.0) and numbers(frames[:4]) == [0, 10, 20, 30]


def test_truncated_file_with_decord_raises_clearly(media):
    with pytest.raises(V.DecodeError, match="truncated") as e:
        collect(media["trunc_fast"], backend="decord")
    _one_line_naming(e.value, media["trunc_fast"])


def test_header_lying_about_duration(media):
    info = probe(media["lie"])
    assert info.duration_s == pytest.approx(6.5, abs=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames, times = collect(media["lie"], fps=1.0)
    assert numbers(frames) == [0, 10, 20, 30, 40, 50, 60]


@pytest.mark.parametrize("backend", V.BACKENDS)
def test_shorter_than_one_second_and_single_frame(media, backend):
    frames, times = collect(media["short"], fps=1.0, backend=backend)
    assert numbers(frames) == [0] and times == [0.0]
    frames, times = collect(media["single"], fps=1.0, backend=backend)
    assert numbers(frames) == [0] and times == [0.0]
    frames, _ = collect(media["short"], fps=10.0, backend=backend)
    assert numbers(frames) == [0, 1, 2, 3]


def test_unicode_and_spaces_in_path(media):
    info = probe(media["unicode"])
    assert info.frame_count == 20 and info.path == str(media["unicode"])
    for backend in V.BACKENDS:
        frames, _ = collect(media["unicode"], fps=1.0, backend=backend)
        assert numbers(frames) == [0, 10], backend


def test_probe_fields(media):
    info = probe(media["cfr"])
    assert info.duration_s == pytest.approx(6.5)
    assert info.fps == pytest.approx(10.0)
    assert (info.frame_count, info.width, info.height, info.rotation) == (65, 96, 64, 0)
    assert (info.codec, info.has_audio) == ("h264", True)
    assert "mp4" in info.container
    d = json.loads(json.dumps(info.to_dict()))
    assert set(d) == {"path", "duration_s", "fps", "frame_count", "width", "height", "rotation", "codec",
                      "has_audio", "container"}


def test_unknown_backend_and_bad_fps(media):
    with pytest.raises(ValueError, match="backend"):
        sample_frames(media["cfr"], backend="opencv")
    with pytest.raises(ValueError, match="fps"):
        sample_frames(media["cfr"], fps=0)


# ------------------------------------------------------------------------------ reference compatibility


def test_uniform_frame_indices_match_reference_numbers():
    assert uniform_frame_indices(10, 5) == [1, 3, 4, 6, 8]
    assert uniform_frame_indices(1, 1) == [0]
    assert uniform_frame_indices(300, 3) == [50, 149, 249]
    with pytest.raises(ValueError):
        uniform_frame_indices(10, 0)


def test_reference_video_frames_bit_exact_with_golden(golden_dir):
    from safetensors.numpy import load_file

    meta = json.loads((golden_dir / "cases_meta.json").read_text())["cases"]["video"]
    source = load_file(str(golden_dir / "cases.safetensors"))["video.source_frames_uint8"]
    path = golden_dir / meta["video_file"]
    frames, indices = reference_video_frames(path, fps=1.0)
    assert indices.tolist() == meta["frame_indices"] == [1, 3, 4, 6, 8]
    np.testing.assert_array_equal(frames, source[indices])
    # Our own decoders give the same pixels: streaming 2 fps (every frame) and uniform sampling.
    for backend in V.BACKENDS:
        all_frames, times = collect(path, fps=2.0, backend=backend)
        np.testing.assert_array_equal(np.stack(all_frames), source, err_msg=backend)
        assert times == pytest.approx([i / 2 for i in range(10)])
    uniform, _ = sample_uniform(path, 5)
    np.testing.assert_array_equal(uniform, source[[1, 3, 4, 6, 8]])


@pytest.mark.parametrize("backend", V.BACKENDS)
def test_reference_sampling_streams_segment_centres(tmp_path, backend):
    # The official rule on a 30 fps video at 1 fps: N = 180 // 30 = 6 segments, the centre frame of each.
    path = synth.make_numbered_video(tmp_path / "v30.mp4", 6, 30.0, size=(96, 64))
    assert V.reference_n_frames(180, 30.0) == 6
    indices = uniform_frame_indices(180, 6)
    assert indices == [15, 45, 75, 104, 134, 164]
    batches = list(sample_frames(path, fps=1.0, sampling="reference", batch_size=4, backend=backend))
    assert [len(t) for _, t in batches] == [4, 2]  # streamed in batches, not read whole
    frames = np.concatenate([f for f, _ in batches])
    times = np.concatenate([t for _, t in batches])
    assert numbers(frames) == indices
    assert times.tolist() == pytest.approx([i / 30 for i in indices], abs=1e-5)
    assert times[:3].tolist() == pytest.approx([0.5, 1.5, 2.5], abs=1e-5)
    # 2 fps: twice the segments; --max-frames caps N, still segment centres over the whole video
    assert numbers(collect(path, fps=2.0, sampling="reference", backend=backend)[0]) == uniform_frame_indices(180, 12)
    capped = collect(path, fps=1.0, sampling="reference", max_frames=3, backend=backend)[0]
    assert numbers(capped) == uniform_frame_indices(180, 3) == [30, 89, 149]


def test_reference_sampling_matches_golden_pixels(golden_dir):
    from safetensors.numpy import load_file

    source = load_file(str(golden_dir / "cases.safetensors"))["video.source_frames_uint8"]
    path = golden_dir / "video_10f_2fps.mp4"
    for backend in V.BACKENDS:
        frames, times = collect(path, fps=1.0, sampling="reference", backend=backend)
        np.testing.assert_array_equal(np.stack(frames), source[[1, 3, 4, 6, 8]], err_msg=backend)
        assert times == pytest.approx([0.5, 1.5, 2.0, 3.0, 4.0])


def test_reference_sampling_refuses_a_window(media):
    with pytest.raises(ValueError, match="whole video"):
        sample_frames(media["cfr"], sampling="reference", start_s=1.0)
    with pytest.raises(ValueError, match="unknown sampling"):
        sample_frames(media["cfr"], sampling="middle")


def test_sample_uniform_on_numbered_video(media):
    frames, times = sample_uniform(media["cfr"], 4)
    assert numbers(frames) == uniform_frame_indices(65, 4)
    assert times.tolist() == pytest.approx([i / FPS for i in uniform_frame_indices(65, 4)])


# --------------------------------------------------------------------------------------- real clips


def test_real_clips_all_backends_agree(videos_dir):
    clips = sorted(videos_dir.glob("*.mp4"))
    assert clips, f"no clips in {videos_dir}"
    for clip in clips:
        info = probe(clip)
        assert info.duration_s > 0 and info.width > 0 and info.fps > 0
        ref_frames, ref_times = collect(clip, fps=1.0, max_side=160)
        assert len(ref_frames) == int(np.ceil(info.duration_s - 1e-6)), clip.name
        for backend in ("decord", "ffmpeg"):
            frames, times = collect(clip, fps=1.0, max_side=160, backend=backend)
            assert times == pytest.approx(ref_times, abs=1e-3), (clip.name, backend)
            diff = np.abs(np.stack(frames).astype(int) - np.stack(ref_frames).astype(int)).mean()
            assert diff < 6, (clip.name, backend, diff)  # same frames; scalers/colour paths differ slightly
