"""FLOPs per image: LLaVA-Mini (1 vision token) vs the 576-token path of LLaVA-1.5, at full size.

Counted with torch.utils.flop_counter on the meta device: the real modules (CLIP ViT-L/14-336, a Llama-3.1-8B-
shaped LLM, 4 pre-fusion layers) run on shapes only — no weights, no memory, no GPU. Both paths prefill the
same 64-token question. The headline counts logits for every position, as the reference's forward (and its
transformers-4.43 prefill) computes them; the last-position-only figure (transformers 5 generation) is shown too.

    LLaVA-Mini: CLIP(577) + compressor + projector(577) + pre-fusion 4 layers over (576 + 1 + 64) + LLM(64)
    LLaVA-1.5:  CLIP(577) + projector(576)                           + LLM(576 + 63)

Also: KV-cache bytes per frame token and how many frames fit in 24 GB and 80 GB (bf16 weights + KV), from the
same planner `videomini plan` and `ask` use.

    python bench/flops.py [--question-tokens 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig

from videomini.loading import DEFAULT_MODEL_ID, KNOWN_CONFIGS, KNOWN_VISION_CONFIGS
from videomini.model import LlavaMini, LlavaMiniConfig
from videomini.planner import plan_memory


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def build(config: dict, vision: dict) -> LlavaMini:
    with torch.device("meta"):
        llm_config = LlamaConfig(**{k: v for k, v in config.items() if k not in ("model_type", "architectures")})
        llm_config._attn_implementation = "sdpa"
        tower = CLIPVisionModel(CLIPVisionConfig(**vision))
        tower.config._attn_implementation = "sdpa"
        return LlavaMini(LlavaMiniConfig.from_dict(config), llm_config, tower).eval().requires_grad_(False)


def measure(question_tokens: int) -> dict:
    config = KNOWN_CONFIGS[DEFAULT_MODEL_ID]
    vision = {k: v for k, v in KNOWN_VISION_CONFIGS[config["mm_vision_tower"]].items() if not k.startswith("_")}
    model = build(config, vision)
    hidden, side = config["hidden_size"], vision["image_size"]
    num_patches = (side // vision["patch_size"]) ** 2
    meta = dict(device="meta")
    pixels = torch.empty(1, 1, 3, side, side, **meta)
    ids = torch.randint(1, 1000, (1, question_tokens), **meta)

    def mini_vision():
        features, _ = model.vision_features(pixels)
        vision_prefix, _ = model.compress(features)
        model.prefuse(vision_prefix, ids)

    def llm(tokens: int, logits_for: str = "all"):
        # LlamaModel.forward's mask helpers read tensor values (meta tensors have none), so run its modules
        # directly: the same decoder layers with SDPA's causal path, the final norm and lm_head on every
        # position (what the reference's forward and its transformers-4.43 prefill compute) or the last only.
        inner = model.llm.model
        hidden_states = torch.empty(1, tokens, hidden, **meta)
        position_ids = torch.arange(tokens, **meta).unsqueeze(0)
        position_embeddings = inner.rotary_emb(hidden_states, position_ids)
        for layer in inner.layers:
            hidden_states = layer(hidden_states, position_ids=position_ids, position_embeddings=position_embeddings)
        model.llm.lm_head(inner.norm(hidden_states if logits_for == "all" else hidden_states[:, -1:]))

    def full_vision():
        features, _ = model.vision_features(pixels)
        model.mm_projector(features[:, 0])

    with torch.no_grad():
        parts = {
            "clip": count(lambda: model.vision_features(pixels)),
            "mini_vision_and_prefusion": count(mini_vision),
            "mini_llm": count(lambda: llm(question_tokens - 1 + model.config.tokens_per_frame)),
            "mini_llm_last_logits": count(lambda: llm(question_tokens - 1 + model.config.tokens_per_frame, "last")),
            "full_vision": count(full_vision),
            "full_llm": count(lambda: llm(question_tokens - 1 + num_patches)),
            "full_llm_last_logits": count(lambda: llm(question_tokens - 1 + num_patches, "last")),
        }
    mini = parts["mini_vision_and_prefusion"] + parts["mini_llm"]
    full = parts["full_vision"] + parts["full_llm"]
    mini_last = parts["mini_vision_and_prefusion"] + parts["mini_llm_last_logits"]
    full_last = parts["full_vision"] + parts["full_llm_last_logits"]
    plans = {gb: plan_memory(DEFAULT_MODEL_ID, device_memory_bytes=int(gb * 1e9), dtype="bf16") for gb in (24, 80)}
    return {
        "model": DEFAULT_MODEL_ID,
        "question_tokens": question_tokens,
        "vision_tokens_per_image": {"llava_mini": model.config.tokens_per_frame, "llava_1.5": num_patches},
        "flops": parts | {"llava_mini_total": mini, "llava_1.5_total": full,
                          "llava_mini_total_last_logits": mini_last, "llava_1.5_total_last_logits": full_last},
        "ratio": mini / full,
        "ratio_last_logits": mini_last / full_last,
        "kv_bytes_per_frame": plans[24].kv_bytes_per_frame,
        "frames_fit": {f"{gb}GB": {"memory": p.frames_fit_memory, "context": p.frames_fit_context,
                                   "max_frames": p.max_frames} for gb, p in plans.items()},
        "weights_bytes": plans[24].weights_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args(argv)
    result = measure(args.question_tokens)
    table = Table(title=f"FLOPs per image, {result['model']}, {args.question_tokens}-token question")
    table.add_column("path")
    table.add_column("vision tokens", justify="right")
    table.add_column("TFLOPs", justify="right")
    flops = result["flops"]
    table.add_row("LLaVA-Mini (compressor + 4 pre-fusion layers)", "1", f"{flops['llava_mini_total'] / 1e12:.2f}")
    table.add_row("  of which CLIP ViT-L/14-336", "", f"{flops['clip'] / 1e12:.2f}")
    table.add_row("  of which LLM prefill", "", f"{flops['mini_llm'] / 1e12:.2f}")
    table.add_row("576-token path (LLaVA-1.5)", "576", f"{flops['llava_1.5_total'] / 1e12:.2f}")
    table.add_row("ratio", "", f"{result['ratio']:.3f}")
    table.add_row("ratio, logits for the last position only", "",
                  f"{flops['llava_mini_total_last_logits'] / 1e12:.2f} / "
                  f"{flops['llava_1.5_total_last_logits'] / 1e12:.2f} = {result['ratio_last_logits']:.3f}")
    console = Console()
    console.print(table)
    memory = Table(title="KV cache and frames that fit (bf16 weights + KV)")
    for column in ("", "24 GB", "80 GB"):
        memory.add_column(column, justify="right")
    fit = result["frames_fit"]
    memory.add_row("KV bytes per frame token", f"{result['kv_bytes_per_frame']:,}", f"{result['kv_bytes_per_frame']:,}")
    memory.add_row("frames that fit in memory", f"{fit['24GB']['memory']:,}", f"{fit['80GB']['memory']:,}")
    memory.add_row("context-length cap", f"{fit['24GB']['context']:,}", f"{fit['80GB']['context']:,}")
    memory.add_row("frame budget", f"{fit['24GB']['max_frames']:,}", f"{fit['80GB']['max_frames']:,}")
    console.print(memory)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
