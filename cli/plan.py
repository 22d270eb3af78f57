"""`videomini plan`: how many frames of video a model holds on a device (weights, KV cache, context cap)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from videomini.cli.common import fail
from videomini.cli.main import app
from videomini.config import FPS
from videomini.errors import first_line
from videomini.limits import check_fps

_PLANNED_WITHOUT_GPU = "24GB"


def _human(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.2f} GB"
    if n >= 10**6:
        return f"{n / 1e6:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.4g} KiB"
    return f"{n} B"


@app.command()
def plan(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A known model id, a hub id in the cache, or a "
                                        "local checkpoint folder (its config.json); default "
                                        "ICTNLP/llava-mini-llama-3.1-8b."),
    gpu_mem: Optional[str] = typer.Option(None, "--gpu-mem", help="Device memory to plan for, e.g. 24GB, 80GiB "
                                          "(default: the CUDA device's, else 24GB)."),
    device: Optional[str] = typer.Option(None, "--device", help="Plan for this device's memory (cuda, cuda:1, "
                                         "cpu = RAM available now) instead of --gpu-mem."),
    dtype: str = typer.Option("bf16", "--dtype", help="Weights dtype: bf16, fp16 or fp32."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="Quantized LLM weights: int8 or nf4."),
    kv_cache: Optional[str] = typer.Option(None, "--kv-cache", help="Quantized KV cache: int8 or int4."),
    prompt_tokens: int = typer.Option(1024, "--prompt-tokens", help="Tokens reserved for the prompt."),
    answer_tokens: int = typer.Option(512, "--answer-tokens", help="Tokens reserved for the answer."),
    fps: float = typer.Option(FPS, "--fps", help="Sampling rate, to express the frame budget as hours of video."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as one JSON object."),
) -> None:
    """Weights per part, KV bytes per frame, frames that fit in memory and in the context: the frame budget."""
    notes: list[str] = []
    try:
        memory = _device_memory(gpu_mem, device, notes)
        check_fps(fps)  # finite, within videomini/limits.py's range
        result = _plan(model, memory, quantize or dtype, kv_cache, prompt_tokens, answer_tokens,
                       device or "cuda")
    except (ValueError, OSError) as e:
        fail(first_line(e))
    result.notes[:0] = notes
    hours = result.max_frames / fps / 3600
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "fps": fps, "hours_of_video": hours}, indent=2))
        return
    _render(result, fps, hours)


def _device_memory(gpu_mem: str | None, device: str | None, notes: list[str]) -> int:
    from videomini.planner import device_memory, parse_size

    if gpu_mem is not None:
        try:
            return parse_size(gpu_mem)
        except ValueError as e:
            raise ValueError(f"--gpu-mem: {e}") from None
    if device is not None:
        return device_memory(device)
    import torch

    if torch.cuda.is_available():
        return device_memory("cuda")
    notes.append(f"no CUDA device here: planned for {_PLANNED_WITHOUT_GPU} (pass --gpu-mem or --device)")
    return parse_size(_PLANNED_WITHOUT_GPU)


def _plan(model: str | None, memory: int, weights: str, kv_cache: str | None, prompt_tokens: int,
          answer_tokens: int, device: str = "cuda"):
    from videomini.loading import DEFAULT_MODEL_ID
    from videomini.planner import normalize_dtype, plan_memory

    for option, value, allowed in (("--dtype/--quantize", weights, ("fp32", "fp16", "bf16", "int8", "nf4")),
                                   ("--kv-cache", kv_cache, ("int8", "int4"))):
        try:
            if value is not None and normalize_dtype(value) not in allowed:
                raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        except ValueError as e:
            raise ValueError(f"{option}: {e}") from None
    return plan_memory(model or DEFAULT_MODEL_ID, memory, dtype=weights, kv_dtype=kv_cache,
                       prompt_tokens=prompt_tokens, answer_tokens=answer_tokens, device=device)


def _render(result, fps: float, hours: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Memory plan: {result.model} ({result.dtype} weights, {result.kv_dtype} KV cache)")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("size", justify="right")
    for part, size in result.weights_bytes.items():
        table.add_row(f"weights: {part}", f"{result.parameters[part]:,}", _human(size))
    table.add_row("weights: total", f"{sum(result.parameters.values()):,}", _human(result.total_weights_bytes),
                  end_section=True)
    table.add_row("device memory", "", _human(result.device_memory_bytes))
    table.add_row(f"activations (runtime reserve + one {result.prefill_chunk_tokens:,}-token prefill chunk)", "",
                  _human(result.activation_overhead_bytes))
    table.add_row(f"prompt + answer KV ({result.prompt_tokens_reserved:,} tokens)", "", _human(result.prompt_kv_bytes))
    per_frame = result.kv_bytes_per_frame + result.embedding_bytes_per_frame
    table.add_row(f"per frame: KV ({result.tokens_per_frame} token{'s' * (result.tokens_per_frame != 1)}) + "
                  "embeddings", "", f"{per_frame:,} B ({_human(per_frame)})", end_section=True)
    table.add_row("frames that fit in memory", f"{result.frames_fit_memory:,}", "")
    table.add_row("context length (positions)", f"{result.context_length:,}", "")
    table.add_row("frames that fit in the context", f"{result.frames_fit_context:,}", "")
    table.add_row(f"[bold]frame budget[/bold] (limited by {result.limited_by})", f"[bold]{result.max_frames:,}[/bold]",
                  f"{hours:.2f} h at {fps:g} fps")
    console = Console()
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", style="dim", highlight=False)
