"""Throughput of the offline signal extractors: speech real-time factor (faster-whisper tiny.en), OCR frames/s
(RapidOCR), MiniLM sentences/s; then `index` throughput with the signals on and off.

The index section indexes the same video into a fresh library per configuration (frames only, + speech, + ocr,
+ both, signals only). Its vision model is a tiny random LLaVA-Mini (tests/conftest.make_tiny_checkpoint), so
the numbers measure decoding + signal overhead, not the 8B model's encoder. Every model is bundled in a pip
package (whisper tiny.en, MiniLM, RapidOCR) and the hub is forced offline: HOME and HF caches do not matter.

    python bench/signals.py                       # generated 60 s narrated video with captions
    python bench/signals.py --video clip.mp4 --json out.json
    python bench/signals.py --no-index            # extractors only
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the narrated-video generator and the tiny checkpoint come from the tests
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # bundled models only: never reach for the hub
    os.environ.setdefault(_var, "1")

# (name, signals, visual): the index configurations, the first being the baseline the others are compared with
INDEX_CONFIGS = (
    ("(a) frames", (), True),
    ("(b) frames+speech", ("speech",), True),
    ("(c) frames+ocr", ("ocr",), True),
    ("(d) frames+speech+ocr", ("speech", "ocr"), True),
    ("(e) speech+ocr only", ("speech", "ocr"), False),
)

app = typer.Typer(add_completion=False)


# Sentences for every third 20 s period. Speech must not repeat within Whisper's 30 s window: repeated text
# has a gzip compression ratio above faster-whisper's 2.4 threshold, which makes it re-decode at rising
# temperatures up to 1.0 -- slower, and random (sometimes an empty transcript).
EXTRA_SENTENCES = ("Seven blue boats sailed past the old lighthouse.",
                   "Our meeting has moved to the room on the second floor.",
                   "The library closes early on Sundays in winter.")


def _narrated(path: Path, duration_s: float) -> Path:
    """The tests' narrated script in 20 s periods; spoken text cycles through three wordings so it never
    repeats within 60 s, while the captions repeat (OCR dedups per caption appearance)."""
    from narrated import DEFAULT_CAPTIONS, DEFAULT_LINES, Caption, Line, make_narrated_video

    period_s = 20.0
    lines, captions = [], []
    for k in range(int(duration_s // period_s)):
        shift = k * period_s
        for line, extra in zip(DEFAULT_LINES, EXTRA_SENTENCES):
            text = (line.text, line.paraphrase, extra)[k % 3]
            lines.append(Line(line.start_s + shift, text, line.paraphrase))
        captions += [Caption(c.start_s + shift, c.end_s + shift, c.text) for c in DEFAULT_CAPTIONS]
    return make_narrated_video(path, lines, captions, duration_s=duration_s).path


def _duration_s(path: Path) -> tuple[float, str]:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return float(container.duration or 0) / 1e6, f"{video.codec_context.width}x{video.codec_context.height}"


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _index_throughput(video: Path, length_s: float, fps: float, repeats: int, workdir: Path,
                      console: Console) -> dict:
    """Index `video` into a fresh library per configuration and time it (the fastest of `repeats` runs).
    The tiny vision model and MiniLM load once, before any timing; Whisper and RapidOCR load inside each run's
    decoder process, as they do in a real `index` run, so their load time is part of the overhead measured."""
    from videomini import VideoMini
    from videomini.pipelines import index_videos
    from videomini.signals.text import default_embedder

    from conftest import make_tiny_checkpoint

    with console.status("index: building the tiny checkpoint"):
        checkpoint = make_tiny_checkpoint(workdir / "tiny-checkpoint", with_clip_text=True)
        model, model_load_s = _timed(lambda: VideoMini.from_pretrained(str(checkpoint), device="cpu"))
        _, minilm_load_s = _timed(default_embedder)  # cached per process: keeps it out of the first signals run
    configs = []
    for name, signals, visual in INDEX_CONFIGS:
        runs = []
        for k in range(repeats):
            library_dir = workdir / f"library-{len(configs)}-{k}"
            with console.status(f"index {name} (run {k + 1}/{repeats})"):
                load_before = os.getloadavg()[0]
                report, wall_s = _timed(lambda library_dir=library_dir, signals=signals, visual=visual: index_videos(
                    library_dir, [video], model, fps=fps, signals=signals, visual=visual))
            if report.failed:
                console.print(f"[red]index {name} failed:[/red] {report.failed[0][1]}")
            runs.append({"wall_s": wall_s, "frames": report.frames, "segments": report.segments,
                         "failed": len(report.failed), "warnings": report.warnings,
                         "load_avg_1m_before": load_before})
        best = min(runs, key=lambda run: run["wall_s"])
        configs.append({"name": name, "signals": list(signals), "visual": visual, "video_s": length_s,
                        "wall_s": best["wall_s"], "x_real_time": length_s / best["wall_s"],
                        "frames": best["frames"], "segments": best["segments"], "runs": runs})
    baseline_s = configs[0]["wall_s"]
    for config in configs:
        config["wall_vs_frames_only"] = config["wall_s"] / baseline_s
    return {"vision_model": "tiny random LLaVA-Mini (tests/conftest.make_tiny_checkpoint, CLIP text tower), cpu",
            "note": "the vision encoder is the tiny model: wall time is decode + signals overhead, not the 8B model",
            "fps": fps, "repeats": repeats, "model_load_s": model_load_s, "minilm_load_s": minilm_load_s,
            "configs": configs}


def _index_table(index: dict, video: Path) -> Table:
    table = Table(title=f"index {video.name} at {index['fps']:g} fps, fastest of {index['repeats']}; "
                        "vision encoder = tiny random model (decode + signals overhead, not the 8B model)",
                  caption="x RT: video seconds per wall second; vs (a): wall time over frames only")
    for name in ("config", "video s", "wall s", "x RT", "frames", "segments", "vs (a)"):
        table.add_column(name, justify="left" if name == "config" else "right", no_wrap=True)
    for c in index["configs"]:
        table.add_row(c["name"], f"{c['video_s']:.1f}", f"{c['wall_s']:.2f}", f"{c['x_real_time']:.1f}",
                      str(c["frames"]), str(c["segments"]), f"{c['wall_vs_frames_only']:.2f}")
    return table


@app.command()
def main(
    video: Path | None = typer.Option(None, help="Video to measure (default: a generated narrated video)."),
    duration_s: float = typer.Option(60.0, help="Length of the generated video."),
    ocr_fps: float = typer.Option(1.0, help="Frames per second sampled for OCR."),
    sentences: int = typer.Option(1024, help="Sentences embedded for the MiniLM measure."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    index: bool = typer.Option(True, "--index/--no-index", help="Also time `index` with signals on and off."),
    index_fps: float = typer.Option(1.0, help="Frames per second the index runs sample (frames and OCR)."),
    index_repeats: int = typer.Option(1, min=1, help="Runs per index configuration; the fastest is reported."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the results as JSON here."),
) -> None:
    from videomini.signals.ocr import frame_texts, load_ocr, merge_frame_texts
    from videomini.signals.speech import load_whisper, transcribe
    from videomini.signals.text import MINILM, TextEmbedder
    from videomini.video import sample_frames

    console = Console()
    tmp = tempfile.TemporaryDirectory(prefix="videomini-bench-signals-")
    if video is None:
        with console.status("generating the narrated video"):
            video = _narrated(Path(tmp.name) / "narrated.mp4", duration_s)
    length_s, resolution = _duration_s(video)
    rows: list[tuple[str, str, str]] = []
    results: dict = {"video": str(video), "duration_s": length_s, "resolution": resolution,
                     "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "load_avg_1m_before": os.getloadavg()[0]}}

    with console.status("speech"):
        _, load_s = _timed(lambda: load_whisper("tiny.en", device))
        segments, speech_s = _timed(lambda: transcribe(video, device=device))
    rtf = speech_s / length_s
    results["speech"] = {"model": "whisper tiny.en (ct2, bundled)", "load_s": load_s, "transcribe_s": speech_s,
                         "real_time_factor": rtf, "x_real_time": 1 / rtf, "segments": len(segments),
                         "words": sum(len(s.words or []) for s in segments)}
    rows += [("speech", "model load", f"{load_s:.2f} s"),
             ("speech", f"transcribe {length_s:.0f} s of audio", f"{speech_s:.2f} s"),
             ("speech", "real-time factor", f"{rtf:.3f} ({1 / rtf:.0f}x real time)"),
             ("speech", "segments / words", f"{len(segments)} / {results['speech']['words']}")]

    with console.status("ocr"):
        _, ocr_load_s = _timed(load_ocr)
        batches, decode_s = _timed(lambda: list(sample_frames(video, fps=ocr_fps)))
        frames = np.concatenate([b for b, _ in batches])
        times = [t for _, ts in batches for t in ts]
        readings, ocr_s = _timed(lambda: frame_texts(frames))
        ocr_segments = merge_frame_texts(readings, times, 1.0 / ocr_fps)
    results["ocr"] = {"model": "rapidocr PP-OCRv4 (onnx, bundled)", "load_s": ocr_load_s, "frames": len(frames),
                      "decode_s": decode_s, "ocr_s": ocr_s, "frames_per_s": len(frames) / ocr_s,
                      "segments": len(ocr_segments)}
    rows += [("ocr", "engine load", f"{ocr_load_s:.2f} s"),
             ("ocr", f"{len(frames)} frames at {ocr_fps:g} fps ({resolution})", f"{ocr_s:.2f} s"),
             ("ocr", "frames / s", f"{len(frames) / ocr_s:.2f}"),
             ("ocr", "segments after dedup", str(len(ocr_segments)))]

    with console.status("minilm"):
        embedder, text_load_s = _timed(lambda: TextEmbedder(device=device))
        base = [s.text for s in segments + ocr_segments] or ["a sentence to embed"]
        texts = [f"{base[i % len(base)]} ({i})" for i in range(sentences)]
        embedder.encode(texts[:32])  # warm-up
        _, encode_s = _timed(lambda: embedder.encode(texts))
    results["text"] = {"model": f"{MINILM} (bundled)", "device": embedder.device, "load_s": text_load_s,
                       "sentences": sentences, "encode_s": encode_s, "sentences_per_s": sentences / encode_s}
    rows += [("minilm", "model load", f"{text_load_s:.2f} s"),
             ("minilm", f"encode {sentences} sentences", f"{encode_s:.2f} s"),
             ("minilm", "sentences / s", f"{sentences / encode_s:.0f}")]

    if index:
        results["index"] = _index_throughput(video, length_s, index_fps, index_repeats, Path(tmp.name), console)

    results["machine"]["load_avg_1m_after"] = os.getloadavg()[0]
    table = Table(title=f"signals on {video.name} ({length_s:.1f} s, {resolution}); "
                        f"{os.cpu_count()} CPUs, load {results['machine']['load_avg_1m_before']:.1f}")
    for name in ("signal", "measure", "value"):
        table.add_column(name, justify="right" if name == "value" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if index:
        console.print(_index_table(results["index"], video))
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))
        console.print(f"wrote {json_path}")
    tmp.cleanup()


if __name__ == "__main__":
    app()
