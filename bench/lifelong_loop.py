"""The lifelong benchmark's in-process round loop over the engine (features → selection → train → prune).

The service runs the same stages as Celery jobs with SQL state; this loop keeps everything in
memory so the lifelong benchmark (`bench/lifelong.py`) can compare methods on one machine.
Methods: every `select_samples` method over the growing pool (`adapt-inf`, `random`,
`score:<expert>`, `semdedup`, `full`), and `sequential-full`, the paper's sequential baseline:
no pool, each new dataset trained on entirely, one after the other.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from workers.engine.features import FeatureConfig, compute_features
from workers.engine.models import LoadedModel
from workers.engine.pruning import PruneConfig, prune_pool
from workers.engine.samples import EngineSample
from workers.engine.selection import Clustering, SelectionConfig, parse_method, select_samples
from workers.engine.training import TrainConfig, train_lora
from workers.engine.warmup import train_warmup_adapter, warmup_subset

SEQUENTIAL = "sequential-full"
FEATURE_METHODS = ("adapt-inf", "score", "semdedup")  # kinds that cannot select without features


@dataclass(frozen=True)
class LifelongConfig:
    """One method's settings for a whole lifelong run.

    Args:
        method: a `select_samples` method or "sequential-full".
        budget: samples trained on per round (a count, or a fraction of the candidate pool).
        prune: permanent pruning after selection; None keeps every pool member forever.
        warmup_fraction: share of the first round's candidates the warm-up adapter trains on
            (feature-based methods only: a fresh LoRA has zero gradients w.r.t. A).
    """

    method: str
    budget: int | float
    train: TrainConfig = field(default_factory=TrainConfig)
    warmup_train: TrainConfig | None = None
    features: FeatureConfig = field(default_factory=FeatureConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    prune: PruneConfig | None = None
    warmup_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method != SEQUENTIAL:
            parse_method(self.method)  # raises with the accepted names
        if isinstance(self.budget, bool) or not self.budget > 0:
            raise ValueError(f"LifelongConfig.budget must be a positive count or fraction, got {self.budget!r}")
        if not 0 < self.warmup_fraction <= 1:
            raise ValueError(f"LifelongConfig.warmup_fraction must be in (0, 1], got {self.warmup_fraction!r}")

    @property
    def needs_features(self) -> bool:
        if self.method == SEQUENTIAL:
            return False
        return parse_method(self.method)[0] in FEATURE_METHODS or self.prune is not None


@dataclass
class RoundRecord:
    """What one round did; `seconds` per stage (features, select, train, prune)."""

    round: int
    new: int
    duplicates: int
    candidates: int
    trained: int
    pruned: int
    pool_after: int
    experts: dict[str, int]
    train_loss: float | None
    seconds: dict[str, float]


def _samples_seen(n: int, steps: int, batch_size: int) -> int:
    """Samples passed through training: full epochs of n, then full batches (train_lora's order)."""
    per_epoch = -(-n // batch_size)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * n + rest * batch_size


def content_key(sample: EngineSample) -> str:
    """sha256 of the conversation and image bytes: equal keys are exact duplicates."""
    h = hashlib.sha256()
    for m in sample.messages:
        h.update(f"{m.role}\x00{m.content}\x01".encode())
    for path in sample.images:
        h.update(path.read_bytes())
    return h.hexdigest()


class LifelongRun:
    """Drives one model through the rounds of one method; the adapter continues across rounds."""

    def __init__(self, loaded: LoadedModel, cfg: LifelongConfig) -> None:
        self.loaded, self.cfg = loaded, cfg
        self.pool: list[EngineSample] = []
        self._keys: set[str] = set()
        self.warmed_up = False
        self.samples_trained = 0
        self.records: list[RoundRecord] = []

    def _train(self, samples: Sequence[EngineSample], cfg: TrainConfig) -> float:
        stats = train_lora(self.loaded, samples, cfg)
        self.samples_trained += _samples_seen(len(samples), stats.steps, cfg.batch_size)
        return stats.mean_loss

    def run_round(self, datasets: Sequence[Sequence[EngineSample]]) -> RoundRecord:
        """One round with the datasets that arrived, in arrival order."""
        t, cfg, secs = len(self.records), self.cfg, {}
        new = [s for d in datasets for s in d]
        if cfg.method == SEQUENTIAL:
            start, before = time.perf_counter(), self.samples_trained
            losses = [self._train(list(d), self._seeded(cfg.train, t, k)) for k, d in enumerate(datasets) if d]
            secs["train"] = time.perf_counter() - start
            rec = RoundRecord(t, len(new), 0, len(new), self.samples_trained - before, 0, 0, {},
                              float(np.mean(losses)) if losses else None, secs)
            self.records.append(rec)
            return rec

        fresh = []
        for s in new:  # §2.1: exact duplicates of pool members are recorded, not added twice
            key = content_key(s)
            if key not in self._keys:
                self._keys.add(key)
                fresh.append(s)
        candidates = self.pool + fresh
        by_id = {s.id: s for s in candidates}
        ids = np.array([s.id for s in candidates], dtype=np.int64)

        trained_before = self.samples_trained
        features, scores, clustering = None, {}, None
        if cfg.needs_features:
            if not self.warmed_up:
                start = time.perf_counter()
                wcfg = cfg.warmup_train or cfg.train
                stats = train_warmup_adapter(self.loaded, candidates, cfg.warmup_fraction, cfg.seed, wcfg)
                n_warm = len(warmup_subset(candidates, cfg.warmup_fraction, cfg.seed))
                self.samples_trained += _samples_seen(n_warm, stats.steps, wcfg.batch_size)
                self.warmed_up = True
                secs["warmup"] = time.perf_counter() - start
            start = time.perf_counter()
            fb = compute_features(self.loaded, candidates, cfg.features)
            secs["features"] = time.perf_counter() - start
            features, scores = fb.features, fb.scores
        else:
            # random/full need no features: one cluster holding the whole pool
            features = np.ones((len(candidates), 1), dtype=np.float32)
            clustering = Clustering(np.zeros(len(candidates), dtype=np.int64), np.ones((1, 1), dtype=np.float32))

        start = time.perf_counter()
        sel = select_samples(ids, features, scores, cfg.method, cfg.budget, self._sel_cfg(len(candidates)),
                             seed=cfg.seed * 1000 + t, clustering=clustering)
        secs["select"] = time.perf_counter() - start
        chosen = [by_id[p.sample_id] for p in sel.selected]

        start = time.perf_counter()
        loss = self._train(chosen, self._seeded(cfg.train, t, 0))
        secs["train"] = time.perf_counter() - start

        pruned_ids: set[int] = set()
        if cfg.prune is not None:
            start = time.perf_counter()
            pruned_ids = {p.sample_id for p in prune_pool(ids, features, sel.clustering, cfg.prune)}
            secs["prune"] = time.perf_counter() - start
        self.pool = [s for s in candidates if s.id not in pruned_ids]
        rec = RoundRecord(
            t, len(new), len(new) - len(fresh), len(candidates), self.samples_trained - trained_before,
            len(pruned_ids), len(self.pool), dict(Counter(p.expert for p in sel.selected if p.expert)), loss, secs,
        )
        self.records.append(rec)
        return rec

    def _sel_cfg(self, n: int) -> SelectionConfig:
        # k-means needs at least as many rows as clusters; tiny pools get fewer clusters.
        k = self.cfg.selection.n_clusters
        if isinstance(k, int) and k > n:
            return replace(self.cfg.selection, n_clusters=max(1, n))
        return self.cfg.selection

    @staticmethod
    def _seeded(cfg: TrainConfig, t: int, k: int) -> TrainConfig:
        # a different but reproducible data order per round and per sequential dataset
        return replace(cfg, seed=cfg.seed * 1000 + 10 * t + k)
