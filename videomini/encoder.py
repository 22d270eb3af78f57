"""Batched frames -> frame tokens (+ CLIP embeddings, + the running fused-text sum) on the device.

One vision-tower pass per batch yields both the patch features LLaVA-Mini compresses and, when the tower has
a projection (a full CLIP checkpoint), the CLIP image embedding used for retrieval. Decoding runs ahead in the
decoder's prefetch thread, so it overlaps with the compute here.

Preprocessing follows the reference's video path: each frame is resized to the tower's crop size with
`F.interpolate` (nearest, no aspect preservation), then rescaled and normalised with the CLIP mean/std —
done in torch on the device (the processor's resize and crop are the identity at that size). High-resolution
checkpoints (`resolution_ratio` 2) cut each frame into r*r crops + the whole and run the CLIP processor on each,
as the reference does. Still images go through the CLIP processor (shortest-edge resize + centre crop).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from videomini.config import BATCH_SIZE
from videomini.video.pyav_backend import decoder_threads
from videomini.video.reference import REFERENCE_FRAME_SIZE
from videomini.video.timeline import nearest_indices

REFERENCE_VIDEO_SIZE = REFERENCE_FRAME_SIZE[0]  # the reference squashes video frames to 336 x 336 before CLIP


@dataclass
class EncodedBatch:
    """One batch of frames, encoded. Tensors on the CPU; `fused_text_sum` is float32 (L, H) over this batch."""

    frame_tokens: torch.Tensor  # (B, C*C, H), model dtype
    timestamps_s: np.ndarray  # (B,) float64
    clip_embeddings: torch.Tensor | None = None  # (B, D) float32, L2-normalised
    fused_text_sum: torch.Tensor | None = None  # (L, H) float32
    frames: np.ndarray | None = None  # the decoded frames, when asked to keep them (thumbnails, tests)


def split_image(image: Image.Image, ratio: int) -> list[Image.Image]:
    """The reference's high-resolution split: r*r row-major crops, then the whole image."""
    if ratio == 1:
        return [image]
    width, height = image.size
    w, h = width // ratio, height // ratio
    crops = [image.crop((j * w, i * h, (j + 1) * w, (i + 1) * h)) for i in range(ratio) for j in range(ratio)]
    return crops + [image]


class FrameEncoder:
    """Frames (uint8 RGB) -> frame tokens for one LLaVA-Mini model; batch size bounds the memory."""

    def __init__(self, model: Any, image_processor: Any, batch_size: int = BATCH_SIZE):
        self.model = model
        self.image_processor = image_processor
        self.batch_size = batch_size
        self.device = model.device
        crop = image_processor.crop_size
        self.size = (crop["height"], crop["width"])
        self.ratio = model.config.resolution_ratio
        # the processor's resize + crop are the identity on squashed frames only when the tower is 336 px
        self.torch_path = (self.ratio == 1 and self.size == (REFERENCE_VIDEO_SIZE, REFERENCE_VIDEO_SIZE)
                           and image_processor.size.get("shortest_edge", REFERENCE_VIDEO_SIZE) == REFERENCE_VIDEO_SIZE)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(image_processor.image_mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = torch.tensor(image_processor.image_std, dtype=torch.float32, device=self.device).view(shape)
        self.rescale = float(image_processor.rescale_factor)

    # -- preprocessing ----------------------------------------------------------------------------------------
    frame_size = REFERENCE_FRAME_SIZE  # (width, height) decoders may deliver frames at

    def squash(self, frames: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, 336, 336) uint8 on the device: nearest resize, as the reference's video path.

        Frames already at 336 x 336 (`sample_frames(size=encoder.frame_size)` squashes them in the decoder's
        thread) pass through; others are resized here by a uint8 gather of the rows and columns torch's nearest
        interpolate reads (the same pixels, without a float copy of every full-size frame)."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        pixels = pixels.permute(0, 3, 1, 2)
        height, width = pixels.shape[-2:]
        if (height, width) != (REFERENCE_VIDEO_SIZE, REFERENCE_VIDEO_SIZE):
            rows = torch.from_numpy(nearest_indices(height, REFERENCE_VIDEO_SIZE)).to(pixels.device)
            cols = torch.from_numpy(nearest_indices(width, REFERENCE_VIDEO_SIZE)).to(pixels.device)
            pixels = pixels.index_select(2, rows).index_select(3, cols)
        return pixels

    def preprocess_frames(self, frames: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 video frames -> pixel_values (B, parts, 3, S, S) in float32 on the device."""
        squashed = self.squash(frames)
        if self.torch_path:  # rescale + normalise on the device; resize and crop are the identity here
            pixels = (squashed.float() * self.rescale - self.mean) / self.std
            return pixels.unsqueeze(1)
        images = [Image.fromarray(f) for f in squashed.permute(0, 2, 3, 1).cpu().numpy()]
        return self.preprocess_images(images)

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """A still image -> pixel_values (1, parts, 3, S, S) through the CLIP processor (as the reference)."""
        return self.preprocess_images([image])

    def preprocess_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Images -> pixel_values (N, parts, 3, S, S): every part of every image through ONE processor call (the
        same per-image operations as a call per image, without its fixed cost: 0.8 against 1.1 ms a frame)."""
        parts = [part for image in images for part in split_image(image.convert("RGB"), self.ratio)]
        if self.model.config.image_aspect_ratio == "pad":
            parts = [_expand_to_square(p, tuple(int(x * 255) for x in self.image_processor.image_mean)) for p in parts]
        pixel_values = self.image_processor(parts, return_tensors="pt")["pixel_values"]
        return pixel_values.unflatten(0, (len(images), -1)).to(self.device)

    # -- encoding ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_pixels(self, pixel_values: torch.Tensor, timestamps_s: np.ndarray,
                      input_ids: torch.Tensor | None = None) -> EncodedBatch:
        encoding, fused = self.model.encode_frames(pixel_values.to(self.model.dtype), input_ids)
        embeddings = encoding.clip_embeddings
        # copies, not views: on the CPU a view of the frame tokens would keep the batch's whole pre-fusion hidden
        # states alive in the frame memory (an 8B model: ~5 MB per frame instead of 8 KB)
        return EncodedBatch(
            frame_tokens=encoding.frame_tokens.to("cpu", copy=True),
            timestamps_s=np.asarray(timestamps_s, dtype=np.float64),
            clip_embeddings=None if embeddings is None else embeddings.float().cpu(),
            fused_text_sum=None if fused is None else fused.float().sum(0).cpu(),
        )

    def encode(self, frames: np.ndarray, timestamps_s: np.ndarray,
               input_ids: torch.Tensor | None = None) -> EncodedBatch:
        """One batch of decoded frames -> EncodedBatch (text fused per frame and summed when input_ids given)."""
        return self.encode_pixels(self.preprocess_frames(frames), timestamps_s, input_ids)

    def encode_stream(self, batches: Iterable[tuple[np.ndarray, np.ndarray]], input_ids: torch.Tensor | None = None,
                      keep_frames: bool = False) -> Iterator[EncodedBatch]:
        """Encode decoder batches as they arrive, re-batched to `batch_size`; nothing is kept after it is used."""
        for frames, timestamps_s in _rebatch(batches, self.batch_size):
            encoded = self.encode(frames, timestamps_s, input_ids)
            if keep_frames:
                encoded.frames = frames
            yield encoded


@contextmanager
def threads_beside_decoder(device: torch.device) -> Iterator[int]:
    """torch's CPU threads while the decoder's thread runs beside the encoder: the cores less one (at least
    one), then back to what they were. On 2 cores two OpenMP threads that must meet at every op's barrier stall
    whenever the decoder (or any other process) takes one core: measured on the 6-minute video, encoding took
    4-6 s with one thread against 16-26 s with two under other jobs' load, and no longer quiet. CUDA: unchanged."""
    before = torch.get_num_threads()
    wanted = before if device.type == "cuda" else max(1, min(before, decoder_threads() - 1))
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != before:
            torch.set_num_threads(before)


def _rebatch(batches: Iterable[tuple[np.ndarray, np.ndarray]], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    frames_buf: list[np.ndarray] = []
    times_buf: list[np.ndarray] = []
    count = 0
    for frames, times in batches:
        frames_buf.append(frames)
        times_buf.append(np.asarray(times, dtype=np.float64))
        count += len(frames)
        while count >= size:
            all_frames, all_times = _concat(frames_buf), np.concatenate(times_buf)
            yield all_frames[:size], all_times[:size]
            frames_buf, times_buf = [all_frames[size:]], [all_times[size:]]
            count -= size
    if count:
        yield _concat(frames_buf), np.concatenate(times_buf)


def _concat(frames: list[np.ndarray]) -> np.ndarray:
    """Concatenate frame batches; frames of different sizes (a stream that changes resolution) are squashed later,
    so they are padded into a list-compatible array only when shapes agree."""
    if len(frames) == 1:
        return frames[0]
    shapes = {f.shape[1:] for f in frames if len(f)}
    if len(shapes) <= 1:
        return np.concatenate([f for f in frames if len(f)] or frames[:1])
    target = max(shapes)
    return np.concatenate([_resize_batch(f, target) for f in frames if len(f)])


def _resize_batch(frames: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if frames.shape[1:] == shape:
        return frames
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return F.interpolate(tensor, size=shape[:2]).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _expand_to_square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result
