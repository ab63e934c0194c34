"""Pool config → engine dataclasses: every key of a fully populated PoolConfig lands in its field."""
from __future__ import annotations

import pytest

from service.pool_config import PoolConfig
from workers.rounds.config import engine_config

FULL = {
    "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "k_proj"], "layers": [0, 2], "seed": 5,
             "train_projector": True},
    "features": {"layers": [-1, -2], "proj_dim": 128, "projection_nnz": 2, "batch_size": 3, "max_length": 512,
                 "seed": 6},
    "selection": {"n_clusters": "auto", "tails": [10, 90], "n_strata": 20},
    "pruning": {"preset": "lite", "eps": 0.2, "max_pool_size": 1000, "budget_multiple": 3.5, "keep_per_cluster": 40,
                "embedding": "hidden"},
    "training": {"epochs": 2, "lr": 0.001, "batch_size": 2, "max_steps": 50, "seed": 7, "max_length": 1024,
                 "projector_lr": 2e-5},
    "shard_size": 64,
    "warmup_fraction": 0.1,
    "pool_index": True,
}


def test_every_key_converts() -> None:
    # every key of every section is set (and differs from its default), so none can be dropped silently
    config = PoolConfig.model_validate(FULL).to_json()
    defaults = PoolConfig().to_json()
    assert set(FULL) == set(defaults) and all(FULL[k] != defaults[k] for k in FULL if not isinstance(FULL[k], dict))
    for section, values in FULL.items():
        if isinstance(values, dict):
            assert set(values) == set(defaults[section]), section
            assert all(values[k] != defaults[section][k] for k in values), section
    cfg = engine_config(config)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.seed) == (4, 8, 0.1, 5)
    assert cfg.lora.target_modules == ("q_proj", "k_proj") and cfg.lora.layers == (0, 2)
    assert cfg.lora.train_projector is True
    assert (cfg.features.layers, cfg.features.proj_dim, cfg.features.batch_size) == ((-1, -2), 128, 3)
    assert cfg.features.projection_nnz == 2
    assert (cfg.features.max_length, cfg.features.seed) == (512, 6)
    assert (cfg.selection.n_clusters, cfg.selection.tails, cfg.selection.n_strata) == ("auto", (10.0, 90.0), 20)
    assert (cfg.pruning.preset, cfg.pruning.eps, cfg.pruning.max_pool_size) == ("lite", 0.2, 1000)
    assert (cfg.pruning.budget_multiple, cfg.pruning.keep_per_cluster) == (3.5, 40)
    assert cfg.pruning.embedding == "hidden" and cfg.features.hidden_embedding  # computed in the feature pass
    assert not engine_config(None).features.hidden_embedding
    assert cfg.selection.prune == cfg.pruning  # the semdedup method dedups with the pool's settings
    t = cfg.training
    assert (t.epochs, t.lr, t.batch_size, t.max_steps, t.seed, t.projector_lr) == (2, 0.001, 2, 50, 7, 2e-5)
    assert t.max_length == 1024
    assert (cfg.shard_size, cfg.warmup_fraction, cfg.pool_index) == (64, 0.1, True)
    assert engine_config(None).pool_index is False


def test_partial_config_gets_defaults_and_bad_values_name_the_field() -> None:
    cfg = engine_config({"selection": {"n_clusters": 4}})
    assert cfg.selection.n_clusters == 4 and cfg.features.proj_dim == 8192 and cfg.shard_size == 256
    with pytest.raises(ValueError, match="n_strata"):
        engine_config({"selection": {"n_strata": 0}})


def test_pool_config_defaults_are_the_engine_defaults() -> None:
    """The service fills defaults without importing the engine: the two must not drift apart."""
    from workers.engine.features import FeatureConfig
    from workers.engine.models import LoraSpec
    from workers.engine.training import TrainConfig

    from workers.engine.pruning import PruneConfig

    cfg = engine_config(None)
    assert cfg.pruning == PruneConfig() and cfg.pruning.max_pool_size is not None  # bounded by default
    assert cfg.lora == LoraSpec()
    assert cfg.features == FeatureConfig()
    for key in PoolConfig().training.model_dump():
        assert getattr(cfg.training, key) == getattr(TrainConfig(), key), key
