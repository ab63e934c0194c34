"""LLaVA's stage 1 for `smol-llava`: train the projector alone on image captions.

The language model and the vision tower are frozen; the projector learns to map the tower's
grid tokens into the LM's embedding space, as LLaVA-1.5 does on CC3M captions before any
instruction tuning. The captions come from `workers/engine/models/stamps.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AlignConfig:
    """Stage-1 recipe. The defaults take 13 to 14 minutes on a 2-core CPU (about 5 s a step)."""

    steps: int = 150
    batch_size: int = 8
    lr: float = 2e-3
    warmup_ratio: float = 0.05
    eval_fraction: float = 0.1  # captions held out to report the loss before and after
    max_eval: int = 48
    seed: int = 0


def _mean_loss(model: Any, batches: list[Any]) -> float:
    import torch

    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            out = model(**batch.model_inputs(), labels=batch.labels)
            n = int((batch.labels[:, 1:] != -100).sum())
            total, tokens = total + float(out.loss) * n, tokens + n
    return total / max(tokens, 1)


def align_projector(model: Any, processor: Any, samples: list[Any], cfg: AlignConfig,
                    source: str = "Tux Paint stamps (English first lines)", device: str = "cpu") -> dict[str, Any]:
    """Train `model.multi_modal_projector` on `samples` (image, caption); everything else frozen.

    Runs on `device` and leaves the model there. Returns the recipe and the held-out caption loss
    (nats per token) before and after.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from workers.engine.models.batching import collate
    from workers.engine.models.encoding import encode_sample
    from workers.engine.models.loading import LoadedModel
    from workers.engine.models.specs import ModelSpec

    if len(samples) < 2:
        raise ValueError(f"stage-1 alignment needs at least 2 captioned images, got {len(samples)}")
    model.to(device)
    view = LoadedModel(model, processor.tokenizer, processor, torch.device(device), torch.float32, "llava",
                       ModelSpec("smol-llava"))
    encoded = [encode_sample(view, s) for s in samples]
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(encoded))
    n_eval = min(cfg.max_eval, max(1, int(len(encoded) * cfg.eval_fraction)))
    held, train = [encoded[i] for i in order[:n_eval]], [encoded[i] for i in order[n_eval:]]
    pad = processor.tokenizer.pad_token_id
    eval_batches = [collate(held[i:i + cfg.batch_size], pad).to(device, torch.float32)
                    for i in range(0, len(held), cfg.batch_size)]

    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.model.multi_modal_projector.parameters())
    for p in params:
        p.requires_grad_(True)
    model.eval()  # no dropout anywhere; only the projector's weights move
    before = _mean_loss(model, eval_batches)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * cfg.steps), cfg.steps)
    losses, epoch = [], rng.permutation(len(train)).tolist()
    bar = tqdm(range(cfg.steps), desc="stage-1 alignment", unit="step", disable=cfg.steps < 20)
    for _ in bar:
        if len(epoch) < cfg.batch_size:
            epoch += rng.permutation(len(train)).tolist()
        picks, epoch = epoch[:cfg.batch_size], epoch[cfg.batch_size:]
        batch = collate([train[i] for i in picks], pad).to(device, torch.float32)
        loss = model(**batch.model_inputs(), labels=batch.labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    for p in params:
        p.requires_grad_(False)
    after = _mean_loss(model, eval_batches)
    return {"captions": source, "device": str(device), "train_samples": len(train),
            "eval_samples": len(held), "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
            "eval_loss_before": round(before, 4), "eval_loss_after": round(after, 4),
            "train_loss_first_10": round(float(np.mean(losses[:10])), 4),
            "train_loss_last_10": round(float(np.mean(losses[-10:])), 4)}
