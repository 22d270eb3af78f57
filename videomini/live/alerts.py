"""Standing questions: a yes/no read from the model's own next-token probabilities of the answer words (not from
parsing generated text), and a debounced state that emits an event when the answer changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

YES_WORDS = ("Yes", "yes", "YES")
NO_WORDS = ("No", "no", "NO")
ANSWER_INSTRUCTION = "Answer yes or no."


def answer_word_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The first token of each spelling of yes and of no (a tokenizer that splits a word is read by its first
    piece); a token both words start with is dropped, since it decides nothing."""
    def first_ids(words: tuple[str, ...]) -> set[int]:
        return {ids[0] for ids in (tokenizer.encode(w, add_special_tokens=False) for w in words) if ids}

    yes, no = first_ids(YES_WORDS), first_ids(NO_WORDS)
    shared = yes & no
    if not yes - shared or not no - shared:
        raise ValueError("the tokenizer gives yes and no the same first token: no yes/no can be read")
    return sorted(yes - shared), sorted(no - shared)


@torch.inference_mode()
def yes_probability(model: Any, input_ids: torch.Tensor, fused_text: torch.Tensor, frame_tokens: torch.Tensor,
                    yes_ids: list[int], no_ids: list[int]) -> float:
    """P(yes) / (P(yes) + P(no)) of the model's first answer token, over the same input the answering path
    builds (`build_inputs_embeds`: the fused question with the frame tokens in its <image> slot)."""
    embeds = model.build_inputs_embeds(input_ids, fused_text, frame_tokens.to(model.device)).to(model.dtype)
    logits = model.llm(inputs_embeds=embeds, logits_to_keep=1, use_cache=False).logits[0, -1].float()
    probs = logits.softmax(-1)
    yes, no = float(probs[yes_ids].sum()), float(probs[no_ids].sum())
    return yes / (yes + no) if yes + no > 0 else 0.5


@dataclass
class StandingQuestion:
    """One `--alert` question. The state starts at "no"; a different answer must hold for `debounce` evaluations
    in a row before it becomes the state, and each change of state is one event."""

    question: str
    debounce: int = 2
    answer: bool = False
    p_yes: float | None = None
    evaluations: int = 0
    changes: int = 0
    _streak: int = field(default=0, repr=False)

    @property
    def prompt(self) -> str:
        return f"{self.question.strip()} {ANSWER_INSTRUCTION}"

    def update(self, p_yes: float) -> bool:
        """Record one evaluation; True when the debounced answer changed with it."""
        self.evaluations += 1
        self.p_yes = p_yes
        if (p_yes > 0.5) == self.answer:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak < self.debounce:
            return False
        self.answer, self._streak = not self.answer, 0
        self.changes += 1
        return True
