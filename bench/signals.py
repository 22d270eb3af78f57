"""Throughput of the offline signal extractors: speech real-time factor (faster-whisper tiny.en), OCR frames/s
(RapidOCR), MiniLM sentences/s.

    python bench/signals.py                       # generated 60 s narrated video with captions
    python bench/signals.py --video clip.mp4 --json out.json
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
sys.path.insert(0, str(REPO / "tests"))  # the narrated-video generator is shared with the tests

app = typer.Typer(add_completion=False)


def _narrated(path: Path, duration_s: float) -> Path:
    from narrated import DEFAULT_CAPTIONS, DEFAULT_LINES, Caption, Line, make_narrated_video

    period_s = 20.0
    lines, captions = [], []
    for k in range(int(duration_s // period_s)):
        shift = k * period_s
        lines += [Line(line.start_s + shift, line.text, line.paraphrase) for line in DEFAULT_LINES]
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


@app.command()
def main(
    video: Path | None = typer.Option(None, help="Video to measure (default: a generated narrated video)."),
    duration_s: float = typer.Option(60.0, help="Length of the generated video."),
    ocr_fps: float = typer.Option(1.0, help="Frames per second sampled for OCR."),
    sentences: int = typer.Option(1024, help="Sentences embedded for the MiniLM measure."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_path: Path | None = typer.Option(None, "--json", help="Write the results as JSON here."),
) -> None:
    from videomini.signals.ocr import frame_texts, load_ocr, merge_frame_texts
    from videomini.video import sample_frames
    from videomini.signals.speech import load_whisper, transcribe
    from videomini.signals.text import TextEmbedder

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
    results["text"] = {"model": "all-MiniLM-L6-v2 (bundled)", "device": embedder.device, "load_s": text_load_s,
                       "sentences": sentences, "encode_s": encode_s, "sentences_per_s": sentences / encode_s}
    rows += [("minilm", "model load", f"{text_load_s:.2f} s"),
             ("minilm", f"encode {sentences} sentences", f"{encode_s:.2f} s"),
             ("minilm", "sentences / s", f"{sentences / encode_s:.0f}")]

    results["machine"]["load_avg_1m_after"] = os.getloadavg()[0]
    table = Table(title=f"signals on {video.name} ({length_s:.1f} s, {resolution}); "
                        f"{os.cpu_count()} CPUs, load {results['machine']['load_avg_1m_before']:.1f}")
    for name in ("signal", "measure", "value"):
        table.add_column(name, justify="right" if name == "value" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))
        console.print(f"wrote {json_path}")
    tmp.cleanup()


if __name__ == "__main__":
    app()
