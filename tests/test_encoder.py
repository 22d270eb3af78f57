"""The frame encoder (videomini.encoder): streamed batches fused per frame give the reference's video tensors, and
the frame tokens it keeps own their memory."""

from __future__ import annotations

import numpy as np
import torch

from videomini import encoder as encoder_module
from videomini.encoder import FrameEncoder, threads_beside_decoder
from videomini.video import reference_video_frames


def test_one_pass_fusion_equals_reference_video_computation(golden_model, golden_cases, golden_dir):
    """Streaming in batches, fusing per frame and keeping a running float32 sum gives the reference's tensors."""
    model, tokenizer, processor = golden_model
    tensors, _ = golden_cases
    frames, indices = reference_video_frames(golden_dir / "video_10f_2fps.mp4", fps=1.0)
    assert list(indices) == [1, 3, 4, 6, 8]
    assert np.array_equal(frames, tensors["video.source_frames_uint8"].numpy()[indices])
    encoder = FrameEncoder(model, processor, batch_size=2)
    assert torch.equal(encoder.preprocess_frames(frames), tensors["video.pixel_values"][0])
    ids = tensors["video.input_ids"]
    batches = [(frames[i: i + 3], np.arange(i, min(i + 3, 5), dtype=np.float64)) for i in range(0, 5, 3)]
    encoded = list(encoder.encode_stream(batches, ids))
    assert [len(e.timestamps_s) for e in encoded] == [2, 2, 1]  # re-batched to the encoder's batch size
    fused = sum(e.fused_text_sum for e in encoded) / 5
    assert (fused - tensors["video.fused_text_mean"][0]).abs().max() <= 1e-5
    tokens = torch.cat([e.frame_tokens for e in encoded])
    embeds = model.build_inputs_embeds(ids, fused, tokens)
    assert (embeds - tensors["video.inputs_embeds"]).abs().max() <= 1e-5


def test_encoded_frame_tokens_own_their_memory(golden_model, golden_cases):
    """The frame memory must hold one token per frame, not a view that keeps the batch's pre-fusion hidden
    states (patches + prompt, per frame) alive: that grew `ask`'s memory with the video's length."""
    model, _, processor = golden_model
    tensors, _ = golden_cases
    encoder = FrameEncoder(model, processor, batch_size=5)
    encoded = encoder.encode_pixels(tensors["video.pixel_values"][0], np.arange(5.0), tensors["video.input_ids"])
    tokens = encoded.frame_tokens
    assert tokens.untyped_storage().nbytes() == tokens.numel() * tokens.element_size()


def test_encoding_leaves_a_core_to_the_decoder_and_restores_threads(monkeypatch):
    """While the decoder's thread runs beside it, the CPU encoder uses the cores less one (never 0), then torch
    has its threads back for the answer; CUDA encodes as it did."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(encoder_module, "decoder_threads", lambda: 2)
        with threads_beside_decoder(torch.device("cpu")) as threads:
            assert threads == torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(encoder_module, "decoder_threads", lambda: 1)
        with threads_beside_decoder(torch.device("cpu")) as threads:
            assert threads == torch.get_num_threads() == 1
        with threads_beside_decoder(torch.device("cuda")) as threads:
            assert threads == torch.get_num_threads() == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
