"""Feature-pass configuration and its result type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.engine_defaults import PROJECTION_NNZ
from core.registry import EXPERTS
from workers.engine.features.projection import BLOCK_COORDS, VERSION

SCORE_NAMES = EXPERTS  # one score per expert


@dataclass(frozen=True)
class FeatureConfig:
    """How per-sample gradient features are computed.

    Args:
        layers: "last" or decoder-layer indices (negative counts from the end) whose LoRA
            gradients form the feature; backward stops at the lowest of them.
        proj_dim: output dimension of the sparse JL projection.
        projection_nnz: non-zeros per gradient coordinate in that projection (see projection.py);
            must divide proj_dim.
        seed: seeds the projection matrix.
        batch_size: samples per forward/backward pass.
        max_length: token limit per sample (tail-truncated), None for no limit; a batch whose
            padding would pass it runs as micro-batches of similar lengths (same results).
        padding_side: "right" or "left"; results do not depend on it.
        sort_by_length: batch samples of similar length together (less padding); output order
            is always the input order.
        hidden_embedding: also return each sample's mean-pooled last hidden state (over its
            tokens, from the same forward pass): the embedding the paper's released code can
            deduplicate on instead of the gradients (`pruning.embedding: "hidden"`).
    """

    layers: str | tuple[int, ...] = "last"
    proj_dim: int = 8192
    projection_nnz: int = PROJECTION_NNZ
    seed: int = 0
    batch_size: int = 8
    max_length: int | None = 4096
    padding_side: str = "right"
    sort_by_length: bool = True
    hidden_embedding: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.layers, str):
            if self.layers != "last":
                raise ValueError(f"FeatureConfig.layers must be 'last' or a list of ints, got {self.layers!r}")
        else:
            layers = tuple(self.layers)
            if not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
                raise ValueError(f"FeatureConfig.layers must be 'last' or a non-empty list of ints, got {self.layers!r}")
            object.__setattr__(self, "layers", layers)
        if not isinstance(self.proj_dim, int) or self.proj_dim < 1:
            raise ValueError(f"FeatureConfig.proj_dim must be a positive int, got {self.proj_dim!r}")
        if (not isinstance(self.projection_nnz, int) or self.projection_nnz < 1
                or self.proj_dim % self.projection_nnz):
            raise ValueError(f"FeatureConfig.projection_nnz must be a positive int dividing proj_dim ({self.proj_dim}), "
                             f"got {self.projection_nnz!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"FeatureConfig.batch_size must be a positive int, got {self.batch_size!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"FeatureConfig.max_length must be None or an int >= 2, got {self.max_length!r}")
        if not isinstance(self.hidden_embedding, bool):
            raise ValueError(f"FeatureConfig.hidden_embedding must be a bool, got {self.hidden_embedding!r}")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"FeatureConfig.padding_side must be 'right' or 'left', got {self.padding_side!r}")

    def resolve_layers(self, num_layers: int) -> list[int]:
        """Sorted, non-negative layer indices for a decoder with `num_layers` layers."""
        if self.layers == "last":
            return [num_layers - 1]
        resolved = sorted({i + num_layers if i < 0 else i for i in self.layers})
        if resolved[0] < 0 or resolved[-1] >= num_layers:
            raise ValueError(f"FeatureConfig.layers {self.layers!r} out of range for {num_layers} decoder layers")
        return resolved

    def fingerprint(self) -> dict[str, Any]:
        """What makes two feature sets comparable (stored in shards, checked on resume)."""
        out = {"layers": self.layers if isinstance(self.layers, str) else list(self.layers),
               "proj_dim": self.proj_dim, "projection": f"{VERSION}/{BLOCK_COORDS}",
               "projection_nnz": self.projection_nnz,
               "seed": self.seed, "max_length": self.max_length}
        if self.hidden_embedding:  # only when on: shards of configs without it keep their fingerprint
            out["hidden_embedding"] = True
        return out


@dataclass
class FeatureBatch:
    """Features and scores of n samples, in input order.

    Args:
        ids: int64[n] sample ids.
        features: float16[n, proj_dim] projected gradients.
        scores: float32[n] per name in SCORE_NAMES; `ig` is NaN where it is null (text-only).
        hidden: float16[n, hidden size] mean-pooled last hidden states, or None.
    """

    ids: np.ndarray
    features: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    hidden: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise ValueError(f"FeatureBatch.features must be [n={n}, proj_dim], got {self.features.shape}")
        if set(self.scores) != set(SCORE_NAMES):
            raise ValueError(f"FeatureBatch.scores must have keys {SCORE_NAMES}, got {sorted(self.scores)}")
        if any(v.shape != (n,) for v in self.scores.values()):
            raise ValueError(f"FeatureBatch.scores must be [n={n}] arrays")
        if self.hidden is not None and (self.hidden.ndim != 2 or self.hidden.shape[0] != n):
            raise ValueError(f"FeatureBatch.hidden must be None or [n={n}, hidden size], got {self.hidden.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def concat(parts: list["FeatureBatch"]) -> "FeatureBatch":
        if not parts:
            raise ValueError("FeatureBatch.concat needs at least one part")
        with_hidden = {p.hidden is not None for p in parts}
        if len(with_hidden) != 1:
            raise ValueError("FeatureBatch.concat: some parts have hidden embeddings and some do not")
        return FeatureBatch(
            ids=np.concatenate([p.ids for p in parts]),
            features=np.concatenate([p.features for p in parts]),
            scores={k: np.concatenate([p.scores[k] for p in parts]) for k in SCORE_NAMES},
            hidden=np.concatenate([p.hidden for p in parts]) if with_hidden == {True} else None,
        )
