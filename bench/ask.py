"""`ask` on CPU: batched vs one-by-one frame encoding, decode/encode overlap, and peak RSS vs video length.

1. Encoder frames/s for batch sizes 1..32 (one-by-one = batch 1) with a random LLaVA-Mini in the official format
   whose CLIP tower has the real model's input (336 px, 14 px patches -> 576 patches, width 1024) but fewer and
   narrower layers, so that the fast torch preprocessing path and realistic token counts are exercised in minutes.
2. Overlap: `VideoMini.ask(...).timings_s["decode_encode"]` against decoding alone and encoding alone (the
   pipeline decodes in a prefetch thread while the encoder computes; goal: wall <= 1.15 x the slower stage).
3. Peak RSS (ru_maxrss) of the whole `ask` for short vs long 640x360 videos at 1 fps, each in a fresh subprocess
   (goal: flat). Uses the golden tiny checkpoint by default, so that an hour of video finishes in about a minute.
4. `--floor`: the wall time of `videomini ask` (a fresh process: start-up, decode, encode, answer; golden tiny
   checkpoint, 1 fps) over the decode floor, `ffmpeg -threads N -i v.mp4 -f null -` with the same N decoder
   threads, per video length, in `--decode exact` and `fast`; the time from the command's launch to the first
   decoded frame and to the first encoded batch; where the time goes (a per-stage table: moments from launch,
   seconds per stage); peak RSS; and how far fast mode's frames moved from exact mode's (the frame times each
   reports). `--late` adds exact mode with decoding started only once the model has loaded (as before
   `video.decode_ahead`), to show what starting early gains. The videos are 640x360 30 fps H.264 testsrc encoded
   with x264's veryfast preset (B-frames, as in real files; GOP 10 s), made once and cached in `--cache`.

    python bench/ask.py [--quick] [--minutes 6 60] [--rss-model golden|bench|PATH] [--json out.json]
    python bench/ask.py --floor [--minutes 6 60] [--late] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN_CHECKPOINT = REPO / "tests" / "data" / "golden" / "llavamini_tiny"  # the repository's own test data
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
QUESTION = "What happens?"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bench never downloads
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -------------------------------------------------------------------------------------------------------------
# The benchmark model: random weights, official folder format (same recipe as tests/conftest.py's tiny checkpoint)
# -------------------------------------------------------------------------------------------------------------

def build_bench_checkpoint(folder: Path, image_size: int = 336, vision_layers: int = 4,
                           vision_intermediate: int = 1024, llm_hidden: int = 256, prefusion_layers: int = 2,
                           seed: int = 0) -> Path:
    """Write a random LLaVA-Mini to `folder` (CLIP tower in `folder/clip`, golden tokenizer); reused when present."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, LlamaConfig

    from videomini.loading import save_pretrained
    from videomini.model import LlavaMiniConfig, build_model

    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / "clip" / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tower = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=1024, intermediate_size=vision_intermediate, num_hidden_layers=vision_layers,
        num_attention_heads=16, image_size=image_size, patch_size=14, hidden_act="quick_gelu"))
    tower.save_pretrained(str(folder / "clip"))
    CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                          image_mean=CLIP_MEAN, image_std=CLIP_STD).save_pretrained(str(folder / "clip"))
    llm = LlamaConfig(vocab_size=408, hidden_size=llm_hidden, intermediate_size=2 * llm_hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=131072,
                      rms_norm_eps=1e-5, bos_token_id=400, eos_token_id=[401, 405, 404], tie_word_embeddings=False,
                      rope_theta=500000.0)
    mm = LlavaMiniConfig(mm_vision_tower="clip", compressor_size=1, prefusion_layer_num=prefusion_layers,
                         mm_projector_type="mlp2x_gelu", tokenizer_model_max_length=4096)
    model = build_model(mm, llm, vision_tower=tower)
    save_pretrained(model, folder, save_vision_tower=False)
    for name in TOKENIZER_FILES:
        shutil.copy(GOLDEN_CHECKPOINT / name, folder / name)
    return folder


def testsrc_video(cache: Path, minutes: float, preset: str = "ultrafast") -> Path:
    """A cached 640x360 30 fps H.264 testsrc video of `minutes` (shared with bench/decode.py's cache); x264's
    ultrafast preset has no B-frames, veryfast has them."""
    sys.path.insert(0, str(REPO))
    from tests.synth import make_testsrc_video

    suffix = "" if preset == "ultrafast" else f"_{preset}"
    path = cache / f"testsrc_640x360_{minutes:g}min{suffix}.mp4"
    if not path.exists():
        print(f"generating {path} ...", file=sys.stderr, flush=True)
        make_testsrc_video(path, minutes * 60, size=(640, 360), fps=30, preset=preset)
    return path


# -------------------------------------------------------------------------------------------------------------
# 1. batched vs one-by-one
# -------------------------------------------------------------------------------------------------------------

def bench_batching(model, tokenizer, processor, frames, batch_sizes: list[int], repeats: int) -> list[dict]:
    """Frames/s of FrameEncoder.encode over the same frames at each batch size (question fused, as `ask` does)."""
    import numpy as np

    from videomini.encoder import FrameEncoder
    from videomini.prompting import encode_question

    input_ids = encode_question(tokenizer, QUESTION).to(model.device)
    timestamps_s = np.arange(len(frames), dtype=np.float64)
    encoders = {b: FrameEncoder(model, processor, batch_size=b) for b in batch_sizes}
    for b, encoder in encoders.items():  # warm-up (allocator, kernels)
        encoder.encode(frames[:b], timestamps_s[:b], input_ids)
    best = {b: float("inf") for b in batch_sizes}
    for _ in range(repeats):  # round-robin over batch sizes, best pass kept: load from other processes drifts
        for b, encoder in encoders.items():
            start = time.perf_counter()
            for i in range(0, len(frames), b):
                encoder.encode(frames[i:i + b], timestamps_s[i:i + b], input_ids)
            best[b] = min(best[b], time.perf_counter() - start)
    rows = [{"batch_size": b, "frames": len(frames), "seconds": round(best[b], 3),
             "frames_per_s": round(len(frames) / best[b], 2)} for b in batch_sizes]
    for row in rows:
        print(f"  batch {row['batch_size']:3d}: {row['frames_per_s']:.2f} frames/s", file=sys.stderr, flush=True)
    base = rows[0]["frames_per_s"]
    for row in rows:
        row["speedup_vs_batch1"] = round(row["frames_per_s"] / base, 2)
    return rows


# -------------------------------------------------------------------------------------------------------------
# 2. overlap of decoding and encoding in the ask pipeline
# -------------------------------------------------------------------------------------------------------------

def bench_overlap(model, tokenizer, processor, video: Path, batch_size: int) -> dict:
    """decode alone, encode alone (pre-decoded frames), and ask's decode+encode wall time on the same video."""

    from videomini.ask import VideoMini
    from videomini.encoder import FrameEncoder
    from videomini.prompting import encode_question
    from videomini.video import sample_frames

    start = time.perf_counter()
    frame_batches, time_batches = [], []
    with sample_frames(video, fps=1, batch_size=batch_size, size=FrameEncoder.frame_size) as batches:  # as ask
        for frames, timestamps_s in batches:
            frame_batches.append(frames)
            time_batches.append(timestamps_s)
    decode_s = time.perf_counter() - start
    n_frames = sum(len(f) for f in frame_batches)

    encoder = FrameEncoder(model, processor, batch_size=batch_size)
    input_ids = encode_question(tokenizer, QUESTION).to(model.device)
    encoder.encode(frame_batches[0], time_batches[0], input_ids)  # warm-up
    start = time.perf_counter()
    for frames, timestamps_s in zip(frame_batches, time_batches):
        encoder.encode(frames, timestamps_s, input_ids)
    encode_s = time.perf_counter() - start
    del frame_batches, time_batches

    answer = VideoMini(model, tokenizer, processor, batch_size=batch_size).ask(video, QUESTION, max_new_tokens=1)
    wall_s = answer.timings_s["decode_encode"]
    hidden_s = decode_s + encode_s - wall_s  # what overlapping saved over running the stages one after the other
    return {"video": video.name, "frames": n_frames, "batch_size": batch_size, "decode_s": round(decode_s, 3),
            "encode_s": round(encode_s, 3), "decode_encode_wall_s": round(wall_s, 3),
            "hidden_s": round(hidden_s, 3), "hidden_of_shorter_stage": round(hidden_s / min(decode_s, encode_s), 3),
            "wall_over_slower": round(wall_s / max(decode_s, encode_s), 3),
            "wall_over_sum": round(wall_s / (decode_s + encode_s), 3), "frames_asked": answer.frames_total}


# -------------------------------------------------------------------------------------------------------------
# 3. peak RSS of ask vs video length (child processes)
# -------------------------------------------------------------------------------------------------------------

def rss_child(checkpoint: str, video: str, batch_size: int) -> dict:
    """Child process: load the model, run the whole ask once, report its peak RSS."""
    from videomini import load_model
    from videomini.ask import VideoMini

    loaded = load_model(checkpoint, device="cpu")
    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    answer = VideoMini(*loaded, batch_size=batch_size).ask(video, QUESTION, max_new_tokens=1)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"frames": answer.frames_total, "frames_used": answer.frames_used, "ask_s": round(seconds, 2),
            "peak_rss_after_load_mb": round(loaded_mb, 1), "peak_rss_mb": round(peak_mb, 1),
            "vm_hwm_mb": round(_vm_hwm_kb() / 1024, 1)}


def _vm_hwm_kb() -> float:
    """This process's own peak RSS from /proc (Linux), a cross-check of ru_maxrss; NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def bench_rss(checkpoint: Path, videos: dict[float, Path], batch_size: int) -> list[dict]:
    """One fresh child per video. Run this while the parent is still small: on Linux a forked child's ru_maxrss
    starts at the parent's RSS at fork time, so a parent holding a model would inflate every child's figure."""
    rows = []
    for minutes, video in videos.items():
        out = subprocess.run([sys.executable, __file__, "--child", str(checkpoint), str(video),
                              "--batch-size", str(batch_size)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{video}: ask child failed: {last}")
        row = {"minutes": minutes, **json.loads(out.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"  {minutes:g} min: {row['frames']} frames, peak RSS {row['peak_rss_mb']:.0f} MB, {row['ask_s']} s",
              file=sys.stderr, flush=True)
    return rows


# -------------------------------------------------------------------------------------------------------------
# 4. ask's wall time over the decode floor, exact and fast decoding, time to the first frame
# -------------------------------------------------------------------------------------------------------------

class _AfterImport:
    """A meta-path finder that runs `patches[name](module)` right after `name` is imported, so the child can time
    the model's stages without importing the model stack before `ask` would (which would change start-up)."""

    def __init__(self, patches: dict) -> None:
        self.patches = patches

    def find_spec(self, name, path, target=None):
        import importlib.util

        if name not in self.patches:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        exec_module, patch = spec.loader.exec_module, self.patches.pop(name)

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _timed(owner, name: str, totals: dict, key: str, first: dict | None = None) -> None:
    """Wrap `owner.name` so its wall time adds up in `totals[key]` (and its first return is noted in `first`)."""
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - begun
            if first is not None:
                first.setdefault(key, time.perf_counter())

    setattr(owner, name, timed)


def _instrument(totals: dict, marks: dict, streams: list, times: list, late: bool = False) -> None:
    """Time the stages of one `ask`: decoder thread (conversion, resize, waits), encoder (preprocess, model),
    model loading; note the frame times used. Light modules are patched now, the model's after their import.
    `late`: decoding starts when the encoder asks for the first batch, after the model loaded (two batches
    ahead), as before `decode_ahead` — the comparison that shows what starting early gains."""
    from videomini import video
    from videomini.video import prefetch, pyav_backend

    make_stream, make_converter = video.decode_ahead, pyav_backend.frame_converter

    def make_late(path, fps, sampling="fps", decode="exact", batch_size=16, ahead_bytes=0):
        stream = video.sample_frames(path, fps=fps, batch_size=batch_size, sampling=sampling, decode=decode,
                                     size=video.reference.REFERENCE_FRAME_SIZE, prefetch=2)
        stream.made_for = (str(path), float(fps), sampling, decode)
        return stream  # not started: the encoder's first request starts it

    make = make_late if late else make_stream
    video.decode_ahead = lambda *a, **k: streams.append(make(*a, **k)) or streams[-1]
    _timed(pyav_backend, "resize_nearest", totals, "decoder: resize to 336x336 (exact mode)")

    def frame_converter(*args, **kwargs):
        convert = make_converter(*args, **kwargs)
        holder = type("Holder", (), {"convert": staticmethod(convert)})
        _timed(holder, "convert", totals, "decoder: RGB conversion + resize")
        return holder.convert

    pyav_backend.frame_converter = frame_converter
    worker = prefetch.FrameBatches._worker

    def timed_worker(self):
        worker(self)
        marks["decoder_done"] = time.perf_counter()

    prefetch.FrameBatches._worker = timed_worker
    next_batch = prefetch.FrameBatches.__next__

    def noting(self):
        frames, stamps = next_batch(self)
        times.extend(float(t) for t in stamps)
        return frames, stamps

    prefetch.FrameBatches.__next__ = noting

    def patch_ask(module):
        ask = module.VideoMini.ask
        module.VideoMini.ask = lambda *a, **k: marks.setdefault("ask began", time.perf_counter()) and ask(*a, **k)
        inner = module.VideoMini.from_pretrained.__func__
        module.VideoMini.from_pretrained = classmethod(
            lambda cls, *a, **k: marks.setdefault("load_begun", time.perf_counter()) and inner(cls, *a, **k))
        marks["imports_done"] = time.perf_counter()

    def patch_encoder(module):
        _timed(module.FrameEncoder, "preprocess_frames", totals, "encoder: preprocess (normalise)")
        _timed(module.FrameEncoder, "encode_pixels", totals, "encoder: model (CLIP, compressor, pre-fusion)", marks)

    sys.meta_path.insert(0, _AfterImport({"videomini.ask": patch_ask, "videomini.encoder": patch_encoder}))


def ask_child(checkpoint: str, video: str, mode: str, out: str, launched: str) -> None:
    """Child process: `videomini ask` in-process (the CLI's own start: decoding begins before the model loads),
    every stage timed from `launched`, the parent's clock just before it started this process (the kernel's
    process start time is whole seconds off: /proc's boot time is rounded to the second)."""
    import contextlib
    import io

    since_start = time.time() - float(launched) - time.perf_counter()  # + perf_counter() = seconds since launch
    totals, marks, streams, times = {}, {}, [], []
    decode, _, late = mode.partition("-")
    _instrument(totals, marks, streams, times, late=bool(late))
    from videomini.cli.main import main as cli

    sys.argv = ["videomini", "ask", video, QUESTION, "--model", checkpoint, "--device", "cpu", "--decode", decode,
                "--max-new-tokens", "1", "--json"]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            cli()
    except SystemExit as done:
        if done.code:
            raise
    ended = time.perf_counter()
    answer = json.loads(printed.getvalue())
    stream = streams[0]
    at = {"decoding started": stream.started_at, "first frame decoded": stream.first_frame_at,
          "model stack imported": marks.get("imports_done"), "model loaded": marks.get("ask began"),
          "first batch encoded": marks.get("encoder: model (CLIP, compressor, pre-fusion)"),
          "decoder done": marks.get("decoder_done"), "answered": ended}
    at = {k: round(v + since_start, 3) for k, v in at.items() if v is not None}
    spent = {k: round(v, 3) for k, v in totals.items()}
    spent["decoder: waited on a full queue"] = round(stream.decoder_waited_s, 3)
    spent["encoder: waited on an empty queue"] = round(stream.consumer_waited_s, 3)
    spent["model load (from_pretrained)"] = round(marks["ask began"] - marks["load_begun"], 3)
    spent["answer (select + generate)"] = answer["timings_s"]["generate"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(out).write_text(json.dumps({"first_frame_s": at["first frame decoded"],
                                     "first_encoded_s": at["first batch encoded"], "at_s": at, "spent_s": spent,
                                     "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "times": times,
                                     "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}))


def decode_floor(video: Path, threads: int) -> float:
    """Seconds `ffmpeg -threads N -i video -f null -` takes: decoding every frame, nothing else."""
    start = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-threads", str(threads), "-i", str(video), "-f", "null", "-"],
                   check=True)
    return time.perf_counter() - start


def run_ask_child(checkpoint: Path, video: Path, mode: str) -> tuple[float, dict]:
    """One `videomini ask` in a fresh process: (wall seconds from launch to exit, the child's stage timings)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        start, launched = time.perf_counter(), time.time()
        subprocess.run([sys.executable, __file__, "--ask-child", str(checkpoint), str(video), mode, out.name,
                        repr(launched)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return time.perf_counter() - start, json.loads(Path(out.name).read_text())


def bench_floor(checkpoint: Path, videos: dict[float, Path], late: bool = False) -> list[dict]:
    """Per video: the floor, then ask in exact and fast mode (fresh processes; with `late`, also exact mode with
    decoding started only once the model has loaded, as before decode_ahead), and fast mode's frame moves."""
    import numpy as np

    from videomini.video.pyav_backend import decoder_threads

    threads, rows = decoder_threads(), []
    for minutes, video in videos.items():
        floor_s = decode_floor(video, threads)
        row: dict = {"minutes": minutes, "threads": threads, "floor_s": round(floor_s, 2)}
        times = {}
        for mode in ("exact", "fast") + (("exact-late",) if late else ()):
            wall, child = run_ask_child(checkpoint, video, mode)
            times[mode] = np.asarray(child.pop("times"))
            row[mode] = {"wall_s": round(wall, 2), "over_floor": round(wall / floor_s, 3),
                         "frames": len(times[mode]), **child}
            print(f"  {minutes:g} min {mode}: {wall:.1f} s = {wall / floor_s:.2f}x the floor ({floor_s:.1f} s), "
                  f"first frame decoded at {child['first_frame_s']:.2f} s, encoded at {child['first_encoded_s']:.2f}"
                  f" s, peak RSS {child['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
        n = min(len(times["exact"]), len(times["fast"]))
        moved = np.abs(times["exact"][:n] - times["fast"][:n])
        row["fast_moved_ms"] = {"mean": round(float(moved.mean()) * 1000, 1),
                                "max": round(float(moved.max()) * 1000, 1),
                                "frames_moved": int((moved > 1e-6).sum()), "frames": n}
        rows.append(row)
    return rows


def print_floor(console, rows: list[dict]) -> None:
    from rich.table import Table

    threads = rows[0]["threads"] if rows else "?"
    table = Table(title=f"videomini ask (golden tiny checkpoint, 1 fps) over the decode floor: ffmpeg -threads "
                        f"{threads} -f null, 640x360 30 fps H.264")
    for col in ("video", "floor s", "exact s", "exact / floor", "fast s", "fast / floor",
                "first frame decoded / encoded s (exact)", "peak RSS MB (exact)", "fast: frames moved",
                "mean / max move ms"):
        table.add_column(col, justify="right")
    for r in rows:
        e, f, m = r["exact"], r["fast"], r["fast_moved_ms"]
        table.add_row(f"{r['minutes']:g} min", f"{r['floor_s']:.1f}", f"{e['wall_s']:.1f}", f"{e['over_floor']:.2f}",
                      f"{f['wall_s']:.1f}", f"{f['over_floor']:.2f}",
                      f"{e['first_frame_s']:.2f} / {e['first_encoded_s']:.2f}", f"{e['peak_rss_mb']:.0f}",
                      f"{m['frames_moved']} / {m['frames']}", f"{m['mean']:.0f} / {m['max']:.0f}")
    console.print(table)
    for r in rows:
        print_stages(console, r)


def print_stages(console, row: dict) -> None:
    """Where one video's ask went: moments (s from launch) and time spent per stage (s), per decode mode."""
    from rich.table import Table

    modes = [m for m in ("exact", "fast", "exact-late") if m in row]
    table = Table(title=f"{row['minutes']:g} min: where the time goes (s; moments from the command's launch)")
    table.add_column("stage")
    for mode in modes:
        table.add_column(mode, justify="right")
    for section in ("at_s", "spent_s"):
        names = dict.fromkeys(name for mode in modes for name in row[mode][section])
        for name in names:
            cells = [row[mode][section].get(name) for mode in modes]
            label = f"at: {name}" if section == "at_s" else name
            table.add_row(label, *("" if c is None else f"{c:.2f}" for c in cells))
    table.add_row("process CPU (user + sys)", *(f"{row[mode]['cpu_s']:.2f}" for mode in modes))
    table.add_row("wall", *(f"{row[mode]['wall_s']:.2f}" for mode in modes))
    console.print(table)


# -------------------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes, shorter videos (a smoke run)")
    parser.add_argument("--rss-only", action="store_true", help="only part 3 (peak RSS vs video length)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--frames", type=int, default=None, help="frames encoded per batch size (default 64)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per batch size (best is kept)")
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=336, choices=(224, 336))
    parser.add_argument("--overlap-minutes", type=float, default=None, help="video length for the overlap (2)")
    parser.add_argument("--minutes", type=float, nargs="+", default=None, help="video lengths for RSS (6 60)")
    parser.add_argument("--rss-model", default="golden", help="golden, bench, or a checkpoint folder")
    parser.add_argument("--batch-size", type=int, default=16, help="ask's batch size (overlap and RSS)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "videomini-bench")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--floor", action="store_true", help="only part 4: ask's wall over the decode floor")
    parser.add_argument("--late", action="store_true", help="with --floor: also exact mode with decoding started "
                                                            "only after the model loads (the start-up comparison)")
    parser.add_argument("--child", nargs=2, metavar=("CHECKPOINT", "VIDEO"), help=argparse.SUPPRESS)
    parser.add_argument("--ask-child", nargs=5, help=argparse.SUPPRESS)
    return parser


def run_rss(args, checkpoint: Path, console) -> tuple[Path, list[dict], float | None]:
    """Part 3, run first while this process is small (see bench_rss)."""
    rss_minutes = args.minutes or ([1, 6] if args.quick else [6, 60])
    rss_checkpoint = {"golden": GOLDEN_CHECKPOINT, "bench": checkpoint}.get(args.rss_model, Path(args.rss_model))
    if args.rss_model == "bench":
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); "
                        f"import ask; ask.build_bench_checkpoint(ask.Path({str(checkpoint)!r}), "
                        f"image_size={args.image_size}, vision_layers={args.vision_layers})"], check=True)
    console.print(f"3. peak RSS of ask with {rss_checkpoint.name} for {', '.join(f'{m:g}' for m in rss_minutes)} min")
    rss = bench_rss(rss_checkpoint, {m: testsrc_video(args.cache, m) for m in rss_minutes}, args.batch_size)
    rss_ratio = round(rss[-1]["peak_rss_mb"] / rss[0]["peak_rss_mb"], 3) if len(rss) >= 2 else None
    return rss_checkpoint, rss, rss_ratio


def run_encoder(args, checkpoint: Path, console) -> tuple[str, list[dict], dict]:
    """Parts 1 and 2 on the bench model: batched encoding and the decode/encode overlap."""
    import numpy as np
    import torch

    from videomini import load_model
    from videomini.video import sample_frames

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = build_bench_checkpoint(checkpoint, image_size=args.image_size, vision_layers=args.vision_layers,
                                        vision_intermediate=1024)
    model, tokenizer, processor = load_model(checkpoint, device="cpu")
    vision = model.vision_tower.config
    config_text = (f"CLIP {vision.image_size}px/14 ({(vision.image_size // 14) ** 2} patches), width "
                   f"{vision.hidden_size}, {vision.num_hidden_layers} layers, MLP {vision.intermediate_size}; "
                   f"Llama hidden {model.llm_config.hidden_size}, {model.config.prefusion_layer_num} pre-fusion "
                   f"layers; float32, {torch.get_num_threads()} torch threads")
    console.print(f"bench model: {config_text}")
    n_frames = args.frames or (16 if args.quick else 32)
    with sample_frames(testsrc_video(args.cache, 1), fps=1, max_frames=n_frames, batch_size=n_frames) as batches:
        frames = np.concatenate([f for f, _ in batches])  # real decoded 640x360 frames
    frames = np.concatenate([frames] * -(-n_frames // len(frames)))[:n_frames]
    console.print(f"1. batching: {n_frames} frames of {frames.shape[2]}x{frames.shape[1]} per batch size")
    batch_sizes = args.batch_sizes or ([1, 4, 16] if args.quick else [1, 2, 4, 8, 16, 32])
    batching = bench_batching(model, tokenizer, processor, frames, batch_sizes, repeats=args.repeats)
    overlap_video = testsrc_video(args.cache, args.overlap_minutes or (0.5 if args.quick else 1))
    console.print(f"2. overlap on {overlap_video.name}")
    overlap = bench_overlap(model, tokenizer, processor, overlap_video, args.batch_size)
    return config_text, batching, overlap


def print_encoder(console, config_text: str, batching: list[dict], overlap: dict) -> None:
    from rich.table import Table

    best = max(batching, key=lambda r: r["frames_per_s"])
    table = Table(title="videomini ask on CPU: batched encoding (frames/s)", caption=config_text)
    for col in ("batch", "frames", "seconds", "frames/s", "× batch 1"):
        table.add_column(col, justify="right")
    for r in batching:
        table.add_row(str(r["batch_size"]), str(r["frames"]), f"{r['seconds']:.2f}", f"{r['frames_per_s']:.2f}",
                      f"{r['speedup_vs_batch1']:.2f}")
    console.print(table)
    verdict = "[green]goal met[/green]" if best["speedup_vs_batch1"] >= 2 else "[yellow]below the 2× goal[/yellow]"
    console.print(f"best: batch {best['batch_size']} = {best['speedup_vs_batch1']:.2f}× batch 1 ({verdict})")
    table = Table(title=f"decode/encode overlap: {overlap['video']}, {overlap['frames']} frames at 1 fps, "
                        f"batch {overlap['batch_size']}")
    for col in ("decode alone s", "encode alone s", "ask decode+encode s", "wall / slower", "wall / sum",
                "hidden s (of shorter)"):
        table.add_column(col, justify="right")
    table.add_row(f"{overlap['decode_s']:.2f}", f"{overlap['encode_s']:.2f}", f"{overlap['decode_encode_wall_s']:.2f}",
                  f"{overlap['wall_over_slower']:.3f}", f"{overlap['wall_over_sum']:.3f}",
                  f"{overlap['hidden_s']:.2f} ({overlap['hidden_of_shorter_stage']:.0%})")
    console.print(table)
    ok = overlap["wall_over_slower"] <= 1.15
    console.print(f"wall / slower stage = {overlap['wall_over_slower']:.3f} "
                  + ("[green](goal ≤ 1.15 met)[/green]" if ok else "[red](goal ≤ 1.15 missed)[/red]"))


def print_rss(console, rss_checkpoint: Path, rss: list[dict], rss_ratio: float | None) -> None:
    from rich.table import Table

    table = Table(title=f"ask peak RSS (fresh process each), model {rss_checkpoint.name}, 640x360 at 1 fps")
    for col in ("video", "frames", "frames used", "ask s", "peak RSS after load MB", "peak RSS MB", "VmHWM MB"):
        table.add_column(col, justify="right")
    for r in rss:
        table.add_row(f"{r['minutes']:g} min", str(r["frames"]), str(r["frames_used"]), f"{r['ask_s']:.1f}",
                      f"{r['peak_rss_after_load_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['vm_hwm_mb']:.0f}")
    console.print(table)
    if rss_ratio is not None:
        flat = "[green]flat[/green]" if rss_ratio <= 1.15 else "[red]grows[/red]"
        console.print(f"peak RSS {rss[-1]['minutes']:g} min / {rss[0]['minutes']:g} min = {rss_ratio} {flat}")


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        print(json.dumps(rss_child(args.child[0], args.child[1], args.batch_size)))
        return
    if args.ask_child:
        ask_child(*args.ask_child)
        return
    from rich.console import Console

    console = Console()
    args.cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.floor:
        minutes = args.minutes or ([1] if args.quick else [6, 60])
        rows = bench_floor(GOLDEN_CHECKPOINT, {m: testsrc_video(args.cache, m, "veryfast") for m in minutes},
                           late=args.late)
        print_floor(console, rows)
        if args.json:
            args.json.write_text(json.dumps({"floor": rows, "bench_s": round(time.perf_counter() - started, 1)},
                                            indent=2))
            console.print(f"wrote {args.json}")
        return
    checkpoint = args.cache / f"bench_llavamini_{args.image_size}px_{args.vision_layers}l"
    rss_checkpoint, rss, rss_ratio = run_rss(args, checkpoint, console)
    results: dict = {"rss": rss, "rss_ratio_long_over_short": rss_ratio}
    if not args.rss_only:
        config_text, batching, overlap = run_encoder(args, checkpoint, console)
        print_encoder(console, config_text, batching, overlap)
        best = max(batching, key=lambda r: r["frames_per_s"])
        results.update(batching=batching, best_batch=best["batch_size"], best_speedup=best["speedup_vs_batch1"],
                       overlap=overlap, model={"description": config_text, "checkpoint": str(checkpoint)})
    print_rss(console, rss_checkpoint, rss, rss_ratio)
    total_s = time.perf_counter() - started
    console.print(f"total bench time {total_s:.0f} s")
    if args.json:
        results.update(rss_checkpoint=str(rss_checkpoint), bench_s=round(total_s, 1))
        args.json.write_text(json.dumps(results, indent=2))
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
