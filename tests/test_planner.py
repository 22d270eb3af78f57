"""The memory planner (videomini.planner): how many frames fit, and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from videomini.generation import new_cache, prefill
from videomini.loading import KNOWN_CONFIGS
from videomini.planner import device_memory, parse_size, plan_memory

MODEL_8B = "ICTNLP/llava-mini-llama-3.1-8b"


# ---------------------------------------------------------------------------------------------------------
# Memory planner
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("24GB", 24 * 10**9), ("80GiB", 80 * 2**30), ("512MB", 512 * 10**6), ("16G", 16 * 2**30),
    ("1.5 GB", 1_500_000_000), ("1024", 1024), ("64kib", 64 * 1024),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "12XB", "-3GB", "1iB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_device_memory_cpu() -> None:
    assert device_memory("cpu") > 0


def test_plan_8b_in_bf16_fits_ten_thousand_frames_on_24gb() -> None:
    plan = plan_memory(MODEL_8B, "24GB")
    assert plan.kv_bytes_per_frame == 131072  # 2 × 32 layers × 8 kv heads × 128 × 2 bytes = 128 KiB
    assert plan.parameters["llm"] == 8_030_261_248  # Llama-3.1-8B
    assert plan.weights_bytes["llm"] == pytest.approx(16.06e9, rel=0.01)
    assert plan.weights_bytes["prefusion"] == pytest.approx(1.745e9, rel=0.01)  # 4 decoder layers
    assert plan.weights_bytes["vision"] == pytest.approx(0.61e9, rel=0.02)  # CLIP ViT-L/14-336
    assert plan.parameters["projector"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert plan.context_length == 131072
    assert plan.frames_fit_context == 131072 - plan.prompt_tokens_reserved
    assert plan.frames_fit_memory >= 10_000
    assert plan.max_frames == min(plan.frames_fit_memory, plan.frames_fit_context) >= 10_000
    assert plan.embedding_bytes_per_frame == 2 * 4096 * 2  # the frame token and its copy in the prompt, bf16
    fit = plan.frames_fit_memory  # the most frames whose peak (weights, KV, embeddings, one chunk) fits
    assert plan.peak_bytes_for(fit) + plan.runtime_reserve_bytes <= 24e9
    assert plan.peak_bytes_for(fit + 1) + plan.runtime_reserve_bytes > 24e9 and plan.limited_by == "memory"

    big = plan_memory(MODEL_8B, "80GB")
    assert big.frames_fit_memory > plan.frames_fit_memory
    assert big.max_frames == big.frames_fit_context and big.limited_by == "context"


def test_plan_dtypes() -> None:
    bf16 = plan_memory(MODEL_8B, "24GB", dtype="bf16")
    int8 = plan_memory(MODEL_8B, "24GB", dtype="int8")
    fp32 = plan_memory(MODEL_8B, "24GB", dtype="fp32")
    # int8: the decoder linears (6.98 B parameters) at 1 byte + a scale per 64; the rest stays bf16
    saved = bf16.weights_bytes["llm"] - int8.weights_bytes["llm"]
    assert saved == pytest.approx(6_979_321_856 * (2 - 1.0625), rel=1e-6)
    assert int8.weights_bytes["prefusion"] == bf16.weights_bytes["prefusion"]
    assert int8.kv_bytes_per_frame == bf16.kv_bytes_per_frame == 131072  # KV stays bf16
    assert int8.frames_fit_memory > bf16.frames_fit_memory
    assert fp32.kv_bytes_per_frame == 262144
    assert fp32.frames_fit_memory == 0 and fp32.max_frames == 0  # 37 GB of weights
    assert plan_memory(MODEL_8B, "24GB", dtype="int8", kv_dtype="int8").kv_bytes_per_frame == 65536 + 4096
    with pytest.raises(ValueError, match="unknown dtype"):
        plan_memory(MODEL_8B, "24GB", dtype="fp8")


def test_plan_hundred_thousand_frames_with_int8_weights_and_int4_cache() -> None:
    """The frame budgets the README states: >= 10,000 frames in 24 GB in bf16, >= 100,000 with int8 weights and an
    int4 KV cache; with nf4 weights the context (131,072 positions) binds first."""
    assert plan_memory(MODEL_8B, "24GB").max_frames >= 10_000
    int4 = plan_memory(MODEL_8B, "24GB", dtype="int8", kv_dtype="int4")
    assert int4.max_frames >= 100_000
    int8 = plan_memory(MODEL_8B, "24GB", dtype="int8", kv_dtype="int8")  # HQQ's float32 re-quantization costs
    assert int8.max_frames < int4.max_frames and int8.limited_by == "memory"
    assert plan_memory(MODEL_8B, "24GB", dtype="nf4", kv_dtype="int4").limited_by == "context"


def test_plan_chunk_activation_is_flat_in_the_context_on_cpu() -> None:
    """With videomini's attention (CPU) a prefill chunk's activations are the same at 16k and 128k positions of
    context: the chunk's MLP moment, 4,096 positions × (4 × 4,096 + 3 × 14,336) bf16 values; the keys are read at
    the KV heads and the mask is built in blocks within attention.MASK_BLOCK_BYTES. transformers' sdpa (CUDA)
    expands one layer's keys and values to all heads and masks the chunk against the whole context: it grows."""
    cpu = plan_memory(MODEL_8B, "24GB", device="cpu")
    mlp = 4096 * (4 * 4096 + 3 * 14336) * 2
    assert [cpu.chunk_activation_bytes(n) for n in (4096, 16_384, 65_536, 131_072)] == [mlp] * 4
    cuda = plan_memory(MODEL_8B, "24GB", device="cuda")
    expanded = 2 * 32 * 128 * 2  # one layer's keys and values at all 32 heads, per context position
    grown = cuda.chunk_activation_bytes(131_072) - cuda.chunk_activation_bytes(65_536)
    assert grown >= 65_536 * (expanded + 4096)  # + the boolean mask of 4,096 rows
    assert cpu.max_frames >= cuda.max_frames >= 10_000
    # the 8B-wide slice of bench/capacity.py, chunk 1,024: equal at 1k, 4k and 16k frames
    slice_config = {**KNOWN_CONFIGS[MODEL_8B], "num_hidden_layers": 2, "prefusion_layer_num": 0}
    bench = plan_memory(slice_config, "80GB", prompt_tokens=41, answer_tokens=2, prefill_chunk_tokens=1024,
                        vision_config={}, device="cpu")
    assert len({bench.chunk_activation_bytes(43 + frames) for frames in (1024, 4096, 16_384)}) == 1


@pytest.mark.parametrize("kv_cache", [None, "int8", "int4"])
def test_plan_kv_bytes_per_token_match_a_measured_cache(golden_dir: Path, kv_cache) -> None:
    """The planner's KV bytes per token for each cache type equal what transformers' cache holds after a prefill
    of the tiny model, within 10 %."""
    from videomini import load_model
    from videomini.planner import plan_for_model, tensor_bytes

    model, _, _ = load_model(golden_dir / "llavamini_tiny", device="cpu", dtype="bf16")
    embeds = torch.randn(1, 2049, model.hidden_size, dtype=torch.bfloat16) * 0.02
    cache = prefill(model, embeds, new_cache(model, kv_cache), chunk_tokens=512)
    measured = tensor_bytes(cache) / cache.get_seq_length()
    planned = plan_for_model(model, "1GB", kv_cache=kv_cache).kv_bytes_per_token
    assert planned == pytest.approx(measured, rel=0.10)


def test_plan_for_a_loaded_model_counts_its_weights_as_stored(golden_dir: Path) -> None:
    from videomini import load_model
    from videomini.planner import plan_for_model, tensor_bytes

    model, _, _ = load_model(golden_dir / "llavamini_tiny", device="cpu", dtype="fp32")
    plan = plan_for_model(model, "1GB")
    assert plan.weights_bytes["llm"] == tensor_bytes(model.llm) == 4 * plan.parameters["llm"]
    quantized, _, _ = load_model(golden_dir / "llavamini_tiny", device="cpu", dtype="fp32", quantize="int8")
    int8 = plan_for_model(quantized, "1GB").weights_bytes["llm"]
    assert int8 == tensor_bytes(quantized.llm) < 0.6 * plan.weights_bytes["llm"]  # fp32 embeddings stay


def test_plan_context_counts_compressor_tokens_and_reserve() -> None:
    config = {**KNOWN_CONFIGS[MODEL_8B], "compressor_size": 2}
    plan = plan_memory(config, "80GB", prompt_tokens=100, answer_tokens=28)
    assert plan.tokens_per_frame == 4
    assert plan.kv_bytes_per_frame == 4 * 131072
    assert plan.frames_fit_context == (131072 - 128) // 4


def _safetensors_parameters(file: Path) -> dict[str, int]:
    counts = {"llm": 0, "prefusion": 0, "vision": 0, "compressor": 0, "projector": 0}
    with safe_open(str(file), "pt") as f:
        for key in f.keys():
            n = int(np.prod(f.get_slice(key).get_shape()))
            if key.startswith("model.vision_tower."):
                continue  # a copy the loader ignores: the tower comes from mm_vision_tower
            part = ("prefusion" if "prefusion" in key else "compressor" if "compressor" in key
                    else "projector" if "mm_projector" in key else "vision" if "vision_model" in key else "llm")
            counts[part] += n
    return counts


def test_plan_tiny_checkpoint_counts_match_its_weights(golden_dir: Path, tmp_path: Path) -> None:
    folder = golden_dir / "llavamini_tiny"
    plan = plan_memory(folder, "4GB", dtype="fp32")
    expected = _safetensors_parameters(folder / "model.safetensors")
    expected["vision"] = _safetensors_parameters(golden_dir / "clip_tiny" / "model.safetensors")["vision"]
    assert plan.parameters == expected
    assert plan.weights_bytes == {part: 4 * n for part, n in expected.items()}
    config = json.loads((folder / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert plan.kv_bytes_per_token == 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 4
    assert plan.context_length == config["max_position_embeddings"]  # not tokenizer_model_max_length
    assert plan.max_frames == plan.frames_fit_context
    assert plan.notes and "tokenizer_model_max_length" in plan.notes[0]
    # config.json given directly; a relative mm_vision_tower still resolves against its folder.
    assert plan_memory(folder / "config.json", "1GB", dtype="fp32").parameters == expected


def test_plan_vision_tower_fallback_and_errors(golden_dir: Path, tmp_path: Path) -> None:
    config = json.loads((golden_dir / "llavamini_tiny" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "mm_vision_tower": "../nowhere"}))
    plan = plan_memory(tmp_path, "1GB")
    assert plan.parameters["vision"] == plan_memory(MODEL_8B, "24GB").parameters["vision"]  # CLIP-L assumed
    assert any("not found" in note for note in plan.notes)

    with pytest.raises(ValueError, match="not-a/model"):
        plan_memory("not-a/model", "24GB")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{nope")
    with pytest.raises(ValueError, match="invalid JSON"):
        plan_memory(tmp_path / "bad", "24GB")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                                 if k != "prefusion_layer_num"}))
    with pytest.raises(ValueError, match="not a LLaVA-Mini config"):
        plan_memory(tmp_path / "llama", "24GB")


def test_plan_config_without_compressor_size_is_planned_as_built(golden_dir: Path, tmp_path: Path) -> None:
    """A config that omits compressor_size is built with the reference's default (2: four tokens per frame); the
    planner must count the model the loader builds, not a default of its own."""
    from videomini.loading import llm_config_from
    from videomini.model import LlavaMiniConfig, build_model

    config = {k: v for k, v in KNOWN_CONFIGS[MODEL_8B].items() if k != "compressor_size"}
    plan = plan_memory(config, "80GB")
    assert plan.tokens_per_frame == LlavaMiniConfig.from_dict(config).tokens_per_frame == 4
    assert plan.kv_bytes_per_frame == 4 * 131072

    tiny = json.loads((golden_dir / "llavamini_tiny" / "config.json").read_text())
    tiny.pop("compressor_size")
    built = build_model(LlavaMiniConfig.from_dict(tiny), llm_config_from(tiny))
    planned = plan_memory(tiny, "1GB", dtype="fp32")
    assert planned.parameters["compressor"] == sum(p.numel() for p in built.compressor.parameters())
    assert planned.tokens_per_frame == built.config.tokens_per_frame == 4
