"""Score a checkpoint on held-out evaluation sets (DESIGN §7): response loss and exact match.

Loss is the mean over samples of the per-sample mean NLL over assistant-response tokens (the same
encoding as features and training). Accuracy is exact match of the greedy generation against the
last assistant turn, after `normalize_answer`, and only for short reference answers: open-ended
answers cannot be exact-matched, so a skill without short answers gets accuracy None.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from core.samples import EngineSample
from workers.engine.models import IGNORE_INDEX, EncodedSample, LoadedModel, collate, encode_sample
from workers.engine.models.batching import token_groups

_TRAILING_PUNCT = ".,;:!?\"'`)]}"
_LEADING_PUNCT = "\"'`([{"


@dataclass(frozen=True)
class EvalSet:
    """A held-out dataset tagged with the skill it measures."""

    name: str
    skill: str
    samples: list[EngineSample]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(f"EvalSet.name must be non-empty, got {self.name!r}")
        if not self.skill:
            raise ValueError(f"EvalSet.skill must be non-empty, got {self.skill!r}")
        if not self.samples:
            raise ValueError(f"EvalSet.samples of {self.name!r} is empty")


def normalize_answer(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding quotes/brackets and trailing punctuation."""
    text = re.sub(r"\s+", " ", text).strip().lower()
    return text.rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT).strip()


def reference_answer(sample: EngineSample) -> str:
    """The last assistant turn: the answer generation is compared with."""
    return next(m.content for m in reversed(sample.messages) if m.role == "assistant")


def is_short_answer(answer: str, max_words: int) -> bool:
    """Exact match is meaningful for answers of at most `max_words` words (and not for empty ones)."""
    n = len(normalize_answer(answer).split())
    return 1 <= n <= max_words


def _prompt_of(enc: EncodedSample) -> EncodedSample:
    """The encoded conversation cut right before the last supervised span (the last answer)."""
    supervised = (enc.labels != IGNORE_INDEX).tolist()
    end = max(i for i, s in enumerate(supervised) if s)
    start = end
    while start > 0 and supervised[start - 1]:
        start -= 1
    ids = enc.input_ids[:start]
    return EncodedSample(enc.id, ids, ids.new_full(ids.shape, IGNORE_INDEX), enc.pixel_values)


def _in_groups(items: Sequence[EncodedSample], batch_size: int, token_budget: int | None, run) -> list:  # noqa: ANN001
    """`run(group)` over batches of `batch_size`, each split into micro-batches whose padded size
    stays within `token_budget` tokens (`token_groups`); per-sample results back in input order.

    Padding one long sample into a batch of short ones is what costs memory (the attention
    scores are built for the whole padded batch), so evaluation, like features and training,
    runs such a batch as micro-batches of similar lengths; each sample's result does not depend
    on its batch beyond float noise.
    """
    out: list = [None] * len(items)
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        for group in token_groups([len(e.input_ids) for e in chunk], token_budget):
            for k, value in zip(group, run([chunk[k] for k in group])):
                out[i + k] = value
    return out


def response_losses(loaded: LoadedModel, encoded: Sequence[EncodedSample], batch_size: int,
                    token_budget: int | None = None) -> list[float]:
    """Per-sample mean NLL over response tokens, in input order. Right padding, no grad."""
    import torch
    import torch.nn.functional as F

    pad = loaded.tokenizer.pad_token_id

    def losses(group: list[EncodedSample]) -> list[float]:
        batch = collate(group, pad, "right").to(loaded.device, loaded.dtype)
        logits = loaded.model(**batch.model_inputs()).logits[:, :-1].float()
        targets = batch.labels[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        mask = (targets != IGNORE_INDEX).float()
        return (nll.sum(1) / mask.sum(1).clamp(min=1)).tolist()

    with torch.no_grad():
        return _in_groups(encoded, batch_size, token_budget, losses)


def generate_answers(
    loaded: LoadedModel, prompts: Sequence[EncodedSample], max_new_tokens: int, batch_size: int,
    token_budget: int | None = None,
) -> list[str]:
    """Greedy continuation of each encoded prompt, decoded without special tokens. Left padding."""
    tok = loaded.tokenizer

    def answers(group: list[EncodedSample]) -> list[str]:
        batch = collate(group, tok.pad_token_id, "left").to(loaded.device, loaded.dtype)
        inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        if batch.pixel_values is not None:
            inputs["pixel_values"] = batch.pixel_values
        gen = loaded.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        return tok.batch_decode(gen[:, batch.input_ids.shape[1] :], skip_special_tokens=True)

    return _in_groups(prompts, batch_size, token_budget, answers)


def evaluate(
    loaded: LoadedModel,
    eval_sets: Sequence[EvalSet],
    max_new_tokens: int = 16,
    batch_size: int = 16,
    max_answer_words: int = 3,
    token_budget: int | None = 4096,
) -> dict[str, dict[str, Any]]:
    """Loss and exact-match accuracy per skill (eval sets of the same skill are pooled).

    Args:
        loaded: the model with its current adapter; left in the train/eval mode it came in.
        eval_sets: held-out sets; llava models get pixel values through their processor.
        max_new_tokens: generation length cap; an answer longer than this cannot match.
        batch_size: samples per forward pass (results do not depend on it beyond float noise).
        max_answer_words: references with more words get no accuracy, only loss.
        token_budget: the padded tokens one forward pass may hold; a batch over it runs as
            micro-batches of similar lengths (None: whole batches).

    Returns:
        {skill: {"loss": float, "accuracy": float | None, "n": int, "n_scored": int}}, where
        n is the number of samples and n_scored the number with a short reference answer.
    """
    import torch

    if max_new_tokens < 1 or batch_size < 1 or max_answer_words < 1:
        raise ValueError(
            f"max_new_tokens, batch_size, max_answer_words must be >= 1, got "
            f"{max_new_tokens!r}, {batch_size!r}, {max_answer_words!r}"
        )
    by_skill: dict[str, list[EngineSample]] = defaultdict(list)
    for es in eval_sets:
        by_skill[es.skill].extend(es.samples)

    was_training = loaded.model.training
    loaded.model.eval()
    results: dict[str, dict[str, Any]] = {}
    try:
        with torch.inference_mode():
            for skill, samples in by_skill.items():
                encoded = [encode_sample(loaded, s) for s in samples]
                losses = response_losses(loaded, encoded, batch_size, token_budget)
                short = [k for k, s in enumerate(samples) if is_short_answer(reference_answer(s), max_answer_words)]
                accuracy = None
                if short:
                    prompts = [_prompt_of(encoded[k]) for k in short]
                    answers = generate_answers(loaded, prompts, max_new_tokens, batch_size, token_budget)
                    hits = [
                        normalize_answer(a) == normalize_answer(reference_answer(samples[k]))
                        for a, k in zip(answers, short)
                    ]
                    accuracy = sum(hits) / len(hits)
                results[skill] = {
                    "loss": sum(losses) / len(losses),
                    "accuracy": accuracy,
                    "n": len(samples),
                    "n_scored": len(short),
                }
    finally:
        loaded.model.train(was_training)
    return results
