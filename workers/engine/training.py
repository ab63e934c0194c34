"""Continue the loaded LoRA adapter on a list of samples (§2 step 7)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from core.samples import EngineSample
from workers.engine.features.scores import gather_response, token_nll
from workers.engine.models.batching import collate, token_groups
from workers.engine.models.encoding import IGNORE_INDEX, EncodedSample, encode_sample
from workers.engine.models.loading import LoadedModel


@dataclass(frozen=True)
class TrainStep:
    """What `train_lora` reports after each optimizer step.

    Args:
        step: 1-based optimizer steps done; total: the steps of the run.
        loss: the step's batch loss (mean response-token NLL).
        lr: the learning rate the step used (the LoRA factors' group).
        epoch: passes over the samples so far, fractional (step / steps per epoch).
    """

    step: int
    total: int
    loss: float
    lr: float
    epoch: float


OnStep = Callable[[TrainStep], None]


@dataclass(frozen=True)
class TrainConfig:
    """LoRA fine-tuning hyper-parameters (LLaVA-1.5 LoRA recipe defaults, scaled for small runs).

    Args:
        max_steps: stop after this many optimizer steps (None: `epochs` full passes).
        warmup_ratio: fraction of steps with a linear LR ramp; then linear decay to 0.
        grad_clip: max global grad norm (None disables).
        max_length: tokens kept per sample (tail-truncated; None: all), and the padded tokens a
            micro-batch may hold (a batch over it trains as micro-batches, same gradient).
        projector_lr: learning rate of a projector trained in full (`LoraSpec.train_projector`;
            LLaVA's `mm_projector_lr`); None uses `lr`.
    """

    epochs: int = 1
    lr: float = 2e-4
    batch_size: int = 4
    max_steps: int | None = None
    seed: int = 0
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    grad_clip: float | None = 1.0
    max_length: int | None = 4096
    projector_lr: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be a positive int, got {self.epochs!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be a positive int, got {self.batch_size!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"TrainConfig.max_steps must be None or a positive int, got {self.max_steps!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"TrainConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.projector_lr is not None and not self.projector_lr > 0:
            raise ValueError(f"TrainConfig.projector_lr must be None or > 0, got {self.projector_lr!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be None or > 0, got {self.grad_clip!r}")


@dataclass(frozen=True)
class TrainStats:
    steps: int
    loss_first: float
    loss_last: float
    mean_loss: float
    seconds: float = 0.0  # wall time of the training loop


def _batch_backward(loaded: LoadedModel, samples: Sequence[EngineSample], cfg: TrainConfig) -> float:
    """Backpropagate the mean NLL over all response tokens of the batch (the LLaVA training
    objective) and return it.

    A batch whose padded size would pass `cfg.max_length` tokens (one long sample among short
    ones) runs as micro-batches of similar lengths (`token_groups`), each backpropagating its
    share (its NLL sum / the batch's response tokens): the same loss and gradient, up to float
    rounding, without padding the short samples to the long one. A batch that fits runs whole.
    """
    encoded = [encode_sample(loaded, s, max_length=cfg.max_length) for s in samples]
    groups = token_groups([len(e.input_ids) for e in encoded], cfg.max_length)
    total = sum(int((e.labels[1:] != IGNORE_INDEX).sum()) for e in encoded)  # what gather_response keeps
    loss = 0.0
    for group in groups:
        nll = _response_nll(loaded, [encoded[i] for i in group])
        part = nll.mean() if len(groups) == 1 else nll.sum() / total
        part.backward()
        loss += float(part.detach())
    return loss


def _response_nll(loaded: LoadedModel, encoded: Sequence[EncodedSample]) -> Any:
    """Per-token NLL of the response tokens of one padded batch, float32[N]."""
    batch = collate(encoded, loaded.tokenizer.pad_token_id).to(loaded.device, loaded.dtype)
    hf = loaded.hf_model
    hidden = hf.base_model(**batch.model_inputs(), use_cache=False).last_hidden_state
    tokens = gather_response(hidden, batch.labels)
    return token_nll(hf.get_output_embeddings()(tokens.hidden), tokens.targets)


def train_lora(
    loaded: LoadedModel, samples: Sequence[EngineSample], cfg: TrainConfig, on_step: OnStep | None = None
) -> TrainStats:
    """Train the LoRA weights of `loaded` in place (the base stays frozen; a projector set to be
    trained in full is trained too).

    `on_step(TrainStep)` runs after every optimizer step; raising from it cancels training (the
    adapter keeps the steps done so far). The learning rate warms up linearly over
    `warmup_ratio` of the steps, then decays linearly to 0 (transformers' schedule).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    if not samples:
        raise ValueError("train_lora needs at least one sample")
    model = loaded.model
    # the LoRA factors, and a projector trained in full (PEFT's modules_to_save copy) if any
    factors = [p for n, p in model.named_parameters() if "lora_" in n]
    projector = [p for n, p in model.named_parameters() if ".modules_to_save." in n]
    lora = factors + projector
    if not factors:
        raise ValueError("the loaded model has no LoRA parameters to train")
    flags = {id(p): p.requires_grad for p in model.parameters()}
    per_epoch = math.ceil(len(samples) / cfg.batch_size)
    total = min(cfg.max_steps or per_epoch * cfg.epochs, per_epoch * cfg.epochs)
    warmup = int(cfg.warmup_ratio * total)
    groups = [{"params": factors}] + ([{"params": projector, "lr": cfg.projector_lr or cfg.lr}] if projector else [])
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # HF Trainer's linear schedule. It equals the LambdaLR written here before except in warm-up,
    # which starts at lr 0, not lr/(warmup+1): the same where warm-up rounds to 0 steps (under 34
    # steps at the default warmup_ratio 0.03).
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    start = time.perf_counter()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in lora:
            p.requires_grad_(True)
        model.train()
        step = 0
        while step < total:
            order = torch.randperm(len(samples), generator=generator).tolist()
            for k in range(0, len(order), cfg.batch_size):
                if step >= total:
                    break
                optimizer.zero_grad(set_to_none=True)
                loss = _batch_backward(loaded, [samples[i] for i in order[k: k + cfg.batch_size]], cfg)
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(lora, cfg.grad_clip)
                lr = float(schedule.get_last_lr()[0])  # the rate this step uses
                optimizer.step()
                schedule.step()
                step += 1
                losses.append(loss)
                if on_step is not None:
                    on_step(TrainStep(step, total, losses[-1], lr, step / per_epoch))
    finally:
        optimizer.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
        model.eval()
    return TrainStats(steps=len(losses), loss_first=losses[0], loss_last=losses[-1], mean_loss=sum(losses) / len(losses),
                      seconds=round(time.perf_counter() - start, 3))
