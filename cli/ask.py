"""`videomini ask VIDEO QUESTION`: an answer streamed as it is generated, then the moments it rests on."""

from __future__ import annotations

import atexit
import gc
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from videomini.cli.common import checked_ask, fail
from videomini.cli.main import app
from videomini.config import FPS, MAX_NEW_TOKENS, TOP_K, absolute_model_id


def evidence_table(answer, title: str = "evidence"):
    from rich.table import Table

    from videomini.timerefs import format_time

    methods = sorted({e.method for e in answer.evidence}) or ["none"]
    table = Table(title=f"{title} ({', '.join(methods)})")
    multi = len({e.video for e in answer.evidence}) > 1
    if multi:
        table.add_column("video")
    for column in ("time", "from", "to", "score"):
        table.add_column(column, justify="right")
    for e in answer.evidence:
        row = [format_time(e.time_s), format_time(e.start_s), format_time(e.end_s), f"{e.score:.2f}"]
        table.add_row(*([Path(e.video).name] if multi else []), *row)
    return table


@app.command()
def ask(
    targets: list[str] = typer.Argument(..., metavar="VIDEO QUESTION",
                                        help="A video or image and a question (with --library: the question only)."),
    library: Optional[Path] = typer.Option(None, "--library", help="Answer over an indexed library instead."),
    model: Optional[str] = typer.Option(None, "--model", envvar="VIDEOMINI_MODEL", metavar="ID_OR_PATH",
                                        help="Checkpoint folder or hub id; default: the hub id "
                                             "ICTNLP/llava-mini-llama-3.1-8b"),
    fps: float = typer.Option(FPS, "--fps", help="Frames sampled per second of video."),
    sampling: str = typer.Option("fps", "--sampling", help="fps: the frame on screen at 0, 1/fps, 2/fps ... s; "
                                                           "reference: the official LLaVA-Mini evaluation's frames "
                                                           "(the centre of each of N equal segments)."),
    decode: str = typer.Option("exact", "--decode", help="exact: decode every frame (the rule and the reference's "
                                                         "pixels); fast: skip frames nobody samples (B-frames; "
                                                         "keyframes only when sampling sparser than them)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Cap on frames given to the LLM."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda when present)."),
    dtype: Optional[str] = typer.Option(None, "--dtype",
                                        help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="Quantize the LLM's weights: int8 (CUDA: "
                                           "bitsandbytes, CPU: torchao) or nf4 (CUDA)."),
    kv_cache: Optional[str] = typer.Option(None, "--kv-cache", help="Quantize the KV cache: int8 or int4 (for "
                                           "the frame tokens of very long videos)."),
    max_new_tokens: int = typer.Option(MAX_NEW_TOKENS, "--max-new-tokens", help="Longest answer, in tokens."),
    fusion: str = typer.Option("all", "--fusion", help="all: fuse the question with every frame; selected: only "
                                                       "with the frames given to the LLM."),
    top_k: int = typer.Option(TOP_K, "--top-k", help="With --library: moments retrieved."),
    signals: str = typer.Option("", "--signals", help="Comma-separated: speech, ocr — extracted and quoted into "
                                                       "the prompt as timestamped lines."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback",
                                  help="When no LLaVA-Mini model can be loaded, answer from speech and on-screen "
                                       "text (clearly labelled) instead of failing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answer, evidence, frames, timings)."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Print the answer when complete, not as generated."),
) -> None:
    """Ask a question about a video (or image) and get an answer with the timestamps of its evidence."""
    from videomini.config import AskConfig

    if library is not None and len(targets) != 1:
        fail("with --library give one argument: the question")
    if library is None and len(targets) != 2:
        fail("give a video (or image) and a question: videomini ask VIDEO QUESTION")
    if library is None and not Path(targets[0]).exists():
        fail(f"{targets[0]}: no such file")
    targets[-1], model = checked_ask(targets[-1], fps, max_frames, top_k, max_new_tokens), absolute_model_id(model)
    config = AskConfig(model_id=model, device=device, dtype=dtype, quantize=quantize, kv_cache=kv_cache, fps=fps,
                       sampling=sampling, decode=decode, max_frames=max_frames, max_new_tokens=max_new_tokens,
                       fusion=fusion, top_k=top_k, signals=tuple(s.strip() for s in signals.split(",") if s.strip()),
                       fallback=fallback)
    # the answer is printed by then: the interpreter's last garbage collections over torch's and transformers'
    # objects took 2 s of every exit under load (0.3 s frozen); files are closed and flushed before, explicitly
    atexit.register(gc.freeze)
    # decoding starts now, in its thread, so that it overlaps the seconds of heavy imports and model loading
    # below; a file that is not a video is answered here, in a fraction of a second
    frames = None if library is not None else _decode_ahead(Path(targets[0]), config)
    from rich.console import Console

    from videomini import ask_policy as job
    console = Console(stderr=as_json)
    stream = not (no_stream or as_json)
    progress, on_progress, on_token = _live_output(console, stream, quiet=as_json and not sys.stderr.isatty())

    def on_notice(message: str) -> None:
        print(message, file=sys.stderr)

    with progress:
        if library is not None:
            answer = job.ask_library(library, targets[0], config, on_token=on_token, on_progress=on_progress,
                                     on_notice=on_notice)
        else:
            answer = job.ask_video(Path(targets[0]), targets[1], config, on_progress=on_progress,
                                   on_token=on_token, on_notice=on_notice, frames=frames)
    print_answer(answer, console, as_json, streamed=stream and answer.generated_by != "signals")


def _decode_ahead(path: Path, config):
    """The video's frames, decoding from now on (None for a still image)."""
    from videomini.video import IMAGE_EXTENSIONS, decode_ahead

    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return None
    return decode_ahead(path, config.fps, config.sampling, config.decode)


def _live_output(console, stream: bool, quiet: bool):
    """A progress line (model loading, signals, decode + encode) that gives way to the streamed answer."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console, transient=True, disable=quiet,
                        redirect_stderr=False)
    task = progress.add_task("starting", total=None)

    def on_progress(stage: str, done: int, total: int | None) -> None:
        description = "decode + encode frames" if stage == "encode" else stage
        progress.update(task, description=description, completed=done, total=max(total or done, done) or None)

    started_answer: list[bool] = []

    def on_token(piece: str) -> None:
        if stream:
            if not started_answer:
                progress.stop()
                started_answer.append(True)
            console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)

    return progress, on_progress, on_token


def print_answer(answer, console, as_json: bool, streamed: bool) -> None:
    if as_json:
        typer.echo(json.dumps(answer.to_dict(), indent=2))
        return
    if streamed:
        console.print()
    else:
        console.print(answer.text, markup=False, highlight=False)
    for note in answer.notes:
        console.print(f"[dim]{note}[/dim]")
    if answer.generated_by == "signals":
        console.print(f"[dim]{answer.model} · {sum(answer.timings_s.values()):.1f} s[/dim]")
    else:
        console.print(f"[dim]{answer.frames_used} of {answer.frames_total} frames · {answer.model} · "
                      f"{answer.timings_s.get('total', 0):.1f} s[/dim]")
    if answer.evidence and answer.generated_by != "signals":  # a signals answer quotes its moments, times included
        console.print(evidence_table(answer))
