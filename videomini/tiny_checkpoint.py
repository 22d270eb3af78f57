"""A tiny random LLaVA-Mini in the official format: what the tests run on, and what lets anyone try the visual
path (index frames, search them, ask) on a machine without the 8B checkpoint. Its answers are random text; its
shapes, files and code paths are the real ones.

    python -m videomini.tiny_checkpoint DIR [--tokenizer FOLDER] [--no-clip-text]

The tokenizer is the golden tiny checkpoint's (tests/data/golden/llavamini_tiny in a clone of the repository):
a 408-token vocabulary with the Llama-3 chat template, so that prompts are built as the reference builds them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# in a clone of the repository: videomini/../tests/data/golden/llavamini_tiny
GOLDEN_TOKENIZER = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden" / "llavamini_tiny"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_llm_config(**overrides: Any) -> Any:
    """A Llama config shaped like the golden one (hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 408)."""
    from transformers import LlamaConfig

    cfg = dict(vocab_size=408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=400,
               eos_token_id=[401, 405, 404], tie_word_embeddings=False, rope_theta=500000.0,
               rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"})
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def _copy_tokenizer(tokenizer_dir: Path, folder: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, folder / name)


def _vision_tower(tower_dir: Path, vision: dict, with_clip_text: bool, tokenizer_dir: Path) -> Any:
    """A random CLIP vision tower saved in `tower_dir`; with `with_clip_text` a full CLIP (text tower and both
    projections), so the same pass yields CLIP image embeddings and a query can be embedded by the text tower."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    from videomini.loading import quiet_transformers

    if not with_clip_text:
        tower = CLIPVisionModel(CLIPVisionConfig(**vision))
        tower.save_pretrained(str(tower_dir))
        return tower
    text = dict(vocab_size=408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu", bos_token_id=400,
                eos_token_id=401, pad_token_id=401)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(str(tower_dir))
    with quiet_transformers():  # the text tower's keys are expected to go unused here
        tower = CLIPVisionModelWithProjection.from_pretrained(str(tower_dir))
    _copy_tokenizer(tokenizer_dir, tower_dir)  # the text tower's tokenizer (the real CLIP folder has its own)
    return tower


def make_tiny_checkpoint(folder: str | Path, *, compressor_size: int = 1, prefusion_layer_num: int = 2,
                         resolution_ratio: int = 1, projector: str = "mlp2x_gelu", image_size: int = 56,
                         with_clip_text: bool = False, seed: int = 0, max_shard_size: str | int = "5GB",
                         tokenizer_dir: str | Path = GOLDEN_TOKENIZER) -> Path:
    """Build a random LLaVA-Mini (tiny CLIP tower, tiny Llama) and save it in `folder` in the official format
    with the tokenizer of `tokenizer_dir`. Returns `folder`."""
    import torch
    from transformers import CLIPImageProcessorPil

    from videomini.loading import save_pretrained
    from videomini.model import LlavaMiniConfig, build_model

    tokenizer_dir = Path(tokenizer_dir)
    if not all((tokenizer_dir / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"{tokenizer_dir}: no tokenizer ({', '.join(TOKENIZER_FILES)}); pass --tokenizer "
                                "FOLDER (the repository's tests/data/golden/llavamini_tiny)")
    torch.manual_seed(seed)
    vision = dict(hidden_size=1024, intermediate_size=64, num_hidden_layers=2, num_attention_heads=8,
                  image_size=image_size, patch_size=14, projection_dim=32, hidden_act="quick_gelu")
    folder = Path(folder)
    tower_dir = folder / "clip"
    tower = _vision_tower(tower_dir, vision, with_clip_text, tokenizer_dir)
    CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                          image_mean=CLIP_MEAN, image_std=CLIP_STD).save_pretrained(str(tower_dir))
    mm = LlavaMiniConfig(mm_vision_tower="clip", compressor_size=compressor_size,
                         prefusion_layer_num=prefusion_layer_num, resolution_ratio=resolution_ratio,
                         mm_projector_type=projector, tokenizer_model_max_length=4096)
    model = build_model(mm, tiny_llm_config(), vision_tower=tower)
    with torch.no_grad():  # random but non-trivial norms and biases, so that every weight matters
        for name, p in model.named_parameters():
            if not name.startswith("vision_tower.") and p.dim() == 1 and "pos_embed" not in name:
                p.add_(torch.randn_like(p) * 0.1)
    save_pretrained(model, folder, max_shard_size=max_shard_size, save_vision_tower=False)
    _copy_tokenizer(tokenizer_dir, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    """`python -m videomini.tiny_checkpoint DIR`: the checkpoint `index`, `search` and `ask` accept (--model DIR)."""
    parser = argparse.ArgumentParser(prog="python -m videomini.tiny_checkpoint",
                                     description="Write a tiny random LLaVA-Mini checkpoint (for trying the visual "
                                                 "path without the 8B model; its answers are random text).")
    parser.add_argument("folder", type=Path, help="Folder to write (must not exist yet, or be empty).")
    parser.add_argument("--tokenizer", type=Path, default=GOLDEN_TOKENIZER,
                        help=f"Folder holding the tokenizer files (default: {GOLDEN_TOKENIZER}).")
    parser.add_argument("--no-clip-text", action="store_true",
                        help="A CLIP vision tower only (no text tower: `index` refuses it, `ask` works).")
    args = parser.parse_args(argv)
    if args.folder.exists() and any(args.folder.iterdir()):
        print(f"error: {args.folder}: exists and is not empty; choose a new folder", file=sys.stderr)
        return 1
    from videomini import backends

    backends.defer()  # as the CLI: transformers would import torchao & co. and print their load failures
    from videomini.loading import quiet_transformers

    try:
        with quiet_transformers():  # no "Writing model shards" bar: one line says what was written
            make_tiny_checkpoint(args.folder, with_clip_text=not args.no_clip_text, tokenizer_dir=args.tokenizer)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote a tiny random LLaVA-Mini to {args.folder}; use it with --model {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
