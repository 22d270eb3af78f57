"""The CUDA paths no CPU machine exercises: the golden ids on CUDA (fp32, and bf16 within its precision), ask
end to end through transformers' sdpa against the CPU, the planner against `torch.cuda.max_memory_allocated` on
a full-width slice of Llama-3.1-8B, batched against one-by-one encoding.

Marked `cuda`: deselected (not skipped) where no CUDA device is present (tests/conftest.py). Run on a GPU machine
with `scripts/gpu_check.sh`, which also collects the figures each test records into one JSON summary
($VIDEOMINI_CUDA_SUMMARY).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[1]
SUMMARY: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def summary():
    """Each test's figures, written as one JSON object when the module ends (where the check script asks)."""
    yield SUMMARY
    target = os.environ.get("VIDEOMINI_CUDA_SUMMARY")
    if target:
        SUMMARY["device"] = {"name": torch.cuda.get_device_name(0), "torch": torch.__version__,
                             "cuda": torch.version.cuda}
        Path(target).write_text(json.dumps(SUMMARY, indent=2))


@pytest.fixture(scope="module")
def cuda_models(golden_dir):
    from videomini import load_model

    folder = golden_dir / "llavamini_tiny"
    return {dtype: load_model(folder, device="cuda", dtype=dtype) for dtype in ("fp32", "bf16")}


def _generate(model, tensors, case: str, max_new_tokens: int = 8) -> torch.Tensor:
    ids = tensors[f"{case}.input_ids"].to("cuda")
    pixels = tensors[f"{case}.pixel_values"].to("cuda", model.dtype)
    return model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=max_new_tokens, do_sample=False).cpu()


@pytest.mark.parametrize("case", ["image", "video"])
def test_golden_ids_on_cuda_fp32(cuda_models, golden_cases, case):
    tensors, _ = golden_cases
    ids = _generate(cuda_models["fp32"].model, tensors, case)
    SUMMARY[f"golden_fp32_{case}"] = {"ids": ids.tolist(), "golden": tensors[f"{case}.generated_ids"].tolist()}
    assert torch.equal(ids, tensors[f"{case}.generated_ids"])


@pytest.mark.parametrize("case", ["image", "video"])
def test_golden_logits_on_cuda_bf16(cuda_models, golden_cases, case):
    """bf16 keeps 8 bits of mantissa: the logits within 5% of their range of the reference's, the ids recorded
    (a tiny random model's near-ties may flip; the first token must not)."""
    tensors, _ = golden_cases
    model = cuda_models["bf16"].model
    with torch.inference_mode():
        logits = model(input_ids=tensors[f"{case}.input_ids"].to("cuda"),
                       pixel_values=tensors[f"{case}.pixel_values"].to("cuda", torch.bfloat16)).logits.float().cpu()
    golden = tensors[f"{case}.logits"].float()
    error = (logits - golden).abs().max().item() / (golden.max() - golden.min()).item()
    ids = _generate(model, tensors, case)
    same = int((ids == tensors[f"{case}.generated_ids"]).sum())
    SUMMARY[f"golden_bf16_{case}"] = {"logits_error_of_range": round(error, 5), "ids_equal": same,
                                      "ids": ids.shape[-1]}
    assert error <= 0.05
    assert ids[0, 0] == tensors[f"{case}.generated_ids"][0, 0]


def test_ask_on_cuda_through_sdpa_matches_the_cpu(cuda_models, golden_model, golden_dir):
    """The whole ask (decode, squash, encode with pinned copies, chunked prefill through transformers' sdpa,
    attention evidence) on CUDA in fp32 gives the CPU's answer and evidence times."""
    from videomini.ask import VideoMini

    video = golden_dir / "video_10f_2fps.mp4"
    on_cuda = VideoMini(*cuda_models["fp32"], batch_size=4).ask(video, "What happens?", max_new_tokens=8)
    on_cpu = VideoMini(*golden_model, batch_size=4).ask(video, "What happens?", max_new_tokens=8)
    SUMMARY["ask_sdpa"] = {"cuda": on_cuda.text, "cpu": on_cpu.text, "timings_s": on_cuda.timings_s}
    assert on_cuda.text == on_cpu.text
    assert [e.time_s for e in on_cuda.evidence] == [e.time_s for e in on_cpu.evidence]


@pytest.mark.parametrize("dtype, atol", [("fp32", 1e-4), ("bf16", 3e-2)])
def test_batched_encoding_equals_one_by_one_on_cuda(cuda_models, golden_cases, dtype, atol):
    tensors, _ = golden_cases
    model = cuda_models[dtype].model
    pixels = tensors["video.pixel_values"]
    frames = (pixels[0] if pixels.dim() == 6 else pixels).to("cuda", model.dtype)
    ids = tensors["video.input_ids"].to("cuda")
    with torch.inference_mode():
        batched, fused = model.encode_frames(frames, ids)
        diffs = []
        for i in range(frames.shape[0]):
            single, fused_single = model.encode_frames(frames[i: i + 1], ids)
            diffs.append((batched.frame_tokens[i: i + 1] - single.frame_tokens).abs().max().item())
            diffs.append((fused[i: i + 1] - fused_single).abs().max().item())
    SUMMARY[f"batched_vs_single_{dtype}"] = {"max_abs_diff": max(diffs)}
    assert max(diffs) <= atol


@pytest.mark.parametrize("frames", [4096, 16384])
def test_planner_bounds_cuda_peak_on_a_full_width_slice(frames):
    """Llama-3.1-8B's width (2 layers, bf16) answering over `frames` frame tokens: the planner's peak above the
    weights is not below what CUDA's allocator measured, nor more than 1.5x it."""
    sys.path.insert(0, str(REPO / "bench"))
    import capacity

    from videomini.answer import Generator
    from videomini.planner import plan_memory

    config = capacity.slice_config()
    model = capacity.build_slice(config, None).to("cuda")
    input_ids = torch.tensor([[1] + [5] * 20 + [-200] + [6] * 20], device="cuda")
    hidden = model.hidden_size

    class Tokenizer:  # the slice's vocabulary has no text
        eos_token_id = 2

        def decode(self, ids, **_):
            return ""

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fused_text = torch.randn(input_ids.shape[1], hidden, dtype=torch.bfloat16, device="cuda") * 0.02
    frame_tokens = torch.randn(frames, 1, hidden, dtype=torch.bfloat16, device="cuda") * 0.02
    inputs_embeds = model.build_inputs_embeds(input_ids, fused_text, frame_tokens)
    list(Generator(model, Tokenizer()).stream(inputs_embeds, max_new_tokens=2))
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - before
    plan = plan_memory(config, "80GB", dtype="bf16", kv_dtype="bf16", prompt_tokens=input_ids.shape[1],
                       answer_tokens=2, vision_config={}, device="cuda")
    predicted = plan.peak_bytes_for(frames) - plan.total_weights_bytes
    SUMMARY[f"planner_{frames}_frames"] = {"measured_mb": round(measured / 1e6, 1),
                                           "predicted_mb": round(predicted / 1e6, 1)}
    del model, inputs_embeds, frame_tokens
    torch.cuda.empty_cache()
    assert measured <= predicted <= 1.5 * measured
