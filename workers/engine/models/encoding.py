"""Conversations -> token ids with labels on the assistant turns only (+ pixel values)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from core.samples import IMAGE_TOKEN, EngineSample
from workers.engine.models.loading import LoadedModel

IGNORE_INDEX = -100
# Used when a tokenizer has no chat template: the LLaVA-1.5 conversation format.
_FALLBACK = {"system": "{c}\n", "user": "USER: {c}\n", "assistant": "ASSISTANT: {c}{eos}", "prompt": "ASSISTANT: "}


@dataclass(frozen=True)
class EncodedSample:
    """One encoded sample (CPU tensors, unpadded).

    Args:
        input_ids: int64[L]; image placeholders already expanded to the model's image tokens.
        labels: int64[L]; the token id on assistant-response tokens, -100 elsewhere.
        pixel_values: float[n_images, 3, H, W] or None.
    """

    id: int
    input_ids: Any
    labels: Any
    pixel_values: Any | None

    @property
    def n_response(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def strip_image_tokens(text: str) -> str:
    """Remove image placeholders entirely (with the newline LLaVA puts after them)."""
    return text.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "").strip()


def _render(tokenizer: Any, template: str | None, messages: list[dict], generation_prompt: bool, structured: bool) -> str:
    if template is None:
        eos = tokenizer.eos_token or ""
        text = "".join(_FALLBACK[m["role"]].format(c=m["content"], eos=eos) for m in messages)
        return text + (_FALLBACK["prompt"] if generation_prompt else "")
    if structured:  # templates (e.g. llava-hf's) that iterate over typed content parts
        messages = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in messages]
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
    )


@lru_cache(maxsize=32)
def _template_uses_structured_content(template: str) -> bool:
    return "['type']" in template or '["type"]' in template or ".type" in template


def chat_segments(tokenizer: Any, template: str | None, turns: list[tuple[str, str]]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, supervised) pieces.

    The assistant piece of turn k is render(turns[:k+1]) minus render(turns[:k], generation
    prompt); this needs a template whose renders are prefixes of each other, which holds for
    LLaVA, Llama-2, Vicuna and ChatML templates. Anything else is rejected rather than mislabelled.
    """
    structured = template is not None and _template_uses_structured_content(template)
    messages = [{"role": r, "content": c} for r, c in turns]
    segments: list[tuple[str, bool]] = []
    done = ""
    for k, (role, _) in enumerate(turns):
        if role != "assistant":
            continue
        prompt = _render(tokenizer, template, messages[:k], True, structured)
        full = _render(tokenizer, template, messages[: k + 1], False, structured)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("chat template is not prefix-stable; cannot locate the assistant turns")
        segments += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    rest = _render(tokenizer, template, messages, False, structured)
    if rest.startswith(done) and len(rest) > len(done):
        segments.append((rest[len(done):], False))
    return segments


def _load_images(loaded: LoadedModel, sample: EngineSample) -> tuple[Any, int]:
    """Pixel values from the model's own processor, and the image tokens each image expands to."""
    from PIL import Image

    images = []
    for path in sample.images:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    processor = loaded.processor
    out = processor(text=IMAGE_TOKEN * len(images), images=images, return_tensors="pt")
    n_tokens = int((out["input_ids"] == processor.image_token_id).sum())
    if n_tokens % len(images):
        raise ValueError(f"sample {sample.id}: processor expanded {len(images)} images into {n_tokens} tokens")
    return out["pixel_values"], n_tokens // len(images)


def encode_sample(
    loaded: LoadedModel, sample: EngineSample, text_only: bool = False, max_length: int | None = None
) -> EncodedSample:
    """Encode one conversation for `loaded`.

    Args:
        text_only: drop the images and their placeholder tokens from the prompt (IG's text-only
            pass). Causal-LM models always encode text-only.
        max_length: truncate the tail to this many tokens; an image cut in half or a sample left
            without response tokens is a ValueError.
    """
    import torch

    tokenizer = loaded.tokenizer
    use_images = sample.has_images and not text_only and loaded.model_type == "llava"
    turns = [(m.role, m.content if use_images else strip_image_tokens(m.content)) for m in sample.messages]
    template = getattr(tokenizer, "chat_template", None) or getattr(loaded.processor, "chat_template", None)
    segments = chat_segments(tokenizer, template, turns)

    pixel_values, per_image = _load_images(loaded, sample) if use_images else (None, 0)
    image_id = loaded.processor.image_token_id if use_images else None
    ids: list[int] = []
    labels: list[int] = []
    for text, supervised in segments:
        for j, piece in enumerate(text.split(IMAGE_TOKEN)):
            if j > 0:  # an image placeholder stood here
                ids += [image_id] * per_image
                labels += [IGNORE_INDEX] * per_image
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
            ids += piece_ids
            labels += piece_ids if supervised else [IGNORE_INDEX] * len(piece_ids)
    if max_length is not None and len(ids) > max_length:
        if use_images and image_id in ids[max_length:]:
            raise ValueError(f"sample {sample.id}: max_length={max_length} would cut an image")
        ids, labels = ids[:max_length], labels[:max_length]
    if all(t == IGNORE_INDEX for t in labels[1:]):  # position 0 is never predicted
        raise ValueError(f"sample {sample.id}: no assistant-response tokens to supervise")
    return EncodedSample(
        id=sample.id,
        input_ids=torch.tensor(ids, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        pixel_values=pixel_values,
    )
