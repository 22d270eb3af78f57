"""Prompts exactly as the reference builds them: the checkpoint's chat template, the LLaVA system prompt, and
`<image>` -> the placeholder id -200 (the slot the frame tokens replace)."""

from __future__ import annotations

from typing import Any

import torch

from videomini.limits import check_question_tokens
from videomini.model import IMAGE_TOKEN_INDEX

IMAGE_TOKEN = "<image>"
SYSTEM_PROMPT = ("You are a helpful language and vision assistant. You are able to understand the visual content that "
                 "the user provides, and assist the user with a variety of tasks using natural language.")


def build_prompt(tokenizer: Any, question: str, context: str | None = None, system_prompt: str = SYSTEM_PROMPT) -> str:
    """The chat-template text for one user turn `"<image>\\n" + question`, ending with the assistant header.

    `context` (timestamped speech / on-screen text lines) goes between the image and the question.
    """
    if IMAGE_TOKEN in question:
        user = question
    else:
        user = f"{IMAGE_TOKEN}\n" + (f"{context.strip()}\n" if context else "") + question
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_with_image(prompt: str, tokenizer: Any) -> torch.Tensor:
    """Split on `<image>`, tokenize each chunk, keep the first chunk's BOS once, join with -200 -> (1, L) int64.

    Like the reference, a template that already starts with BOS ends up with BOS twice (template + tokenizer).
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    offset = 1 if chunks and chunks[0] and chunks[0][0] == bos else 0
    ids: list[int] = [chunks[0][0]] if offset else []
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return torch.tensor([ids], dtype=torch.long)


def encode_question(tokenizer: Any, question: str, context: str | None = None) -> torch.Tensor:
    """Question -> input_ids (1, L) with exactly one -200 slot; a question over QUESTION_MAX_TOKENS is refused
    here, before it is fused with any frame."""
    check_question_tokens(len(tokenizer(question, add_special_tokens=False)["input_ids"]))
    return tokenize_with_image(build_prompt(tokenizer, question, context), tokenizer)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The checkpoint's stop tokens: generation_config's eos ids (Llama-3: <|end_of_text|>, <|eom_id|>, <|eot_id|>)."""
    eos = model.llm.generation_config.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
