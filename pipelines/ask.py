"""`ask`: one video (or image) of any length -> an answer and the moments it rests on.

decode (streamed, 1 fps, prefetch thread) -> encode in batches (one CLIP pass: frame token + CLIP embedding,
text fused per frame while streaming, running float32 sum) -> frame memory -> select frames within the budget
(time references in the question, CLIP relevance, uniform coverage) -> LLM -> answer streamed -> evidence from
the LLM's attention to the frame tokens. No frame is kept after it is encoded, so memory does not grow with the
video's length beyond one token per frame.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from videomini.answer import Answer, Evidence, Generator, attention_to_frames, is_when_question, moments_from_scores
from videomini.encoder import FrameEncoder
from videomini.loading import DEFAULT_MODEL_ID, load_model
from videomini.memory import FrameMemory, device_memory, parse_time_references, plan_memory, select_frames
from videomini.prompting import encode_question
from videomini.retrieval import load_text_tower
from videomini.video import probe, read_frames_at, sample_frames

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ProgressFn = Callable[[str, int, int | None], None]  # (stage, done, total)


def default_model_id() -> str:
    return os.environ.get("VIDEOMINI_MODEL") or DEFAULT_MODEL_ID


class VideoMini:
    """The Python API: `VideoMini.from_pretrained(id_or_path).ask(path, question) -> Answer`."""

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, batch_size: int = 16,
                 retrieval: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.encoder = FrameEncoder(model, image_processor, batch_size=batch_size)
        self.text_tower = load_text_tower(getattr(model, "vision_tower_dir", None), model.device) if retrieval else None
        self.model_id = getattr(model, "name_or_path", "llava-mini")

    @classmethod
    def from_pretrained(cls, id_or_path: str | os.PathLike | None = None, device: str | None = None,
                        dtype: str | None = None, vision_tower: str | None = None, batch_size: int = 16) -> "VideoMini":
        loaded = load_model(id_or_path or default_model_id(), device=device, dtype=dtype, vision_tower=vision_tower)
        return cls(*loaded, batch_size=batch_size)

    # -- budget ---------------------------------------------------------------------------------------------
    def frame_budget(self, prompt_tokens: int, answer_tokens: int) -> int:
        """Frames that fit: the planner's min(memory after weights, context after the prompt)."""
        model = self.model
        config = dict(model.llm_config.to_dict())
        config.update({k: v for k, v in vars(model.config).items() if v is not None})
        config["model_type"] = "llava_mini_llama"
        dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[model.dtype]
        vision = model.vision_tower.config.to_dict()
        plan = plan_memory(config, device_memory(model.device), dtype=dtype, prompt_tokens=prompt_tokens,
                           answer_tokens=answer_tokens, vision_config=vision)
        return max(1, plan.max_frames)

    # -- ask ------------------------------------------------------------------------------------------------
    def ask(self, path: str | os.PathLike, question: str, fps: float = 1.0, max_frames: int | None = None,
            max_new_tokens: int = 256, do_sample: bool = False, fusion: str = "all", top_k_evidence: int = 5,
            on_progress: ProgressFn | None = None, on_token: Callable[[str], None] | None = None,
            context: str | None = None, signals: tuple[str, ...] = (), sampling: str = "fps") -> Answer:
        """Answer `question` about the video or image at `path`.

        fusion="all" fuses the question with every sampled frame while streaming (one pass; the reference's
        computation when every frame fits); "selected" re-decodes the selected frames and fuses over them only.
        `signals` ("speech", "ocr") are extracted first and go into the prompt as timestamped lines (`context`):
        the prompt is fused with every frame, so it must be known before the frames stream.
        `sampling="reference"` takes the official evaluation's frames (segment centres) instead of the frame on
        screen at k/fps (`videomini.video.sample_frames`).
        """
        if fusion not in ("all", "selected"):
            raise ValueError(f"fusion must be 'all' or 'selected', not {fusion!r}")
        started = time.perf_counter()
        path = Path(path)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            input_ids = encode_question(self.tokenizer, question, context).to(self.model.device)
            return self._ask_image(path, question, input_ids, max_new_tokens, do_sample, on_token, started)
        info = probe(path)
        if signals:
            from videomini.pipelines.signals_answer import extract_signals, signal_context

            if on_progress:
                on_progress("signals", 0, None)
            segments = extract_signals(path, signals=signals, ocr_fps=fps)
            grid = np.arange(0.0, max(info.duration_s, 1e-3), 1.0 / fps)
            lines = signal_context(segments, grid, window_s=1.0 / fps)
            context = "\n".join(filter(None, [context, lines])) or None
        input_ids = encode_question(self.tokenizer, question, context).to(self.model.device)
        expected = max(1, int(math.floor(info.duration_s * fps)) + 1) if info.duration_s else None
        budget = self.frame_budget(input_ids.shape[1], max_new_tokens)
        if max_frames is not None:
            budget = min(budget, max_frames)

        memory, text_sum, count = FrameMemory(), None, 0
        batches = sample_frames(path, fps=fps, batch_size=self.encoder.batch_size, sampling=sampling)
        try:
            for encoded in self.encoder.encode_stream(batches, input_ids):
                memory.append(encoded.frame_tokens, encoded.timestamps_s, encoded.clip_embeddings)
                batch_sum = encoded.fused_text_sum
                text_sum = batch_sum if text_sum is None else text_sum + batch_sum
                count += len(encoded.timestamps_s)
                if on_progress:
                    on_progress("encode", count, expected)
        finally:
            batches.close()
        if count == 0:
            from videomini.video import DecodeError

            raise DecodeError(path, "no frames could be decoded")
        encoded_at = time.perf_counter()

        timestamps = memory.timestamps_s
        notes: list[str] = []
        relevance = None
        if self.text_tower is not None and memory.embeddings is not None and count > budget:
            relevance = memory.relevance(self.text_tower.embed(question)[0])
        windows = parse_time_references(question, info.duration_s or float(timestamps[-1]) + 1 / fps)
        in_windows = sum(int(((timestamps >= a) & (timestamps <= b)).sum()) for a, b in windows)
        effective_budget = min(budget, in_windows) if in_windows else budget
        selected = select_frames(timestamps, effective_budget, question=question,
                                 duration_s=info.duration_s, relevance=relevance)
        if in_windows:
            spans = ", ".join(f"{a:.0f}-{b:.0f}s" for a, b in windows)
            notes.append(f"the question refers to {spans}: {len(selected)} frames from there")
        if len(selected) < count and not in_windows:
            how = "question relevance + uniform coverage" if relevance is not None else "uniform coverage"
            notes.append(f"{count} frames sampled, {len(selected)} fit the budget ({how})")

        if fusion == "selected" and len(selected) < count:
            frames, _ = read_frames_at(path, timestamps[selected])
            text_sum, fused_count = None, 0
            for start in range(0, len(frames), self.encoder.batch_size):
                part = self.encoder.encode(frames[start: start + self.encoder.batch_size],
                                           timestamps[selected][start: start + self.encoder.batch_size], input_ids)
                text_sum = part.fused_text_sum if text_sum is None else text_sum + part.fused_text_sum
                fused_count += len(part.timestamps_s)
            count_for_mean = fused_count
        else:
            count_for_mean = count
        fused_text = (text_sum / count_for_mean).to(self.model.device, self.model.dtype)
        frame_tokens = memory.tokens_at(selected).to(self.model.device)
        spacing = 1.0 / fps
        answer = self._generate(question, input_ids, fused_text, frame_tokens, timestamps[selected], spacing,
                                max_new_tokens, do_sample, top_k_evidence, on_token, str(path))
        answer.frames_total = count
        if context:
            notes.append(f"prompt context: {len(context.splitlines())} timestamped lines of speech/on-screen text")
        answer.context = context
        answer.notes = notes + answer.notes
        answer.timings_s = {"decode_encode": round(encoded_at - started, 3),
                            "generate": round(time.perf_counter() - encoded_at, 3),
                            "total": round(time.perf_counter() - started, 3)}
        return answer

    def _ask_image(self, path: Path, question: str, input_ids: torch.Tensor, max_new_tokens: int, do_sample: bool,
                   on_token: Callable[[str], None] | None, started: float) -> Answer:
        from PIL import Image, UnidentifiedImageError

        from videomini.video import NotAVideo, VideoNotFound

        if not path.is_file():
            raise VideoNotFound(path, "no such file")
        try:
            with Image.open(path) as image:
                pixel_values = self.encoder.preprocess_image(image)
        except (UnidentifiedImageError, OSError) as e:
            raise NotAVideo(path, f"not a readable image ({type(e).__name__})") from None
        encoded = self.encoder.encode_pixels(pixel_values, np.zeros(1), input_ids)
        fused_text = encoded.fused_text_sum.to(self.model.device, self.model.dtype)
        answer = self._generate(question, input_ids, fused_text, encoded.frame_tokens.to(self.model.device),
                                np.zeros(1), 0.0, max_new_tokens, do_sample, 1, on_token, str(path))
        answer.frames_total = 1
        answer.timings_s = {"total": round(time.perf_counter() - started, 3)}
        return answer

    def _generate(self, question: str, input_ids: torch.Tensor, fused_text: torch.Tensor, frame_tokens: torch.Tensor,
                  times_s: np.ndarray, spacing_s: float, max_new_tokens: int, do_sample: bool, top_k: int,
                  on_token: Callable[[str], None] | None, video: str) -> Answer:
        inputs_embeds = self.model.build_inputs_embeds(input_ids, fused_text, frame_tokens)
        generator = Generator(self.model, self.tokenizer)
        pieces = []
        for piece in generator.stream(inputs_embeds, max_new_tokens=max_new_tokens, do_sample=do_sample):
            pieces.append(piece)
            if on_token:
                on_token(piece)
        text = "".join(pieces).strip()
        slot = int((input_ids[0] == -200).nonzero()[0])
        n_tokens = frame_tokens.shape[0] * frame_tokens.shape[1]
        scores = attention_to_frames(self.model.llm, generator.result.get("layer_inputs", [[]]),
                                     generator.result.get("cache"), inputs_embeds.shape[1],
                                     slice(slot, slot + n_tokens), frame_tokens.shape[1])
        evidence = moments_from_scores(times_s, scores, top_k, "attention", spacing_s, video=video)
        notes = []
        if is_when_question(question) and evidence:
            from videomini.answer import format_time

            notes.append("when: " + ", ".join(format_time(e.time_s) for e in evidence[:3]))
        return Answer(question=question, text=text, evidence=evidence, frames_used=int(frame_tokens.shape[0]),
                      frames_total=int(frame_tokens.shape[0]), frame_times_s=[round(float(t), 3) for t in times_s],
                      model=self.model_id, notes=notes)
