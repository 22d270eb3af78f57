"""Video probing and streaming frame sampling (PyAV by default; decord and the ffmpeg CLI as alternatives).

The official LLaVA-Mini code decodes every sampled frame of a video into RAM at once; here frames stream out in
fixed-size batches, so memory is bounded by the batch whatever the video's length.

One module per job:
    errors          the `VideoError` family: one-line `<file>: <reason>` messages
    source          opening a container (files and URLs, with demuxer options and a timeout), the stream's clock
    info            `probe`: duration, fps, size, rotation, codecs, without decoding
    timeline        the sampling rule (the frame on screen at start + k/fps) and `OnScreen`, which applies it
                    frame by frame, for files and live streams alike
    pyav_backend    the default decoder: decode through, seek across long gaps, report damage
    decord_backend  decord (optional extra)
    ffmpeg_backend  the ffmpeg CLI (optional extra: ffmpeg-python)
    prefetch        `FrameBatches`: batches decoded ahead in a thread, in a bounded queue
    sampling        `sample_frames`, `read_frames_at`: the calls the rest of videomini uses
    reference       the official evaluation's sampling (segment centres), for bit-exact comparison
"""

from videomini.video.errors import BackendUnavailable, DecodeError, NotAVideo, NoVideoStream, VideoError, VideoNotFound
from videomini.video.info import VideoInfo, probe
from videomini.video.prefetch import FrameBatches
from videomini.video.reference import (
    reference_n_frames,
    reference_timestamps,
    reference_video_frames,
    sample_uniform,
    uniform_frame_indices,
)
from videomini.video.sampling import (
    BACKENDS,
    DECODE_AHEAD_BYTES,
    DECODE_MODES,
    SAMPLINGS,
    decode_ahead,
    read_frames_at,
    sample_frames,
)
from videomini.video.source import IMAGE_EXTENSIONS, open_container

__all__ = [
    "VideoError", "VideoNotFound", "NotAVideo", "NoVideoStream", "DecodeError", "BackendUnavailable",
    "VideoInfo", "FrameBatches", "probe", "sample_frames", "decode_ahead", "read_frames_at", "IMAGE_EXTENSIONS",
    "uniform_frame_indices",
    "sample_uniform", "reference_video_frames", "reference_timestamps", "reference_n_frames", "open_container",
    "BACKENDS", "SAMPLINGS", "DECODE_MODES", "DECODE_AHEAD_BYTES",
]
