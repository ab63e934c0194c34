"""A pool's stored config (`pools.config`) → the engine's typed dataclasses.

`service.pool_config` validates the JSON and fills defaults; its section keys are the dataclasses'
own field names, so each section becomes `Cls(**section)` (lists become the tuples they expect).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.config import Settings
from service.pool_config import parse_pool_config
from workers.engine.features import FeatureConfig
from workers.engine.models import LoraSpec, ModelSpec
from workers.engine.pruning import PruneConfig
from workers.engine.selection import SelectionConfig
from workers.engine.training import TrainConfig


@dataclass(frozen=True)
class RoundEngineConfig:
    """Everything the stages of a round need from the pool's config."""

    lora: LoraSpec
    features: FeatureConfig
    selection: SelectionConfig
    pruning: PruneConfig
    training: TrainConfig
    shard_size: int
    warmup_fraction: float
    pool_index: bool = False

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size!r}")
        if not 0 < self.warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must be in (0, 1], got {self.warmup_fraction!r}")


def _tuples(section: dict[str, Any], *keys: str) -> dict[str, Any]:
    out = dict(section)
    for key in keys:
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
    return out


def engine_config(raw: dict[str, Any] | None) -> RoundEngineConfig:
    """Build the engine dataclasses from a stored (or partial) pool config; raises on bad values."""
    cfg = parse_pool_config(raw).to_json()
    pruning = PruneConfig(**cfg["pruning"])
    return RoundEngineConfig(
        lora=LoraSpec(**_tuples(cfg["lora"], "target_modules", "layers")),
        # the pruning embedding is computed in the feature pass
        features=FeatureConfig(**_tuples(cfg["features"], "layers"), hidden_embedding=pruning.embedding == "hidden"),
        # the `semdedup` method sets samples aside with the pool's own dedup settings (on the gradients)
        selection=SelectionConfig(**_tuples(cfg["selection"], "tails"), prune=pruning),
        pruning=pruning,
        training=TrainConfig(**cfg["training"]),
        shard_size=int(cfg["shard_size"]),
        warmup_fraction=float(cfg["warmup_fraction"]),
        pool_index=bool(cfg["pool_index"]),
    )


def model_spec(base_model: str, model_type: str, settings: Settings) -> ModelSpec:
    """The pool's base model, on the worker's configured device."""
    return ModelSpec(
        base_model=base_model,
        model_type=model_type,
        allow_download=settings.allow_model_downloads,
        device=settings.device,
        preset_cache=str(settings.preset_dir),
    )
