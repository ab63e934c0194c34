"""Typed configuration of one selection run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.registry import BASE_METHODS, EXPERTS
from workers.engine.pruning import PruneConfig

# Ties in expert choice go to the registry's order (DESIGN §2.4); experts outside it come after, sorted.
EXPERT_ORDER = EXPERTS


@dataclass(frozen=True)
class SelectionConfig:
    """How a round clusters, chooses experts and samples.

    Args:
        n_clusters: pseudo-skill clusters, or "auto" (simplified silhouette on a subsample, see
            `clustering.choose_n_clusters`).
        tails: lower/upper percentiles dropped by CCS before stratifying.
        n_strata: equal-width score strata per cluster.
        niter: spherical k-means iterations.
        points_per_centroid: k-means trains on a seeded subsample of this many rows per centroid
            (FAISS's own default cap); all rows are then assigned to the nearest centroid.
        auto_max_clusters: the largest k tried when n_clusters == "auto".
        auto_sample: rows of the seeded subsample the "auto" criterion runs on.
        prune: dedup settings the `semdedup` method uses (selection-only pruning).
        threads: engine threads, each running single-threaded kernels on independent units (row
            blocks, clusters; see `parallel`); None: min(2, cores).
    """

    n_clusters: int | Literal["auto"] = 10
    tails: tuple[float, float] = (5.0, 95.0)
    n_strata: int = 50
    niter: int = 20
    points_per_centroid: int = 256
    auto_max_clusters: int = 32
    auto_sample: int = 20_000
    prune: PruneConfig = field(default_factory=PruneConfig)
    threads: int | None = None

    def __post_init__(self) -> None:
        k = self.n_clusters
        if not (k == "auto" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1)):
            raise ValueError(f"SelectionConfig.n_clusters must be a positive int or 'auto', got {k!r}")
        lo, hi = self.tails
        if not (0.0 <= lo < hi <= 100.0):
            raise ValueError(f"SelectionConfig.tails must satisfy 0 <= low < high <= 100, got {self.tails!r}")
        for name in ("n_strata", "niter", "points_per_centroid", "auto_sample"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SelectionConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.auto_max_clusters, int) or self.auto_max_clusters < 2:
            raise ValueError(f"SelectionConfig.auto_max_clusters must be an int >= 2, got {self.auto_max_clusters!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"SelectionConfig.threads must be None or a positive int, got {self.threads!r}")
        if not isinstance(self.prune, PruneConfig):
            raise ValueError(f"SelectionConfig.prune must be a PruneConfig, got {type(self.prune).__name__}")


def parse_method(method: str) -> tuple[str, str | None]:
    """Split a method string into (kind, expert): "score:el2n" → ("score", "el2n")."""
    if method.startswith("score:"):
        expert = method[len("score:") :]
        if not expert:
            raise ValueError(f"method {method!r} names no expert; use score:<expert>, e.g. score:el2n")
        return "score", expert
    if method not in BASE_METHODS:
        raise ValueError(f"method must be one of {BASE_METHODS} or score:<expert>, got {method!r}")
    return method, None
