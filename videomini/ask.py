"""`VideoMini`: one video (or image) of any length -> an answer and the moments it rests on; and the core of
asking a whole indexed library.

ask: decode (streamed, 1 fps, prefetch thread) -> encode in batches (one CLIP pass: frame token + CLIP embedding,
text fused per frame while streaming, running float32 sum) -> frame memory -> select frames within the budget
(time references in the question, CLIP relevance, uniform coverage) -> the one answering path
(`answer.generate_with_evidence`: LLM, answer streamed, evidence from its attention to the frame tokens). No frame
is kept after it is encoded, so memory does not grow with the video's length beyond one token per frame.

ask_library: retrieve the best moments across the library, re-decode their frames, fuse the question with them
and answer on the same path; the evidence cites (video, time). Which model, and when speech / on-screen text
answer instead, is the job's policy (`videomini.ask_policy`), not decided here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videomini.answer import (
    Answer,
    ChosenFrames,
    Evidence,
    format_time,
    generate_with_evidence,
    is_when_question,
    moments_from_scores,
)
from videomini.config import BATCH_SIZE, AskConfig, configured
from videomini.encoder import FrameEncoder, threads_beside_decoder
from videomini.errors import VideominiError
from videomini.frame_memory import FrameMemory
from videomini.generation import check_kv_cache
from videomini.loading import default_model_id, load_model
from videomini.model import FusedText
from videomini.planner import device_memory, plan_for_model
from videomini.prompting import encode_question
from videomini.retrieval import load_text_tower
from videomini.selection import select_frames
from videomini.storage import LibraryError, LibraryStore
from videomini.timerefs import parse_time_references
from videomini.video import (
    IMAGE_EXTENSIONS,
    DecodeError,
    FrameBatches,
    NotAVideo,
    VideoNotFound,
    decode_ahead,
    probe,
    read_frames_at,
)

__all__ = ["VideoMini", "ask_library", "NoStoredFrames", "IMAGE_EXTENSIONS"]
LIBRARY_MOMENTS_PER_VIDEO = 3  # evidence moments cited per video in a library answer
ProgressFn = Callable[[str, int, int | None], None]  # (stage, done, total)
TokenFn = Callable[[str], None]


class NoStoredFrames(VideominiError):
    """The moments found lie in videos indexed without frames: only their stored text can answer."""
    http_status = 409


class VideoMini:
    """The Python API: `VideoMini.from_pretrained(id_or_path).ask(path, question) -> Answer`."""

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, batch_size: int = BATCH_SIZE,
                 retrieval: bool = True, kv_cache: str | None = None):
        self.model = model
        self.kv_cache = kv_cache  # None (the model's dtype), "int8" or "int4": transformers' quantized cache
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.encoder = FrameEncoder(model, image_processor, batch_size=batch_size)
        self.text_tower = load_text_tower(getattr(model, "vision_tower_dir", None), model.device) if retrieval else None
        self.model_id = getattr(model, "name_or_path", "llava-mini")

    @classmethod
    def from_pretrained(cls, id_or_path: str | os.PathLike | None = None, device: str | None = None,
                        dtype: str | None = None, vision_tower: str | None = None, batch_size: int = BATCH_SIZE,
                        quantize: str | None = None, kv_cache: str | None = None) -> VideoMini:
        """Load a checkpoint; `quantize` ("int8", "nf4") the LLM's weights, `kv_cache` ("int8", "int4") its cache."""
        check_kv_cache(kv_cache)
        loaded = load_model(id_or_path or default_model_id(), device=device, dtype=dtype, vision_tower=vision_tower,
                            quantize=quantize)
        return cls(*loaded, batch_size=batch_size, kv_cache=kv_cache)

    def watch(self, source: str, **options: Any) -> Any:
        """Watch a live source (file, URL, /dev/videoN, "-") while it plays: a `videomini.live.LiveSession` with
        `ask`, `alerts`, `status` and `close`; `options` are `videomini.live.WatchOptions` fields."""
        from videomini.live import WatchOptions, watch

        on_event, on_piece = options.pop("on_event", None), options.pop("on_piece", None)
        return watch(self, source, WatchOptions(**options), on_event=on_event, on_piece=on_piece)

    # -- budget ---------------------------------------------------------------------------------------------
    def frame_budget(self, prompt_tokens: int, answer_tokens: int) -> int:
        """Frames that fit: the planner's min(memory after weights, context after the prompt)."""
        plan = plan_for_model(self.model, device_memory(self.model.device), prompt_tokens=prompt_tokens,
                              answer_tokens=answer_tokens, kv_cache=self.kv_cache)
        return max(1, plan.max_frames)

    # -- ask ------------------------------------------------------------------------------------------------
    def ask(self, path: str | os.PathLike, question: str, config: AskConfig | None = None, *,
            on_progress: ProgressFn | None = None, on_token: TokenFn | None = None, context: str | None = None,
            frames: FrameBatches | None = None, **overrides: Any) -> Answer:
        """Answer `question` about the video or image at `path`, as `config` (and keyword `overrides` of its
        fields: fps, max_frames, max_new_tokens, fusion, sampling ...) says.

        fusion="all" fuses the question with every sampled frame while streaming (one pass; the reference's
        computation when every frame fits); "selected" re-decodes the selected frames and fuses over them only.
        `context` (timestamped speech / on-screen text lines) goes into the prompt; it must be known before the
        frames stream, since the prompt is fused with every frame. `sampling="reference"` takes the official
        evaluation's frames (segment centres) instead of the frame on screen at k/fps (`video.sample_frames`).
        `decode="fast"` lets the decoder skip frames nobody samples (the evidence gives the frame times used).
        `frames`: the stream `video.decode_ahead(path, fps, sampling, decode)` started earlier (before the model
        loaded, so decoding overlapped it); then the timings count from when decoding started.
        """
        config = configured(config, AskConfig, overrides)
        started = time.perf_counter()
        path = Path(path)
        frames = self._checked_frames(frames, path, config)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            input_ids = encode_question(self.tokenizer, question, context).to(self.model.device)
            return self._ask_image(path, question, input_ids, config, on_token, started)
        if frames is None:  # nothing else to overlap with: two batches ahead of the encoder are enough
            frames = decode_ahead(path, config.fps, config.sampling, config.decode, self.encoder.batch_size, 0)
        started = min(started, frames.started_at or started)  # decoding may have begun before the model loaded
        try:
            input_ids = encode_question(self.tokenizer, question, context).to(self.model.device)
            info = frames.info or probe(path)  # sample_frames probed it already
            budget = self.frame_budget(input_ids.shape[1], config.max_new_tokens)
        except BaseException:
            frames.close()
            raise
        budget = min(budget, config.max_frames) if config.max_frames is not None else budget
        fps = config.fps
        expected = max(1, int(math.floor(info.duration_s * fps)) + 1) if info.duration_s else None
        memory, fused, first_encoded_at = self._encode_video(path, frames, input_ids, expected, on_progress)
        encoded_at = time.perf_counter()
        duration_s = info.duration_s or float(memory.timestamps_s[-1]) + 1 / fps
        selected, notes = self._select(memory, question, budget, duration_s)
        times = memory.timestamps_s[selected]
        if config.fusion == "selected" and len(selected) < len(memory):
            fused = FusedText()
            self._encode_at(path, times, input_ids, fused)
        chosen = ChosenFrames(memory.tokens_at(selected), times, 1.0 / fps, str(path))
        answer = self._answer(question, input_ids, fused, chosen, config, on_token)
        for moment in answer.evidence:  # the last frame's moment ends with the video, not a spacing after it
            moment.end_s = min(moment.end_s, max(duration_s, moment.time_s))
        answer.frames_total = len(memory)
        if context:
            notes.append(f"prompt context: {len(context.splitlines())} timestamped lines of speech/on-screen text")
        answer.context = context
        answer.notes = notes + answer.notes
        answer.timings_s = {"first_frame": round((frames.first_frame_at or encoded_at) - started, 3),
                            "first_encoded": round(first_encoded_at - started, 3),
                            "decode_encode": round(encoded_at - started, 3),
                            "generate": round(time.perf_counter() - encoded_at, 3),
                            "total": round(time.perf_counter() - started, 3)}
        return answer

    def ask_frames(self, frames: np.ndarray, question: str, timestamps_s: np.ndarray | None = None,
                   config: AskConfig | None = None, *, on_token: TokenFn | None = None, video: str = "frames",
                   **overrides: Any) -> Answer:
        """Answer about decoded frames of ONE video, (N, H, W, 3) uint8 in time order (as an evaluation harness
        sends them): one token per frame, the question fused with every frame — `ask`'s path after decoding.
        `timestamps_s` (default 0, 1, 2 ... s) date the evidence; more frames than fit are spread uniformly."""
        config = configured(config, AskConfig, overrides)
        started = time.perf_counter()
        times = np.arange(len(frames), dtype=np.float64) if timestamps_s is None else np.asarray(timestamps_s, float)
        if len(frames) == 0 or len(times) != len(frames):
            raise ValueError(f"{len(frames)} frames and {len(times)} timestamps: give one timestamp per frame")
        input_ids = encode_question(self.tokenizer, question).to(self.model.device)
        budget = self.frame_budget(input_ids.shape[1], config.max_new_tokens)
        keep = np.unique(np.linspace(0, len(frames) - 1, min(budget, len(frames))).round().astype(int))
        fused, tokens = FusedText(), []
        for start in range(0, len(keep), self.encoder.batch_size):
            batch = keep[start: start + self.encoder.batch_size]
            encoded = self.encoder.encode(frames[batch], times[batch], input_ids)
            tokens.append(encoded.frame_tokens)
            fused.add(encoded.fused_text_sum, len(batch))
        spacing = float(np.median(np.diff(times[keep]))) if len(keep) > 1 else 1.0
        chosen = ChosenFrames(torch.cat(tokens), times[keep], spacing, video)
        answer = self._answer(question, input_ids, fused, chosen, config, on_token)
        answer.frames_total = len(frames)
        if len(keep) < len(frames):
            answer.notes.append(f"{len(frames)} frames given, {len(keep)} fit the budget (uniform coverage)")
        answer.timings_s = {"total": round(time.perf_counter() - started, 3)}
        return answer

    @staticmethod
    def _checked_frames(frames: FrameBatches | None, path: Path, config: AskConfig) -> FrameBatches | None:
        """The stream given, after checking it was made for this question's video and sampling; an image's is
        closed (it is not used)."""
        if frames is None:
            return None
        wanted = (str(path), float(config.fps), config.sampling, config.decode)
        if frames.made_for == wanted and path.suffix.lower() not in IMAGE_EXTENSIONS:
            return frames
        frames.close()
        if frames.made_for != wanted:
            raise ValueError(f"frames were decoded for {frames.made_for}, the question asks for {wanted}: "
                             "make them with video.decode_ahead(path, fps, sampling, decode)")
        return None

    def _encode_video(self, path: Path, batches: FrameBatches, input_ids: torch.Tensor, expected: int | None,
                      on_progress: ProgressFn | None) -> tuple[FrameMemory, FusedText, float]:
        """Stream every sampled frame through the encoder once: frame tokens into memory, fused text summed.
        Frames come squashed to the tower's input by the decoder's thread; also returns when the first batch
        was encoded."""
        memory, fused = FrameMemory(), FusedText()
        first_encoded_at = None
        try:
            with threads_beside_decoder(self.model.device):
                for encoded in self.encoder.encode_stream(batches, input_ids):
                    first_encoded_at = first_encoded_at or time.perf_counter()
                    memory.append(encoded.frame_tokens, encoded.timestamps_s, encoded.clip_embeddings)
                    fused.add(encoded.fused_text_sum, len(encoded.timestamps_s))
                    if on_progress:
                        on_progress("encode", len(memory), expected)
        finally:
            batches.close()
        if len(memory) == 0 or first_encoded_at is None:
            raise DecodeError(path, "no frames could be decoded")
        return memory, fused, first_encoded_at

    def _select(self, memory: FrameMemory, question: str, budget: int,
                duration_s: float) -> tuple[np.ndarray, list[str]]:
        """The frames the LLM sees, and notes that say why (time references, relevance, coverage)."""
        timestamps, count = memory.timestamps_s, len(memory)
        relevance = None
        if self.text_tower is not None and memory.embeddings is not None and count > budget:
            relevance = memory.relevance(self.text_tower.embed(question)[0])
        windows = parse_time_references(question, duration_s)
        in_windows = sum(int(((timestamps >= a) & (timestamps <= b)).sum()) for a, b in windows)
        selected = select_frames(timestamps, min(budget, in_windows) if in_windows else budget, windows=windows,
                                 relevance=relevance)
        notes = []
        if in_windows:
            spans = ", ".join(f"{a:.0f}-{b:.0f}s" for a, b in windows)
            notes.append(f"the question refers to {spans}: {len(selected)} frames from there")
        elif len(selected) < count:
            how = "question relevance + uniform coverage" if relevance is not None else "uniform coverage"
            notes.append(f"{count} frames sampled, {len(selected)} fit the budget ({how})")
        return selected, notes

    def _encode_at(self, path: str | Path, times_s: np.ndarray, input_ids: torch.Tensor,
                   fused: FusedText) -> tuple[list[torch.Tensor], np.ndarray]:
        """Re-decode the frames at `times_s`, fuse the question with them: (frame tokens per batch, frame times)."""
        frames, frame_times = read_frames_at(path, times_s)
        frame_times, first = np.unique(frame_times, return_index=True)  # two times on one frame: that frame once
        frames = frames[first]
        tokens = []
        for start in range(0, len(frames), self.encoder.batch_size):
            stop = start + self.encoder.batch_size
            encoded = self.encoder.encode(frames[start:stop], frame_times[start:stop], input_ids)
            tokens.append(encoded.frame_tokens)
            fused.add(encoded.fused_text_sum, len(encoded.timestamps_s))
        return tokens, frame_times

    def _ask_image(self, path: Path, question: str, input_ids: torch.Tensor, config: AskConfig,
                   on_token: TokenFn | None, started: float) -> Answer:
        from PIL import Image, UnidentifiedImageError

        if not path.is_file():
            raise VideoNotFound(path, "no such file")
        try:
            with Image.open(path) as image:
                pixel_values = self.encoder.preprocess_image(image)
        except (UnidentifiedImageError, OSError) as e:
            raise NotAVideo(path, f"not a readable image ({type(e).__name__})") from None
        encoded = self.encoder.encode_pixels(pixel_values, np.zeros(1), input_ids)
        fused = FusedText()
        fused.add(encoded.fused_text_sum, 1)
        chosen = ChosenFrames(encoded.frame_tokens, np.zeros(1), 0.0, str(path))
        one_moment = configured(config, AskConfig, {"top_k_evidence": 1})
        answer = self._answer(question, input_ids, fused, chosen, one_moment, on_token)
        answer.timings_s = {"total": round(time.perf_counter() - started, 3)}
        return answer

    def _answer(self, question: str, input_ids: torch.Tensor, fused: FusedText, chosen: ChosenFrames,
                config: AskConfig, on_token: TokenFn | None) -> Answer:
        generated = self._generate(input_ids, fused, chosen.tokens, config.max_new_tokens, config.do_sample,
                                   on_token)
        times_s = chosen.times_s
        evidence = moments_from_scores(times_s, generated.frame_scores, config.top_k_evidence, "attention",
                                       chosen.spacing_s, video=chosen.video)
        notes = []
        if is_when_question(question) and evidence:
            notes.append("when: " + ", ".join(format_time(e.time_s) for e in evidence[:3]))
        return Answer(question=question, text=generated.text, evidence=evidence, frames_used=len(times_s),
                      frames_total=len(times_s), frame_times_s=[round(float(t), 3) for t in times_s],
                      model=self.model_id, notes=notes, prompt_tokens=generated.prompt_tokens,
                      completion_tokens=len(generated.token_ids))

    def _generate(self, input_ids: torch.Tensor, fused: FusedText, frame_tokens: torch.Tensor,
                  max_new_tokens: int, do_sample: bool = False, on_token: TokenFn | None = None):
        device, dtype = self.model.device, self.model.dtype
        return generate_with_evidence(self.model, self.tokenizer, input_ids, fused.mean(device, dtype),
                                      frame_tokens.to(device), max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      on_token=on_token, kv_cache=self.kv_cache)


# ---------------------------------------------------------------------------------------------------------
# Asking a library: retrieved moments -> their stored frames -> the same answering path
# ---------------------------------------------------------------------------------------------------------


def _frames_for_moments(library: Any, found: list, max_frames: int) -> tuple[dict[str, set[float]], dict]:
    """Per video, the stored frame times inside the moments found (at most `max_frames` in all, the best frame
    of each moment kept); and each video's catalog row."""
    per_moment = max(1, max_frames // len(found))
    rows = {m.video: library.video(m.video) for m in found}
    stored_times = {video: library.frame_times(row["id"]) for video, row in rows.items()
                    if row and row["n_frames"]}
    chosen: dict[str, set[float]] = {}
    for moment in found:
        if moment.video not in stored_times:
            continue  # indexed without frames (signals only): its text is quoted, it gives no frames
        stored = stored_times[moment.video]
        inside = stored[(stored >= moment.start_s - 1e-6) & (stored <= moment.end_s + 1e-6)]
        if len(inside) == 0:  # a text moment between stored frames: the nearest frame
            inside = stored[[int(np.argmin(np.abs(stored - moment.best_s)))]]
        if len(inside) > per_moment:  # keep the best frame and spread the rest over the moment
            spread = inside[np.linspace(0, len(inside) - 1, per_moment - 1).astype(int)]
            inside = np.unique(np.concatenate([[moment.best_s], spread]))
        chosen.setdefault(moment.video, set()).update(float(t) for t in inside)
    return chosen, rows


QuoteFn = Callable[[list, list[float]], str]  # (text segments, frame times) -> timestamped prompt lines


def _quoted_context(library: Any, found: list, rows: dict, chosen: dict[str, set[float]],
                    quote: QuoteFn) -> str | None:
    """Stored speech / on-screen text near the chosen frames, as timestamped prompt lines (named by video when
    several videos answer)."""
    from videomini.signals import TextSegment

    lines: list[str] = []
    for video in dict.fromkeys(m.video for m in found):
        if not rows[video] or not rows[video]["signals"]:
            continue
        segments = [TextSegment(d["start_s"], d["end_s"], d["text"], d["source"])
                    for d in library.segments(rows[video]["id"])]
        times = sorted(chosen.get(video) or [m.best_s for m in found if m.video == video])
        video_lines = quote(segments, times).splitlines()
        lines += [line.replace("[", f"[{Path(video).name} ", 1) for line in video_lines] if len(rows) > 1 \
            else video_lines
    return "\n".join(lines) or None


def _library_evidence(videos: list[str], times_s: np.ndarray, scores: np.ndarray) -> list[Evidence]:
    """The best moments of each video, scored against the best frame over all videos."""
    video_of = np.array(videos)
    evidence = []
    for video in dict.fromkeys(videos):
        mask = video_of == video
        evidence += moments_from_scores(times_s[mask], scores[mask], LIBRARY_MOMENTS_PER_VIDEO, "attention", 1.0,
                                        video=video, peak=float(scores.max()) or 1.0)
    return sorted(evidence, key=lambda e: -e.score)


def ask_library(vm: VideoMini, library_dir: str | os.PathLike, question: str, found: list,
                config: AskConfig | None = None, on_token: TokenFn | None = None, quote: QuoteFn | None = None,
                notes: list[str] | None = None) -> Answer:
    """Answer over the moments `found` in a library (best first; each with video, start_s, end_s, best_s, as the
    library search returns them): their stored frames re-decoded, the question fused with them, LLaVA-Mini's
    answer citing (video, time). `quote` formats stored speech / on-screen text near the chosen frames into
    timestamped prompt lines (None: nothing quoted). Raises NoStoredFrames when no moment has stored frames."""
    config = config or AskConfig()
    started = time.perf_counter()
    notes = notes if notes is not None else []
    if not found:
        raise LibraryError(f"{library_dir}: nothing indexed to answer from")
    with LibraryStore(library_dir) as library:
        chosen, rows = _frames_for_moments(library, found, config.library_max_frames)
        context = _quoted_context(library, found, rows, chosen, quote) if quote else None
    if not chosen:
        raise NoStoredFrames(f"{library_dir}: the moments found have no stored frames (indexed with --no-visual)")
    input_ids = encode_question(vm.tokenizer, question, context).to(vm.model.device)
    fused, tokens, videos, times = FusedText(), [], [], []
    for video in dict.fromkeys(m.video for m in found if m.video in chosen):  # in order of their best moment
        video_tokens, frame_times = vm._encode_at(video, np.array(sorted(chosen[video])), input_ids, fused)
        tokens += video_tokens
        videos += [video] * len(frame_times)
        times.append(frame_times)
    encoded_at = time.perf_counter()
    generated = vm._generate(input_ids, fused, torch.cat(tokens), config.max_new_tokens, on_token=on_token)
    all_times = np.concatenate(times)
    evidence = _library_evidence(videos, all_times, generated.frame_scores)[:config.top_k]
    for moment in evidence:  # a video's last moment ends with the video
        duration_s = (rows.get(moment.video) or {}).get("duration_s")
        moment.end_s = min(moment.end_s, max(duration_s, moment.time_s)) if duration_s else moment.end_s
    notes.append(f"retrieved {len(found)} moments from {len({m.video for m in found})} videos")
    return Answer(question=question, text=generated.text,
                  evidence=evidence,
                  frames_used=fused.count, frames_total=fused.count,
                  frame_times_s=[round(float(t), 3) for t in all_times], model=vm.model_id, notes=notes,
                  context=context, prompt_tokens=generated.prompt_tokens,
                  completion_tokens=len(generated.token_ids),
                  timings_s={"retrieve_encode": round(encoded_at - started, 3),
                             "generate": round(time.perf_counter() - encoded_at, 3),
                             "total": round(time.perf_counter() - started, 3)})
