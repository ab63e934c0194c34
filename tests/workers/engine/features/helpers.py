"""Slow, obvious references the feature tests compare against (batch size 1, HF's own loss)."""
from __future__ import annotations

import torch

from core.samples import EngineSample, Message
from workers.engine.features.lora_grads import lora_parameters
from workers.engine.models import collate, encode_sample


def loop_gradients(loaded, samples, layers: list[int]) -> torch.Tensor:
    """Per-sample gradients by one full backward per sample through HF's forward + loss."""
    params = [p for _, _, p in lora_parameters(loaded, layers)]
    flags = {id(p): p.requires_grad for p in loaded.model.parameters()}
    rows = []
    try:
        for p in loaded.model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        for s in samples:
            batch = collate([encode_sample(loaded, s)], loaded.tokenizer.pad_token_id)
            out = loaded.hf_model(**batch.model_inputs(), labels=batch.labels)  # mean NLL over the response
            grads = torch.autograd.grad(out.loss, params)
            rows.append(torch.cat([g.flatten() for g in grads]))
    finally:
        for p in loaded.model.parameters():
            p.requires_grad_(flags[id(p)])
    return torch.stack(rows)


def conversation(i: int, question: str, answer: str, images=()) -> EngineSample:
    return EngineSample(i, (Message("user", question), Message("assistant", answer)), tuple(images))


def mixed_samples(image_dir) -> list[EngineSample]:
    """Image, text-only, multi-image and multi-turn samples of different lengths."""
    red, blue, green = (image_dir / f"{c}.png" for c in ("red", "blue", "green"))
    return [
        conversation(10, "<image>\nWhat colour is this?", "red", [red]),
        conversation(11, "Say something nice.", "You are doing great today!"),
        conversation(12, "<image> versus <image>: which is blue?", "the second one", [red, blue]),
        EngineSample(13, (
            Message("user", "<image>\nColour?"), Message("assistant", "green"),
            Message("user", "Sure?"), Message("assistant", "yes, green"),
        ), (green,)),
        conversation(14, "2+2?", "4"),
    ]
