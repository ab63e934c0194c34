"""The selection entry point: one round's methods over a clustered pool."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from core.budget import resolve_budget
from workers.engine.selection.budget import allocate_budget
from workers.engine.selection.ccs import STRATUM_UNSCORED, ccs_sample
from workers.engine.selection.clustering import Clustering, cluster_features
from workers.engine.selection.config import SelectionConfig, parse_method
from workers.engine.selection.experts import choose_expert, selection_values


@dataclass(frozen=True, slots=True)
class Provenance:
    """Why a sample was selected. expert/score/stratum are None for random and full picks."""

    sample_id: int
    cluster: int
    expert: str | None
    score: float | None
    stratum: int | None


@dataclass(frozen=True)
class ClusterStats:
    """One cluster of the round: entropies in bits per expert with >= 2 finite scores;
    `pruned` counts the samples the method itself set aside (semdedup only)."""

    id: int
    size: int
    expert: str | None
    entropies: dict[str, float]
    budget: int
    selected: int
    pruned: int


@dataclass(frozen=True)
class SelectionResult:
    selected: list[Provenance]
    clusters: list[ClusterStats]
    clustering: Clustering
    budget: int


def _check_inputs(ids: np.ndarray, features: np.ndarray, scores: Mapping[str, np.ndarray]) -> int:
    n = len(ids)
    if features.ndim != 2 or features.shape[0] != n:
        raise ValueError(f"features must be [n={n}, d], got shape {features.shape}")
    # SQL ids usually arrive ascending: check that first (np.unique took ~0.6 s on 1M ids).
    if not (ids[1:] > ids[:-1]).all():
        ordered = np.sort(ids)
        if (ordered[1:] == ordered[:-1]).any():
            raise ValueError("ids must be unique")
    for name, values in scores.items():
        if len(values) != n:
            raise ValueError(f"scores[{name!r}] has {len(values)} values for {n} samples")
    return n


def select_samples(
    ids: np.ndarray,
    features: np.ndarray,
    scores: Mapping[str, np.ndarray],
    method: str,
    budget: int | float,
    cfg: SelectionConfig,
    seed: int,
    clustering: Clustering | None = None,
    on_cluster: Callable[[int, int], None] | None = None,
) -> SelectionResult:
    """Select a training subset of the candidate pool.

    Methods: `adapt-inf` (expert per cluster by score entropy, CCS), `score:<expert>` (one
    expert, CCS per cluster), `random` (uniform over the pool), `semdedup` (dedup within
    clusters, selection-only, then uniform over survivors; topped up from the set-aside samples
    if the survivors are too few), `full` (everything). Every method selects exactly
    min(budget, n) samples (`full`: n).

    Args:
        ids: int64[n] SQL sample ids.
        features: [n, d] float16 (or float32) gradient features, array, memmap or `FileRows`.
        scores: expert → float32[n] (ppl, el2n, entropy, grand, ig); NaN = no score.
        method: see above.
        budget: a count, or a fraction in (0, 1] of n.
        cfg: SelectionConfig.
        seed: seeds clustering and sampling; same inputs and seed give the same result.
        clustering: reuse a clustering of these rows instead of computing one.
        on_cluster: `on_cluster(done, n_clusters)` after each cluster's selection (progress;
            raising from it stops the selection).
    """
    kind, fixed_expert = parse_method(method)
    ids = np.asarray(ids, dtype=np.int64)
    n = _check_inputs(ids, features, scores)
    if fixed_expert is not None and fixed_expert not in scores:
        raise ValueError(f"method {method!r}: no scores for expert {fixed_expert!r}; have {sorted(scores)}")
    total = n if kind == "full" else resolve_budget(budget, n)
    if clustering is None:
        clustering = cluster_features(
            features, cfg.n_clusters, seed, cfg.niter, points_per_centroid=cfg.points_per_centroid,
            auto_max_clusters=cfg.auto_max_clusters, auto_sample=cfg.auto_sample, threads=cfg.threads,
        )
    elif len(clustering.assign) != n:
        raise ValueError(f"clustering covers {len(clustering.assign)} rows, pool has {n}")
    set_aside = np.zeros(n, dtype=bool)
    if kind == "semdedup":
        from workers.engine.pruning import prune_pool

        pos = {int(i): p for p, i in enumerate(ids)}
        for s in prune_pool(ids, features, clustering, cfg.prune.dedup_only()):  # duplicates only, no cap
            set_aside[pos[s.sample_id]] = True
    members = clustering.members()
    entropies, experts = [], []
    for rows in members:
        expert, ent = choose_expert({k: np.asarray(v)[rows] for k, v in scores.items()})
        entropies.append(ent)
        experts.append(fixed_expert if kind == "score" else expert if kind == "adapt-inf" else None)

    # The picks as parallel arrays (a 1M-row pool selects 100k samples): row, cluster, the
    # expert's score and stratum (NaN / STRATUM_UNSCORED where there is none).
    if kind in ("adapt-inf", "score"):
        parts = []
        for c, (share, rows) in enumerate(zip(allocate_budget([len(r) for r in members], total), members)):
            expert = experts[c]
            raw = np.asarray(scores[expert])[rows].astype(np.float64) if expert else np.full(len(rows), np.nan)
            # strata in the expert's selection space (log ppl); provenance keeps the raw score
            values = selection_values(expert, raw) if expert else raw
            pos, strata = ccs_sample(values, share, np.random.default_rng([seed, c]), cfg.tails, cfg.n_strata)
            pos = np.asarray(pos, dtype=np.int64)
            parts.append((rows[pos], np.full(len(pos), c, dtype=np.int64), raw[pos], np.asarray(strata, dtype=np.int64)))
            if on_cluster is not None:
                on_cluster(c + 1, len(members))
        prow, pclu, pscore, pstratum = (np.concatenate(a) for a in zip(*parts)) if parts else (np.zeros(0, np.int64),) * 4
    else:
        rng = np.random.default_rng([seed, 0xA11])
        if kind == "full":
            prow = np.arange(n)
        elif kind == "random":
            prow = rng.choice(n, size=total, replace=False)
        else:  # semdedup: survivors first, set-aside samples only to reach the budget
            keep, aside = np.flatnonzero(~set_aside), np.flatnonzero(set_aside)
            prow = rng.choice(keep, size=min(total, len(keep)), replace=False)
            if len(prow) < total:
                prow = np.concatenate([prow, rng.choice(aside, size=total - len(prow), replace=False)])
        prow = np.asarray(prow, dtype=np.int64)
        pclu = clustering.assign[prow]
        pscore, pstratum = np.full(len(prow), np.nan), np.full(len(prow), STRATUM_UNSCORED, dtype=np.int64)
        if on_cluster is not None:  # one draw over the whole pool: every cluster at once
            on_cluster(len(members), len(members))

    order = np.lexsort((ids[prow], pclu))  # by cluster, then sample id
    prow, pclu, pscore, pstratum = prow[order], pclu[order], pscore[order], pstratum[order]
    usable = (pstratum != STRATUM_UNSCORED) & np.isfinite(pscore)
    selected = [
        Provenance(sid, c, experts[c], score if ok else None, stratum if ok else None)
        for sid, c, score, stratum, ok in zip(
            ids[prow].tolist(), pclu.tolist(), pscore.tolist(), pstratum.tolist(), usable.tolist()
        )
    ]
    counts = np.bincount(pclu, minlength=clustering.n_clusters)
    aside = np.bincount(clustering.assign[set_aside], minlength=clustering.n_clusters)
    clusters = [
        ClusterStats(c, len(rows), experts[c], entropies[c], int(counts[c]), int(counts[c]), int(aside[c]))
        for c, rows in enumerate(members)
    ]
    return SelectionResult(selected, clusters, clustering, total)
