"""`videomini ask VIDEO QUESTION`: an answer streamed as it is generated, then the moments it rests on."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from videomini.cli.main import app


def fail(message: str, code: int = 1) -> None:
    """Expected failures: one line on stderr, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def evidence_table(answer, title: str = "evidence"):
    from rich.table import Table

    from videomini.answer import format_time

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
    model: Optional[str] = typer.Option(None, "--model", envvar="VIDEOMINI_MODEL",
                                        help="Checkpoint folder or hub id (default ICTNLP/llava-mini-llama-3.1-8b)."),
    fps: float = typer.Option(1.0, "--fps", help="Frames sampled per second of video."),
    sampling: str = typer.Option("fps", "--sampling", help="fps: the frame on screen at 0, 1/fps, 2/fps ... s; "
                                                           "reference: the official LLaVA-Mini evaluation's frames "
                                                           "(the centre of each of N equal segments)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Cap on frames given to the LLM."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda when present)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    fusion: str = typer.Option("all", "--fusion", help="all: fuse the question with every frame; selected: only "
                                                       "with the frames given to the LLM."),
    top_k: int = typer.Option(10, "--top-k", help="With --library: moments retrieved."),
    signals: str = typer.Option("", "--signals", help="Comma-separated: speech, ocr — extracted and quoted into "
                                                       "the prompt as timestamped lines."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback",
                                  help="When no LLaVA-Mini model can be loaded, answer from speech and on-screen "
                                       "text (clearly labelled) instead of failing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answer, evidence, frames, timings)."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Print the answer when complete, not as generated."),
) -> None:
    """Ask a question about a video (or image) and get an answer with the timestamps of its evidence."""
    from rich.console import Console

    from videomini.loading import CheckpointError
    from videomini.video import VideoError

    console = Console(stderr=as_json)
    if library is not None:
        if len(targets) != 1:
            fail("with --library give one argument: the question")
        ask_library_cli(library, targets[0], model, device, dtype, top_k, max_frames, max_new_tokens, as_json,
                        not (no_stream or as_json), console, fallback)
        return
    if len(targets) != 2:
        fail("give a video (or image) and a question: videomini ask VIDEO QUESTION")
    video, question = Path(targets[0]), targets[1]
    if not video.exists():
        fail(f"{video}: no such file")
    if sampling not in ("fps", "reference"):
        fail(f"--sampling must be fps or reference, not {sampling!r}")

    from videomini.pipelines.ask import VideoMini, default_model_id

    wanted_signals = tuple(s.strip() for s in signals.split(",") if s.strip())
    try:
        with console.status(f"loading {model or default_model_id()} …"):
            vm = VideoMini.from_pretrained(model, device=device, dtype=dtype)
    except CheckpointError as e:
        if not fallback or not _signals_available():
            fail(str(e), 2)
        print(f"warning: {e}", file=sys.stderr)
        print("warning: answering from speech and on-screen text instead (no generative model)", file=sys.stderr)
        answer_from_signals_cli(video, question, wanted_signals or ("speech", "ocr"), fps, as_json, console)
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    stream = not (no_stream or as_json)
    progress = Progress(TextColumn("[bold]decode + encode"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("frames"), TimeRemainingColumn(), console=console, transient=True,
                        disable=as_json and not sys.stderr.isatty())
    task = progress.add_task("frames", total=None)

    def on_progress(stage: str, done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=max(total or done, done))

    started_answer = []

    def on_token(piece: str) -> None:
        if stream:
            if not started_answer:
                progress.stop()
                started_answer.append(True)
            console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)

    try:
        with progress:
            answer = vm.ask(video, question, fps=fps, max_frames=max_frames, max_new_tokens=max_new_tokens,
                            fusion=fusion, on_progress=on_progress, on_token=on_token, signals=wanted_signals,
                            sampling=sampling)
    except VideoError as e:
        fail(str(e))
    print_answer(answer, console, as_json, streamed=stream)


def ask_library_cli(library: Path, question: str, model: str | None, device: str | None, dtype: str | None,
                    top_k: int, max_frames: int | None, max_new_tokens: int, as_json: bool, stream: bool,
                    console, fallback: bool = True) -> None:
    from videomini.storage import LibraryError, LibraryStore
    from videomini.loading import CheckpointError
    from videomini.pipelines.ask import VideoMini
    from videomini.pipelines.search import answer_library_from_signals, ask_library, library_model_id
    from videomini.signals import SignalError
    from videomini.video import VideoError

    try:
        with LibraryStore(library) as lib:
            manifest = lib.manifest() or {}
            has_text, has_frames = bool(manifest.get("text_n_vectors")), bool(manifest.get("n_vectors"))
            model = model or (library_model_id(lib) if has_frames or not has_text else None)
        if model is None:  # indexed with --no-visual: the stored signals are all there is
            print("note: the library holds no frames (indexed with --no-visual); answering from its speech and "
                  "on-screen text", file=sys.stderr)
            vm = None
        else:
            try:
                with console.status(f"loading {model} …"):
                    vm = VideoMini.from_pretrained(model, device=device, dtype=dtype)
            except CheckpointError as e:
                if not (fallback and has_text):
                    raise
                print(f"warning: {e}", file=sys.stderr)
                print("warning: answering from the library's speech and on-screen text instead (no generative model)",
                      file=sys.stderr)
                vm = None
        if vm is None:
            with console.status("searching speech and on-screen text …"):
                answer = answer_library_from_signals(library, question, top_k=min(top_k, 3))
            print_answer(answer, console, as_json, streamed=False)
            return
        answer = ask_library(vm, library, question, top_k=top_k, max_frames=max_frames or 64,
                             max_new_tokens=max_new_tokens,
                             on_token=(lambda p: console.print(p, end="", markup=False, highlight=False))
                             if stream else None)
    except (LibraryError, CheckpointError, VideoError, SignalError) as e:
        fail(str(e), 2 if isinstance(e, CheckpointError) else 1)
    print_answer(answer, console, as_json, streamed=stream)


def _signals_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None
               for name in ("faster_whisper", "rapidocr_onnxruntime", "sentence_transformers"))


def answer_from_signals_cli(video: Path, question: str, signals: tuple[str, ...], fps: float, as_json: bool,
                            console) -> None:
    from videomini.pipelines.signals_answer import answer_from_signals
    from videomini.signals import SignalError
    from videomini.video import VideoError

    try:
        with console.status("transcribing speech and reading on-screen text …"):
            answer = answer_from_signals(video, question, signals=signals, ocr_fps=fps)
    except (VideoError, SignalError) as e:
        fail(str(e))
    print_answer(answer, console, as_json, streamed=False)


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
    if answer.evidence:
        console.print(evidence_table(answer))
