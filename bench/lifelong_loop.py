"""The lifelong benchmark's in-process round loop over the engine (features → selection → train → prune).

The service runs the same stages as Celery jobs with SQL state; this loop keeps everything in
memory so the lifelong benchmark (`bench/lifelong.py`) can compare methods on one machine.

Every method takes exactly `steps` optimizer steps per round, so methods differ only in what
they train on:
- `adapt-inf`, `random`, `score:<expert>`, `semdedup`: a `select_samples` method picks `budget`
  samples from the pool ∪ the round's new data; with `prune` set, the pool is then pruned
  permanently (§2.8);
- `sequential`: no pool; the round's new data only, every dataset of the round shuffled together;
- `multitask`: every sample seen so far (the reference that relative gain divides by).

The warm-up adapter is not trained here: the bench trains it once per seed and every method's
model starts from it.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from core.samples import EngineSample
from workers.engine.features import FeatureConfig, compute_features
from workers.engine.models import LoadedModel
from workers.engine.pruning import PruneConfig, prune_pool
from workers.engine.selection import Clustering, SelectionConfig, parse_method, select_samples
from workers.engine.training import TrainConfig, TrainStats, train_lora

SEQUENTIAL, MULTITASK = "sequential", "multitask"
FEATURE_METHODS = ("adapt-inf", "score", "semdedup")  # kinds that cannot select without features


@dataclass(frozen=True)
class LifelongConfig:
    """One method's settings for a whole lifelong run.

    Args:
        method: a `select_samples` method, "sequential" or "multitask".
        budget: samples selected per round by pool methods (a count, or a fraction of the candidates).
        steps: optimizer steps per round, for every method.
        train: the optimiser settings; its `epochs` and `max_steps` are set from `steps` per round.
        prune: permanent pruning after selection; None keeps every pool member forever.
    """

    method: str
    budget: int | float
    steps: int
    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    prune: PruneConfig | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in (SEQUENTIAL, MULTITASK):
            parse_method(self.method)  # raises with the accepted names
        if isinstance(self.budget, bool) or not self.budget > 0:
            raise ValueError(f"LifelongConfig.budget must be a positive count or fraction, got {self.budget!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"LifelongConfig.steps must be a positive int, got {self.steps!r}")
        if self.prune is not None and self.method in (SEQUENTIAL, MULTITASK):
            raise ValueError(f"LifelongConfig.prune needs a pool; method {self.method!r} has none")

    @property
    def uses_pool(self) -> bool:
        return self.method not in (SEQUENTIAL, MULTITASK)

    @property
    def needs_features(self) -> bool:
        return self.uses_pool and (parse_method(self.method)[0] in FEATURE_METHODS or self.prune is not None)


@dataclass
class RoundRecord:
    """What one round did; `seconds` per stage (features, select, train, prune)."""

    round: int
    new: int
    duplicates: int
    candidates: int
    trained_on: int  # distinct samples the round's training drew from
    pruned: int
    pool_after: int
    experts: dict[str, int]
    steps: int
    train_loss: float
    seconds: dict[str, float]


def content_key(sample: EngineSample) -> str:
    """sha256 of the conversation and image bytes: equal keys are exact duplicates."""
    h = hashlib.sha256()
    for m in sample.messages:
        h.update(f"{m.role}\x00{m.content}\x01".encode())
    for path in sample.images:
        h.update(path.read_bytes())
    return h.hexdigest()


def fixed_steps(cfg: TrainConfig, n: int, steps: int, seed: int) -> TrainConfig:
    """`cfg` for exactly `steps` steps over `n` samples (as many epochs as that takes), seeded."""
    per_epoch = math.ceil(n / cfg.batch_size)
    return replace(cfg, epochs=math.ceil(steps / per_epoch), max_steps=steps, seed=seed)


class LifelongRun:
    """Drives one model through the rounds of one method; the adapter continues across rounds."""

    def __init__(self, loaded: LoadedModel, cfg: LifelongConfig) -> None:
        self.loaded, self.cfg = loaded, cfg
        self.pool: list[EngineSample] = []  # the pool (pool methods) or everything seen (multitask)
        self._keys: set[str] = set()
        self.records: list[RoundRecord] = []

    def _fresh(self, new: Sequence[EngineSample]) -> list[EngineSample]:
        """§2.1: samples whose content is already in the pool are recorded, not added twice."""
        out = []
        for s in new:
            key = content_key(s)
            if key not in self._keys:
                self._keys.add(key)
                out.append(s)
        return out

    def _train(self, samples: Sequence[EngineSample], t: int) -> TrainStats:
        # a different but reproducible data order per round
        cfg = fixed_steps(self.cfg.train, len(samples), self.cfg.steps, self.cfg.seed * 1000 + t)
        return train_lora(self.loaded, samples, cfg)

    def run_round(self, datasets: Sequence[Sequence[EngineSample]]) -> RoundRecord:
        """One round with the datasets that arrived, in arrival order."""
        t, cfg, secs = len(self.records), self.cfg, {}
        new = [s for d in datasets for s in d]
        if not cfg.uses_pool:
            fresh = self._fresh(new)
            if cfg.method == MULTITASK:
                self.pool += fresh
            chosen = list(self.pool) if cfg.method == MULTITASK else list(new)
            start = time.perf_counter()
            stats = self._train(chosen, t)
            secs["train"] = time.perf_counter() - start
            rec = RoundRecord(t, len(new), len(new) - len(fresh), len(chosen), len(chosen), 0, len(self.pool), {},
                              stats.steps, stats.mean_loss, secs)
            self.records.append(rec)
            return rec

        fresh = self._fresh(new)
        candidates = self.pool + fresh
        by_id = {s.id: s for s in candidates}
        ids = np.array([s.id for s in candidates], dtype=np.int64)
        features, scores, clustering = None, {}, None
        if cfg.needs_features:
            start = time.perf_counter()
            fb = compute_features(self.loaded, candidates, cfg.features)
            secs["features"] = time.perf_counter() - start
            features, scores = fb.features, fb.scores
        else:
            # random/full need no features: one cluster holding the whole pool
            features = np.ones((len(candidates), 1), dtype=np.float32)
            clustering = Clustering(np.zeros(len(candidates), dtype=np.int64), np.ones((1, 1), dtype=np.float32))

        start = time.perf_counter()
        sel_cfg = replace(cfg.selection, prune=cfg.prune) if cfg.prune is not None else cfg.selection
        sel = select_samples(ids, features, scores, cfg.method, cfg.budget, self._sel_cfg(sel_cfg, len(candidates)),
                             seed=cfg.seed * 1000 + t, clustering=clustering)
        secs["select"] = time.perf_counter() - start
        chosen = [by_id[p.sample_id] for p in sel.selected]

        start = time.perf_counter()
        stats = self._train(chosen, t)
        secs["train"] = time.perf_counter() - start

        pruned_ids: set[int] = set()
        if cfg.prune is not None:
            start = time.perf_counter()
            pruned_ids = {p.sample_id for p in prune_pool(ids, features, sel.clustering, cfg.prune)}
            secs["prune"] = time.perf_counter() - start
        self.pool = [s for s in candidates if s.id not in pruned_ids]
        rec = RoundRecord(
            t, len(new), len(new) - len(fresh), len(candidates), len(chosen), len(pruned_ids), len(self.pool),
            dict(Counter(p.expert for p in sel.selected if p.expert)), stats.steps, stats.mean_loss, secs,
        )
        self.records.append(rec)
        return rec

    @staticmethod
    def _sel_cfg(cfg: SelectionConfig, n: int) -> SelectionConfig:
        # k-means needs at least as many rows as clusters; tiny pools get fewer clusters.
        if isinstance(cfg.n_clusters, int) and cfg.n_clusters > n:
            return replace(cfg, n_clusters=max(1, n))
        return cfg
