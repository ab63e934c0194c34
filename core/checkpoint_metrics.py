"""A checkpoint's metrics: how its adapter trained, and how it scored on the pool's evaluation sets.

{"train": {steps, final_loss, mean_loss, loss_first, loss_last, seconds, samples ...} or None,
 "eval": {skill: {accuracy, loss, n}} or None (the pool had no evaluation sets)}.
Rows written before this shape held the training numbers alone; `checkpoint_metrics` reads both.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.skill_scores import pool_by_skill


def checkpoint_metrics(train: dict[str, Any] | None, eval_results: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The metrics of a checkpoint from its training stats and its (skill, scores) per evaluation set."""
    train = dict(train) if train else None
    if train is not None and "final_loss" not in train and "loss_last" in train:
        train["final_loss"] = train["loss_last"]
    return {"train": train, "eval": pool_by_skill(eval_results) or None}


def read_checkpoint_metrics(stored: dict[str, Any] | None, eval_results: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """A stored checkpoints.metrics in the current shape (an older row's training numbers are
    wrapped, its evaluation taken from `eval_results`); None when there is nothing to show."""
    if isinstance(stored, dict) and set(stored) == {"train", "eval"}:
        return stored
    out = checkpoint_metrics(stored, eval_results)
    return out if out["train"] is not None or out["eval"] is not None else None
