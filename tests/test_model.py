"""videomini.model against the official implementation's tensors (tests/data/golden), plus the properties the
pipeline relies on: batched == one-by-one, question-independent frame tokens, any configuration."""

from __future__ import annotations

import pytest
import torch

from videomini.generation import generate
from videomini.model import prefusion_layout
from videomini.prompting import build_prompt, encode_question

from conftest import assert_close, make_tiny_checkpoint

CASES = ["image", "image_q2", "video"]


def _frames(pixel_values: torch.Tensor) -> torch.Tensor:
    return pixel_values[0] if pixel_values.dim() == 6 else pixel_values  # (T, parts, 3, H, W)


@pytest.mark.parametrize("case", CASES)
def test_prompt_ids_match_reference(golden_model, golden_cases, case):
    _, tokenizer, _ = golden_model
    tensors, meta = golden_cases
    question = meta["cases"][case]["question"]
    assert build_prompt(tokenizer, question) == meta["cases"][case]["prompt"]
    assert torch.equal(encode_question(tokenizer, question), tensors[f"{case}.input_ids"])


@pytest.mark.parametrize("case", CASES)
def test_vision_path_matches_reference(golden_model, golden_cases, case):
    model = golden_model.model
    tensors, _ = golden_cases
    frames = _frames(tensors[f"{case}.pixel_values"])
    if f"{case}.clip_features" in tensors:
        features, _ = model.vision_features(frames)
        assert_close(features, tensors[f"{case}.clip_features"], 1e-5)
        compressed, attn = model.compressor(tensors[f"{case}.clip_features"][:, 0])
        assert_close(compressed, tensors[f"{case}.compressor_out"][:, 0], 1e-5)
        assert_close(attn, tensors[f"{case}.compressor_attn"][:, 0], 1e-6)
    encoding, fused = model.encode_frames(frames, tensors[f"{case}.input_ids"])
    assert_close(encoding.frame_tokens.reshape(1, -1, model.hidden_size), tensors[f"{case}.compressed_tokens"], 1e-5)
    assert_close(fused, tensors[f"{case}.fused_text_per_frame"], 1e-5)


@pytest.mark.parametrize("case", ["image", "video"])
def test_prefusion_layout_matches_reference(golden_model, golden_cases, case):
    model = golden_model.model
    tensors, _ = golden_cases
    ids = tensors[f"{case}.input_ids"][0]
    vision = tensors[f"{case}.prefusion_input_frame0"].shape[1] - ids.shape[0]
    keep = torch.cat([torch.ones(vision, dtype=torch.bool), ids > 0])
    allowed, position_ids = prefusion_layout(keep)
    assert torch.equal(allowed, tensors[f"{case}.prefusion_allowed_frame0"][0, 0])
    assert torch.equal(position_ids, tensors[f"{case}.prefusion_position_ids_frame0"])
    frames = _frames(tensors[f"{case}.pixel_values"])
    prefusion_vision, _ = model.compress(model.vision_features(frames[:1])[0])
    prefusion_input = torch.cat([prefusion_vision, model.embed_tokens(ids)[None]], dim=1)
    assert_close(prefusion_input, tensors[f"{case}.prefusion_input_frame0"], 1e-5)


@pytest.mark.parametrize("case", CASES)
def test_llm_input_and_logits_match_reference(golden_model, golden_cases, case):
    model = golden_model.model
    tensors, _ = golden_cases
    ids, pixel_values = tensors[f"{case}.input_ids"], tensors[f"{case}.pixel_values"]
    with torch.inference_mode():
        inputs_embeds = model.encode_inputs(ids, pixel_values)
        logits = model(input_ids=ids, pixel_values=pixel_values).logits
    assert_close(inputs_embeds, tensors[f"{case}.inputs_embeds"], 1e-5)
    assert_close(logits, tensors[f"{case}.logits"], 2e-5)
    if case == "video":
        _, fused = model.encode_frames(_frames(pixel_values), ids)
        assert_close(fused.float().mean(0, keepdim=True), tensors["video.fused_text_mean"], 1e-5)


@pytest.mark.parametrize("case", ["image", "video"])
def test_greedy_generation_matches_reference(golden_model, golden_cases, case):
    model = golden_model.model
    tensors, _ = golden_cases
    new_ids = generate(model, input_ids=tensors[f"{case}.input_ids"], pixel_values=tensors[f"{case}.pixel_values"],
                             max_new_tokens=8, do_sample=False)
    assert torch.equal(new_ids, tensors[f"{case}.generated_ids"])


def test_batched_frame_tokens_equal_one_by_one(golden_model, golden_cases):
    model = golden_model.model
    tensors, _ = golden_cases
    frames = _frames(tensors["video.pixel_values"])
    ids = tensors["video.input_ids"]
    batched, fused_batched = model.encode_frames(frames, ids)
    for i in range(frames.shape[0]):
        single, fused_single = model.encode_frames(frames[i: i + 1], ids)
        assert_close(batched.frame_tokens[i: i + 1], single.frame_tokens, 1e-5)
        assert_close(fused_batched[i: i + 1], fused_single, 1e-5)


def test_frame_token_does_not_depend_on_question(golden_model, golden_cases):
    model = golden_model.model
    tensors, _ = golden_cases
    frames = _frames(tensors["image.pixel_values"])
    with_q1, _ = model.encode_frames(frames, tensors["image.input_ids"])
    with_q2, _ = model.encode_frames(frames, tensors["image_q2.input_ids"])
    without_text, fused = model.encode_frames(frames)
    assert fused is None
    assert torch.equal(with_q1.frame_tokens, with_q2.frame_tokens)
    assert_close(without_text.frame_tokens, with_q1.frame_tokens, 1e-5)
    assert torch.equal(tensors["image.compressed_tokens"], tensors["image_q2.compressed_tokens"])


@pytest.mark.parametrize("compressor_size,prefusion_layers,ratio,projector", [
    (1, 4, 1, "mlp2x_gelu"), (2, 1, 1, "linear"), (1, 2, 2, "mlp2x_gelu"), (2, 2, 2, "mlp2x_gelu")])
def test_any_configuration_runs_and_stays_question_independent(tmp_path, golden_model, compressor_size,
                                                                prefusion_layers, ratio, projector):
    from videomini import load_model

    folder = make_tiny_checkpoint(tmp_path / "ckpt", compressor_size=compressor_size,
                                  prefusion_layer_num=prefusion_layers, resolution_ratio=ratio, projector=projector)
    model, tokenizer, _ = load_model(folder, device="cpu")
    assert len(model.prefusion_layers) == prefusion_layers
    parts = 1 if ratio == 1 else ratio * ratio + 1
    frames = torch.randn(3, parts, 3, 56, 56)
    ids = encode_question(tokenizer, "What is happening?")
    encoding, fused = model.encode_frames(frames, ids)
    tokens = compressor_size**2
    assert encoding.frame_tokens.shape == (3, tokens, 64)
    # vision prefix: (r*r crops + global) * 16 patches (high resolution) or 16, then the C*C compressed tokens
    assert encoding.prefusion_vision.shape[1] == (16 * parts if ratio > 1 else 16) + tokens
    assert fused.shape == (3, ids.shape[1], 64)
    alone, _ = model.encode_frames(frames[1:2])
    assert_close(alone.frame_tokens, encoding.frame_tokens[1:2], 1e-5)
    video = frames.unsqueeze(0)  # (1, T, parts, 3, H, W)
    logits = model(input_ids=ids, pixel_values=video).logits
    assert logits.shape == (1, ids.shape[1] - 1 + 3 * tokens, 408)
    new_ids = generate(model, input_ids=ids, pixel_values=video, max_new_tokens=4)
    assert new_ids.shape[0] == 1 and 1 <= new_ids.shape[1] <= 4


def test_high_resolution_tiles_crops_into_one_grid(tmp_path):
    """The 4 crops (row-major) are tiled into one 2x2 patch grid: crop 1's projected patches land in the top-right
    quadrant of the vision prefix, the global view follows, and the compressor sees the whole grid."""
    from videomini import load_model

    model, _, _ = load_model(make_tiny_checkpoint(tmp_path / "hr", resolution_ratio=2, compressor_size=2),
                             device="cpu")
    features = torch.randn(1, 5, 16, 1024)
    with torch.no_grad():
        vision, _ = model.compress(features)
        projected = model.mm_projector(features[0])  # (5, 16, H)
        grid = vision[0, :64].reshape(8, 8, -1)
        assert_close(grid[:4, 4:], projected[1].reshape(4, 4, -1), 1e-6)
        assert_close(grid[4:, :4], projected[2].reshape(4, 4, -1), 1e-6)
        assert_close(vision[0, 64:80], projected[4], 1e-6)
        swapped, _ = model.compress(features[:, [1, 0, 2, 3, 4]])
    assert vision.shape == (1, 4 * 16 + 16 + 4, 64)
    assert not torch.allclose(vision[:, -4:], swapped[:, -4:])  # 2x2 queries have distinct key positions




def test_building_leaves_the_callers_llm_config_as_given():
    """The model picks its own attention implementation on a copy: a config the caller reuses is not changed."""
    from transformers import CLIPVisionConfig

    from videomini.model import LlavaMiniConfig, build_model

    from conftest import tiny_llm_config

    llm_config = tiny_llm_config()
    before = llm_config.to_dict()
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                              image_size=28, patch_size=14)
    model = build_model(LlavaMiniConfig(mm_vision_tower="clip", compressor_size=1, prefusion_layer_num=1),
                        llm_config, vision)
    assert llm_config.to_dict() == before and getattr(llm_config, "_attn_implementation", None) != "videomini_sdpa"
    assert model.llm.config._attn_implementation == "videomini_sdpa"


def test_compressor_size_absent_from_config_json_is_the_references_default():
    from videomini.model import LlavaMiniConfig

    assert LlavaMiniConfig.from_dict({}).compressor_size == LlavaMiniConfig().compressor_size == 2
    assert LlavaMiniConfig.from_dict({"compressor_size": 1}).tokens_per_frame == 1
