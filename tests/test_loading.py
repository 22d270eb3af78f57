"""Loading official-format checkpoints: round trip, sharding, vision-tower resolution, and one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from videomini.generation import generate
from videomini.loading import CheckpointError, load_model, save_pretrained

from conftest import make_tiny_checkpoint


def test_golden_checkpoint_loads_in_official_format(golden_model, golden_dir):
    model, tokenizer, processor = golden_model
    assert model.dtype == torch.float32  # bf16 weights upcast on CPU
    assert model.config.prefusion_layer_num == 2 and model.config.compressor_size == 1
    assert model.vision_tower_dir == (golden_dir / "clip_tiny").resolve()  # relative to the checkpoint folder
    assert type(processor).__name__ == "CLIPImageProcessorPil"
    assert tokenizer.bos_token_id == 400


def test_tiny_model_saves_sharded_and_loads_back_identically(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "a", max_shard_size=300_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    assert "model.compressor.query" in index["weight_map"] and "lm_head.weight" in index["weight_map"]
    model, tokenizer, _ = load_model(folder, device="cpu", dtype="fp32")
    again = save_pretrained(model, tmp_path / "b", tokenizer=tokenizer, dtype=None)
    reloaded, _, _ = load_model(again, device="cpu", dtype="fp32")
    first, second = model.state_dict(), reloaded.state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    ids = torch.tensor([[400, 5, 6, -200, 7, 8]])
    frames = torch.randn(1, 1, 3, 56, 56)
    assert torch.equal(model(input_ids=ids, pixel_values=frames).logits,
                       reloaded(input_ids=ids, pixel_values=frames).logits)


def test_bf16_keeps_dtype(golden_dir):
    model, _, _ = load_model(golden_dir / "llavamini_tiny", device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.compressor.query.dtype == torch.bfloat16


def test_vision_tower_override(tmp_path, golden_dir):
    folder = tmp_path / "ckpt"
    shutil.copytree(golden_dir / "llavamini_tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    config["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"  # as in the released checkpoint
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="clip-vit-large-patch14-336"):
        load_model(folder, device="cpu")  # not cached, hub offline: says so
    model, _, _ = load_model(folder, device="cpu", vision_tower=golden_dir / "clip_tiny")
    assert model.vision_tower_dir == golden_dir / "clip_tiny"


def test_vision_tower_copy_in_checkpoint_is_ignored(tmp_path, golden_dir, golden_model):
    # The released checkpoint also stores the tower under model.vision_tower.vision_tower.*; our copy of the golden
    # one drops those keys (tests/data/README.md). Put a corrupted copy back: the tower still comes from
    # mm_vision_tower and every weight equals the golden load.
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "with_tower_copy"
    shutil.copytree(golden_dir / "llavamini_tiny", folder)
    state = load_file(str(folder / "model.safetensors"))
    tower = load_file(str(golden_dir / "clip_tiny" / "model.safetensors"))
    state.update({f"model.vision_tower.vision_tower.{k}": torch.zeros_like(v) for k, v in tower.items()})
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model, _, _ = load_model(folder, device="cpu", dtype="fp32", vision_tower=golden_dir / "clip_tiny")
    want = golden_model.model.state_dict()
    got = model.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def _one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message
    return message


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "nope", device="cpu")
    assert "nope" in _one_line(e.value) and "not found" in str(e.value)


def test_wrong_model_type(tmp_path, golden_dir):
    folder = tmp_path / "llama"
    shutil.copytree(golden_dir / "llavamini_tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as e:
        load_model(folder, device="cpu")
    assert "'llama'" in _one_line(e.value) and "llava_mini_llama" in str(e.value)


def test_missing_keys_are_named(tmp_path, golden_dir):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(golden_dir / "llavamini_tiny", folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["model.compressor.query"], state["model.prefusion_layers.1.mlp.up_proj.weight"]
    (folder / "model.safetensors").unlink()
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_model(folder, device="cpu", vision_tower=golden_dir / "clip_tiny")
    message = _one_line(e.value)
    assert "compressor.query" in message and "prefusion_layers.1.mlp.up_proj.weight" in message


def test_pickle_weights_are_refused(tmp_path, golden_dir):
    folder = tmp_path / "pickled"
    shutil.copytree(golden_dir / "llavamini_tiny", folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="safetensors only"):
        load_model(folder, device="cpu", vision_tower=golden_dir / "clip_tiny")


def test_uncached_hub_id_says_how_to_fix():
    with pytest.raises(CheckpointError) as e:
        load_model("ICTNLP/llava-mini-llama-3.1-8b", device="cpu")
    message = _one_line(e.value)
    assert "ICTNLP/llava-mini-llama-3.1-8b" in message and "not in the Hugging Face cache" in message
    assert "--model PATH" in message


def test_int8_weights_keep_the_reference_greedy_ids(golden_dir, golden_cases):
    """--quantize int8 on the CPU (torchao weight-only through transformers' TorchAoConfig): the LLM's linears
    are int8, the rest is untouched, and greedy decoding still gives the reference's ids on the golden cases (the
    logits move by at most the measured 0.06)."""
    exact, _, _ = load_model(golden_dir / "llavamini_tiny", device="cpu", dtype="fp32")
    model, _, _ = load_model(golden_dir / "llavamini_tiny", device="cpu", dtype="fp32", quantize="int8")
    assert type(model.llm.model.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    assert torch.equal(model.compressor.query, exact.compressor.query) and model.dtype == torch.float32
    tensors, _ = golden_cases
    for case in ("image", "video"):
        ids, pixel_values = tensors[f"{case}.input_ids"], tensors[f"{case}.pixel_values"]
        with torch.inference_mode():
            embeds = model.encode_inputs(ids, pixel_values)
        out = generate(model, inputs_embeds=embeds, max_new_tokens=8, return_dict_in_generate=True, output_logits=True)
        ref = generate(exact, inputs_embeds=embeds, max_new_tokens=8, return_dict_in_generate=True, output_logits=True)
        assert torch.equal(out.sequences, tensors[f"{case}.generated_ids"])
        assert max((a - b).abs().max().item() for a, b in zip(out.logits, ref.logits)) <= 0.1


def test_nf4_on_the_cpu_is_refused_in_one_line(golden_dir):
    """A wrong option is an error, not a reason to fall back to the signals: one line, exit 1."""
    from typer.testing import CliRunner

    from videomini.cli.main import app

    with pytest.raises(ValueError, match="nf4 needs a CUDA device"):
        load_model(golden_dir / "llavamini_tiny", device="cpu", quantize="nf4")
    result = CliRunner().invoke(app, ["ask", str(golden_dir / "video_10f_2fps.mp4"), "Q?", "--model",
                                      str(golden_dir / "llavamini_tiny"), "--device", "cpu", "--quantize", "nf4"])
    assert result.exit_code == 1 and result.stderr.strip() == ("error: --quantize nf4 needs a CUDA device "
                                                               "(bitsandbytes); on the CPU use --quantize int8")
