"""Per-sample gradient features and scores (§2 step 2), and their on-disk shards."""
from workers.engine.features.compute import FeatureEngine, compute_features
from workers.engine.features.config import SCORE_NAMES, FeatureBatch, FeatureConfig
from workers.engine.features.projection import SparseJLProjector
from workers.engine.features.shards import read_shard, read_shard_meta, write_shard

__all__ = [
    "SCORE_NAMES", "FeatureBatch", "FeatureConfig", "FeatureEngine", "SparseJLProjector",
    "compute_features", "read_shard", "read_shard_meta", "write_shard",
]
