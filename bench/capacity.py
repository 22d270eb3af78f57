"""Hours of video on one device, measured: a full-width, shallow slice of LLaVA-Mini's LLM on the CPU.

Llama-3.1-8B dimensions (hidden 4096, MLP 14336, 32 heads, 8 KV heads) with 2 decoder layers and random bf16
weights (vocabulary cut to 32,768 so that the slice's embedding and lm_head are 0.5 GB instead of 2.1 GB; the
vocabulary does not touch the per-token costs measured here). Each configuration runs in a fresh process through
videomini's own answering path (`answer.generate_with_evidence`: build the prompt around the frame tokens,
chunked prefill into the KV cache, generate, attention evidence) with 1k, 4k and 16k frame tokens, and reports:

- measured peak memory above the weights (the kernel's peak RSS while answering, minus RSS before),
- the planner's prediction for the same slice (`planner.plan_memory` on the slice's config, CPU attention),
- the activations: that peak minus the KV cache and the frame tokens with their copy in the prompt, as measured
  in those tensors themselves, next to the planner's `chunk_activation_bytes`,
- per-token KV bytes measured in the cache itself,

then the frame budget of the full model on a 24 GB and an 80 GB GPU that follows from the planner with those
costs (transformers' sdpa attention, as CUDA runs it).

    python bench/capacity.py [--lengths 1024 4096 16384] [--quick] [--json out.json]

Numbers are from a shared 2-core machine under load: times are noisy, memory is not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

SLICE_LAYERS = 2
SLICE_VOCAB = 32768
QUESTION_TOKENS = 40  # a short prompt around the frames
MB = 10**6

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def slice_config(vocab: int = SLICE_VOCAB) -> dict:
    """Llama-3.1-8B's LLM keys with 2 layers and a smaller vocabulary, as a LLaVA-Mini config."""
    from videomini.loading import DEFAULT_MODEL_ID, KNOWN_CONFIGS

    config = dict(KNOWN_CONFIGS[DEFAULT_MODEL_ID])
    config.update(num_hidden_layers=SLICE_LAYERS, vocab_size=vocab, prefusion_layer_num=0,
                  bos_token_id=1, eos_token_id=[2])
    return config


def build_slice(config: dict, quantize: str | None):
    """A random LlavaMini with the slice's LLM in bf16 (a 1-layer, 32-wide CLIP stands in for the tower: the
    answering path never runs it)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from videomini.loading import llm_config_from
    from videomini.model import LlavaMini, LlavaMiniConfig

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=28, patch_size=14))
        model = LlavaMini(LlavaMiniConfig.from_dict(config), llm_config_from(config), tower).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    if quantize == "int8":  # what transformers' TorchAoConfig(Int8WeightOnlyConfig()) applies on load: every
        # linear but the output embedding (transformers' quantizers keep lm_head in the compute dtype)
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model.llm, Int8WeightOnlyConfig(),
                  filter_fn=lambda module, name: isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"))
    return model


class PeakRss:
    """Peak RSS of this process while the block runs: the kernel's own high-water mark (VmHWM, reset on entry
    through /proc/self/clear_refs), so that no transient is missed; elsewhere RSS sampled every 5 ms."""

    def __enter__(self):
        import psutil

        self.process = psutil.Process()
        self.before = self.peak = self.process.memory_info().rss
        self._exact = _reset_high_water_mark()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        if self._exact:
            self.peak = max(self.peak, _high_water_mark())


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _high_water_mark() > 0
    except OSError:
        return False


def _high_water_mark() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_one(frames: int, chunk: int, kv_cache: str | None, quantize: str | None) -> dict:
    """Child process: one configuration at one length through the answering path."""
    import torch

    from videomini.answer import Generator, attention_to_frames
    from videomini.generation import new_cache
    from videomini.model import image_slot
    from videomini.planner import tensor_bytes

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config = slice_config()
    model = build_slice(config, quantize)
    hidden = model.hidden_size
    input_ids = torch.tensor([[1] + [5] * (QUESTION_TOKENS // 2) + [-200] + [6] * (QUESTION_TOKENS // 2)])
    fused_text = torch.randn(input_ids.shape[1], hidden, dtype=torch.bfloat16) * 0.02
    weights = tensor_bytes(model.llm)

    class Tokenizer:  # the answering path decodes ids for streaming; the slice's vocabulary has no text
        eos_token_id = 2

        def decode(self, ids, **_):
            return ""

    if kv_cache:  # load the quantized cache's library (quanto: 22 MB of RSS, HQQ: 12 MB) before measuring
        warm = new_cache(model, kv_cache)
        tiny = torch.zeros(1, model.llm.config.num_key_value_heads, 200, model.llm.config.head_dim,
                           dtype=torch.bfloat16)
        warm.update(tiny, tiny, 0)
        warm.update(tiny, tiny, 0)
        del warm, tiny
    started = time.perf_counter()
    with PeakRss() as rss:  # from the frame tokens on (the planner counts them and their copy in the prompt)
        frame_tokens = torch.randn(frames, 1, hidden, dtype=torch.bfloat16) * 0.02
        inputs_embeds = model.build_inputs_embeds(input_ids, fused_text, frame_tokens)
        generator = Generator(model, Tokenizer())
        list(generator.stream(inputs_embeds, max_new_tokens=2, kv_cache=kv_cache, prefill_chunk_tokens=chunk))
        slot = image_slot(input_ids)
        attention_to_frames(model.llm, generator.result["layer_inputs"], generator.result["cache"],
                            inputs_embeds.shape[1], slice(slot, slot + frames), 1)
        cache_bytes = tensor_bytes(generator.result["cache"])
        positions = generator.result["cache"].get_seq_length()
        embedding_bytes = tensor_bytes(frame_tokens) + tensor_bytes(inputs_embeds)
    return {"frames": frames, "chunk": chunk, "kv_cache": kv_cache or "bf16", "weights": quantize or "bf16",
            "weights_bytes": weights, "peak_above_weights_bytes": rss.peak - rss.before,
            "activation_bytes": rss.peak - rss.before - cache_bytes - embedding_bytes,
            "kv_bytes_per_token_measured": round(cache_bytes / positions, 2),
            "seconds": round(time.perf_counter() - started, 1)}


def predicted(row: dict) -> dict:
    """The planner's figures for the slice in the same configuration."""
    from videomini.planner import plan_memory

    plan = plan_memory(slice_config(), "80GB", dtype=row["weights"] if row["weights"] != "bf16" else "bf16",
                       kv_dtype=row["kv_cache"], prompt_tokens=QUESTION_TOKENS + 1, answer_tokens=2,
                       prefill_chunk_tokens=row["chunk"], vision_config={}, device="cpu")
    context = plan.prompt_tokens_reserved + row["frames"] * plan.tokens_per_frame
    return {"predicted_bytes": plan.peak_bytes_for(row["frames"]) - plan.total_weights_bytes,
            "activation_predicted_bytes": plan.chunk_activation_bytes(context),
            "kv_bytes_per_token_planned": plan.kv_bytes_per_token}


def budgets(chunk: int) -> list[dict]:
    """The full model's frame budget on 24 and 80 GB for each weights / cache combination."""
    from videomini.loading import DEFAULT_MODEL_ID
    from videomini.planner import plan_memory

    rows = []
    for weights, kv in (("bf16", "bf16"), ("bf16", "int8"), ("int8", "bf16"), ("int8", "int8"), ("int8", "int4"),
                        ("nf4", "int4")):
        for memory in ("24GB", "80GB"):
            plan = plan_memory(DEFAULT_MODEL_ID, memory, dtype=weights, kv_dtype=kv,
                               prefill_chunk_tokens=chunk)
            rows.append({"memory": memory, "weights": weights, "kv_cache": kv, "max_frames": plan.max_frames,
                         "frames_fit_memory": plan.frames_fit_memory, "limited_by": plan.limited_by,
                         "hours_at_1fps": round(plan.max_frames / 3600, 2)})
    return rows


def child(frames: int, chunk: int, kv_cache: str, quantize: str) -> dict:
    # A fixed mmap threshold: glibc then maps every tensor above 64 KiB on its own and unmaps it when freed, so
    # RSS follows the live tensors (by default freed blocks under 32 MB stay in the heap, and the peak varied
    # by ±20 % between identical runs with how the generation thread's arena happened to fragment).
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, __file__, "--child", str(frames), str(chunk), kv_cache, quantize],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child {frames} {chunk} {kv_cache} {quantize} failed: "
                           f"{(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--chunk", type=int, default=1024, help="prefill chunk of the chunked configurations")
    parser.add_argument("--quick", action="store_true", help="chunked and unchunked bf16 only")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        frames, chunk, kv, weights = args.child
        print(json.dumps(run_one(int(frames), int(chunk), None if kv == "bf16" else kv,
                                 None if weights == "bf16" else weights)))
        return
    configs = [(args.chunk, "bf16", "bf16"), (1 << 30, "bf16", "bf16")]
    if not args.quick:
        configs += [(args.chunk, "int8", "bf16"), (args.chunk, "int4", "bf16"), (args.chunk, "bf16", "int8")]
    rows = []
    for chunk, kv, weights in configs:
        for frames in args.lengths:
            row = child(frames, chunk, kv, weights)
            row.update(predicted(row))
            row["predicted_over_measured"] = round(row["predicted_bytes"] / row["peak_above_weights_bytes"], 3)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    report(rows, budgets(args.chunk), args.json)


def report(rows: list[dict], budget_rows: list[dict], json_path: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Llama-3.1-8B slice ({SLICE_LAYERS} layers, bf16): peak memory above the weights while "
                        "answering, measured vs planned")
    for column in ("frames", "prefill", "KV cache", "weights", "measured MB", "planned MB", "planned/measured",
                   "activation MB", "planned", "KV B/token measured", "planned", "s"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(f"{r['frames']:,}", "whole" if r["chunk"] >= 1 << 30 else f"chunk {r['chunk']}", r["kv_cache"],
                      r["weights"], f"{r['peak_above_weights_bytes'] / MB:.0f}", f"{r['predicted_bytes'] / MB:.0f}",
                      f"{r['predicted_over_measured']:.2f}", f"{r['activation_bytes'] / MB:.0f}",
                      f"{r['activation_predicted_bytes'] / MB:.0f}", f"{r['kv_bytes_per_token_measured']:.0f}",
                      f"{r['kv_bytes_per_token_planned']:.0f}", f"{r['seconds']:.0f}")
    console.print(table)
    table = Table(title="LLaVA-Mini-8B frame budget from the planner (1 frame = 1 token)")
    for column in ("memory", "weights", "KV cache", "frames", "limited by", "hours at 1 fps"):
        table.add_column(column, justify="right")
    for r in budget_rows:
        table.add_row(r["memory"], r["weights"], r["kv_cache"], f"{r['max_frames']:,}", r["limited_by"],
                      f"{r['hours_at_1fps']:.1f}")
    console.print(table)
    if json_path:
        json_path.write_text(json.dumps({"slice": rows, "budgets": budget_rows}, indent=2))
        console.print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
