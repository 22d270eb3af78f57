"""Answering: frame tokens + fused question -> generated answer (streamed) + the evidence it rests on.

Evidence comes from the model's own attention: while the answer is generated, a hook keeps each layer's input
at the position that produced each answer token; afterwards the query of that position is recomputed
(input norm, q_proj, RoPE) and scored against the cached keys of the whole context, softmax-normalised as the
attention itself is, and the mass that falls on each frame's token(s) is averaged over heads, layers and
answer tokens. That is what the LLM actually looked at while answering — not a separate similarity model —
and it needs no eager attention (SDPA stays on) and no second pass over the context. When retrieval scores
exist (CLIP text vs frame embeddings), they are reported beside it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from videomini.config import MAX_NEW_TOKENS
from videomini.generation import PREFILL_CHUNK_TOKENS, generate, new_cache, prefill
from videomini.moments import moment_gap, runs
from videomini.timerefs import format_time  # noqa: F401  (re-exported: the one time format)

# The LLM stack (transformers' Llama modelling, videomini.model) is imported by the functions that generate:
# the evidence-only answers use this module's Answer / Evidence without it.

EVIDENCE_SCORE_BYTES = 64 << 20  # attention scores materialised at once by the evidence computation


@dataclass
class Evidence:
    """A moment the answer rests on: [start_s, end_s] around its best frame, and a score in [0, 1]."""

    start_s: float
    end_s: float
    time_s: float
    score: float
    method: str  # "attention" or "retrieval"
    video: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Answer:
    question: str
    text: str
    evidence: list[Evidence]
    frames_used: int
    frames_total: int
    frame_times_s: list[float]
    model: str
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    generated_by: str = "llava-mini"  # or "signals": no generative model, quoted speech / on-screen text
    context: str | None = None  # timestamped signal lines that went into the prompt
    prompt_tokens: int = 0  # LLM input positions (text + one token per frame); 0 when no model answered
    completion_tokens: int = 0  # generated ids, the stop token included

    @property
    def times(self) -> list[float]:
        return [e.time_s for e in self.evidence]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["evidence"] = [e.to_dict() for e in self.evidence]
        return out


WHEN_QUESTION = re.compile(r"^\s*(when|at what (time|point|moment)|what time|how (long|soon) until)\b", re.I)


def is_when_question(question: str) -> bool:
    return bool(WHEN_QUESTION.search(question))


class _LayerInputs:
    """Forward pre-hooks that keep, per decoder layer, the input at the last position of every call."""

    def __init__(self, layers: Any):
        self.inputs: list[list[torch.Tensor]] = [[] for _ in layers]
        self.handles = [layer.register_forward_pre_hook(self._hook(i), with_kwargs=True)
                        for i, layer in enumerate(layers)]

    def _hook(self, index: int) -> Callable:
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self.inputs[index].append(hidden[:, -1:].detach().clone())  # not a view: it would keep the whole input
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _context_keys(layer_cache: Any, length: int) -> torch.Tensor:
    """The post-RoPE keys of the first `length` positions in one layer's cache (1, kv_heads, length, d); a quantized
    cache's flushed part dequantized, as its own attention reads it."""
    keys = layer_cache.keys
    quantized = getattr(layer_cache, "_quantized_keys", None)
    if quantized is not None:
        flushed = layer_cache._dequantize(quantized)
        keys = torch.cat([flushed, keys], dim=-2) if keys.dim() == 4 and keys.shape[-2] else flushed
    return keys[:, :, :length]


@torch.inference_mode()
def attention_to_frames(llm: Any, layer_inputs: list[list[torch.Tensor]], cache: Any, prompt_len: int,
                        frame_slice: slice, tokens_per_frame: int) -> np.ndarray:
    """Mean attention mass (over layers, heads, answer tokens) from each answer token's query to each frame.

    `layer_inputs[l][s]` is layer l's input at the position that produced answer token s (step 0 = last prompt
    position, step s = position prompt_len + s - 1). Returns (n_frames,) summing to <= 1 (the rest is text).
    Queries are grouped by their KV head (no copy of the keys per head) and scored a few answer steps at a time,
    so at most EVIDENCE_SCORE_BYTES of scores exist at once, however many frames the context holds.
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    layers = llm.model.layers
    steps = len(layer_inputs[0])
    if steps == 0:
        return np.zeros((frame_slice.stop - frame_slice.start) // tokens_per_frame)
    context = prompt_len - 1 + steps
    positions = torch.arange(prompt_len - 1, context, device=llm.device)
    heads = llm.config.num_attention_heads
    steps_per_pass = max(1, EVIDENCE_SCORE_BYTES // (heads * context * 4))
    total = torch.zeros(frame_slice.stop - frame_slice.start, dtype=torch.float32, device=llm.device)
    for index, layer in enumerate(layers):
        attn = layer.self_attn
        hidden = torch.cat(layer_inputs[index], dim=1)  # (1, steps, H)
        query = attn.q_proj(layer.input_layernorm(hidden)).view(1, steps, heads, attn.head_dim).transpose(1, 2)
        cos, sin = llm.model.rotary_emb(hidden, positions.unsqueeze(0))
        query, _ = apply_rotary_pos_emb(query, query, cos, sin)  # (1, heads, steps, d)
        keys = _context_keys(cache.layers[index], context).to(query.dtype)  # (1, kv_heads, K, d)
        kv_heads = keys.shape[1]
        for start in range(0, steps, steps_per_pass):
            part = query[:, :, start: start + steps_per_pass]  # heads are grouped by KV head, as repeat_kv orders them
            grouped = part.reshape(1, kv_heads, -1, attn.head_dim)  # (1, kv_heads, groups * n, d)
            scores = (grouped @ keys.transpose(-1, -2)).float() * attn.scaling
            causal = torch.arange(context, device=keys.device)[None, :] > positions[start: start + part.shape[2], None]
            scores = scores.view(1, kv_heads, -1, part.shape[2], context).masked_fill(causal, float("-inf"))
            total += scores.softmax(-1)[..., frame_slice].sum(dim=(0, 1, 2, 3))
    per_token = (total / (len(layers) * heads * steps)).cpu().numpy()
    return per_token.reshape(-1, tokens_per_frame).sum(-1)


def moments_from_scores(times_s: np.ndarray, scores: np.ndarray, top_k: int, method: str, spacing_s: float,
                        video: str | None = None, peak: float | None = None) -> list[Evidence]:
    """Top-k frames by score, neighbours within one frame spacing merged into [start, end] moments; scores are
    divided by `peak` (default: the best score here, which then reads 1.0)."""
    if len(scores) == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    peak = peak or float(scores[order[0]]) or 1.0
    chosen = order[:top_k]
    evidence = []
    for run in runs(times_s[chosen], moment_gap(spacing_s)):
        group = [int(chosen[i]) for i in run]
        best = max(group, key=lambda i: scores[i])
        evidence.append(Evidence(start_s=float(times_s[group[0]]), end_s=float(times_s[group[-1]] + spacing_s),
                                 time_s=float(times_s[best]), score=round(float(scores[best]) / peak, 4),
                                 method=method, video=video))
    return sorted(evidence, key=lambda e: -e.score)


class Generator:
    """Greedy or sampled generation with the checkpoint's stop tokens, streamed token by token, recording what
    the evidence needs (layer inputs at the answering positions, and the KV cache)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer

    def stream(self, inputs_embeds: torch.Tensor, max_new_tokens: int = MAX_NEW_TOKENS, do_sample: bool = False,
               temperature: float = 0.7, top_p: float = 0.9, record_attention: bool = True,
               kv_cache: str | None = None, prefill_chunk_tokens: int = PREFILL_CHUNK_TOKENS) -> Iterator[str]:
        """Yield text pieces as they are generated; afterwards `self.result` holds ids, cache and layer inputs.

        The prompt is prefilled in chunks before the layer inputs are recorded, so the recorder sees only the
        positions that produce answer tokens."""
        from transformers import TextIteratorStreamer

        from videomini.prompting import stop_token_ids

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True,
                                        clean_up_tokenization_spaces=False)
        cache = prefill(self.model, inputs_embeds, new_cache(self.model, kv_cache), prefill_chunk_tokens)
        recorder = _LayerInputs(self.model.llm.model.layers) if record_attention else None
        self.result: dict[str, Any] = {}
        errors: list[BaseException] = []
        sampling = dict(temperature=temperature, top_p=top_p) if do_sample else {}

        def run() -> None:
            try:
                out = generate(self.model, inputs_embeds=inputs_embeds, max_new_tokens=max_new_tokens,
                               do_sample=do_sample, eos_token_id=stop_token_ids(self.model, self.tokenizer),
                               streamer=streamer, return_dict_in_generate=True, cache=cache,
                               prefill_chunk_tokens=prefill_chunk_tokens, **sampling)
                self.result = {"ids": out.sequences, "cache": cache}
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, name="videomini-generate", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            thread.join()
            if recorder is not None:
                recorder.remove()
                self.result["layer_inputs"] = recorder.inputs
        if errors:
            raise errors[0]


@dataclass
class ChosenFrames:
    """The frames given to the LLM: their tokens, times, the spacing of a moment around each, and the video."""

    tokens: torch.Tensor
    times_s: np.ndarray
    spacing_s: float
    video: str


@dataclass
class Generated:
    """What the LLM said and how much attention each frame received while it said it."""

    text: str
    frame_scores: np.ndarray  # (n_frames,) mean attention mass per frame (see `attention_to_frames`)
    token_ids: list[int] = field(default_factory=list)  # the generated ids (stop token included)
    prompt_tokens: int = 0  # positions the LLM read before answering: the prompt with the frames in its slot


def generate_with_evidence(model: Any, tokenizer: Any, input_ids: torch.Tensor, fused_text: torch.Tensor,
                           frame_tokens: torch.Tensor, max_new_tokens: int = MAX_NEW_TOKENS, do_sample: bool = False,
                           on_token: Callable[[str], None] | None = None, kv_cache: str | None = None,
                           prefill_chunk_tokens: int = PREFILL_CHUNK_TOKENS) -> Generated:
    """The one answering path: the fused question (L, H) with its <image> slot replaced by the chosen frames'
    tokens (T, C*C, H) -> chunked prefill -> generated answer (streamed to `on_token`) -> each frame's attention
    mass. `kv_cache` "int8" / "int4" quantizes the KV cache (transformers' QuantizedCache)."""
    inputs_embeds = model.build_inputs_embeds(input_ids, fused_text, frame_tokens)
    generator = Generator(model, tokenizer)
    pieces = []
    for piece in generator.stream(inputs_embeds, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                  kv_cache=kv_cache, prefill_chunk_tokens=prefill_chunk_tokens):
        pieces.append(piece)
        if on_token:
            on_token(piece)
    from videomini.model import image_slot

    slot = image_slot(input_ids)
    frames, tokens_per_frame = frame_tokens.shape[0], frame_tokens.shape[1]
    scores = attention_to_frames(model.llm, generator.result.get("layer_inputs", [[]]),
                                 generator.result.get("cache"), inputs_embeds.shape[1],
                                 slice(slot, slot + frames * tokens_per_frame), tokens_per_frame)
    ids = generator.result.get("ids")
    return Generated("".join(pieces).strip(), scores, [] if ids is None else ids[0].tolist(),
                     prompt_tokens=int(inputs_embeds.shape[1]))
