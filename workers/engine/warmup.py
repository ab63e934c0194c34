"""Warm-up adapter for a pool's first round (§2 step 0).

A fresh LoRA has B = 0, so every gradient w.r.t. A is zero and the features would carry no
signal; as LESS does, train briefly on a seeded random fraction of the round's data first.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

from core.samples import EngineSample
from workers.engine.models.loading import LoadedModel
from workers.engine.training import OnStep, TrainConfig, TrainStats, train_lora


def warmup_subset(samples: Sequence[EngineSample], fraction: float, seed: int) -> list[EngineSample]:
    """A seeded random subset of ceil(fraction · n) samples (at least one), in input order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"warmup fraction must be in (0, 1], got {fraction!r}")
    if not samples:
        raise ValueError("warm-up needs at least one sample")
    k = max(1, math.ceil(fraction * len(samples)))
    chosen = sorted(random.Random(seed).sample(range(len(samples)), k))
    return [samples[i] for i in chosen]


def train_warmup_adapter(
    loaded: LoadedModel,
    samples: Sequence[EngineSample],
    fraction: float = 0.05,
    seed: int = 0,
    cfg: TrainConfig | None = None,
    on_step: OnStep | None = None,
) -> TrainStats:
    """Train the (fresh) adapter of `loaded` in place on a seeded `fraction` of `samples`."""
    cfg = cfg or TrainConfig(seed=seed)
    return train_lora(loaded, warmup_subset(samples, fraction, seed), cfg, on_step=on_step)
