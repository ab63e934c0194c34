"""Coverage-centric sampling (CCS) inside one cluster, with its expert's scores."""
from __future__ import annotations

import numpy as np

from workers.engine.selection.budget import allocate_budget

# Stratum labels outside 0..n_strata-1: samples taken back from the dropped tails, or samples
# the expert has no score for (e.g. `ig` of a text-only sample), used only as a last resort.
STRATUM_LOW_TAIL = -1
STRATUM_UNSCORED = -2


def stratify(scores: np.ndarray, tails: tuple[float, float], n_strata: int) -> np.ndarray:
    """Stratum of every score: 0..n_strata-1 inside [p_low, p_high] in equal-width strata,
    STRATUM_LOW_TAIL below, n_strata above, STRATUM_UNSCORED for NaN/inf.

    Args:
        scores: float[m].
    Returns:
        int64[m].
    """
    s = np.asarray(scores, dtype=np.float64)
    out = np.full(s.shape, STRATUM_UNSCORED, dtype=np.int64)
    finite = np.isfinite(s)
    if not finite.any():
        return out
    low, high = np.percentile(s[finite], tails)
    v = s[finite]
    strata = np.zeros(v.shape, dtype=np.int64)
    if high > low:
        strata = np.floor((v - low) / (high - low) * n_strata).astype(np.int64)
        strata = np.clip(strata, 0, n_strata - 1)  # the maximum lands in the last stratum
    strata[v < low] = STRATUM_LOW_TAIL
    strata[v > high] = n_strata
    out[finite] = strata
    return out


def _take_evenly(groups: list[np.ndarray], budget: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Water-fill `budget` over the groups, then sample uniformly without replacement in each."""
    shares = allocate_budget([len(g) for g in groups], budget)
    return [g if k == len(g) else rng.choice(g, size=k, replace=False) for g, k in zip(groups, shares)]


def ccs_sample(
    scores: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    tails: tuple[float, float] = (5.0, 95.0),
    n_strata: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Select exactly `budget` positions covering the score range evenly.

    Tails below/above the percentiles are dropped; [p_low, p_high] is split into `n_strata`
    equal-width strata that share the budget equally, sparse strata taken whole and the rest
    re-split (water-filling), uniform seeded sampling inside a stratum. If the strata cannot
    fill the budget, the tails are given back (both sharing what is missing), then unscored rows.

    Args:
        scores: float[m] the expert's scores of the cluster's rows; NaN = no score.
        budget: 0 <= budget <= m.
        rng: seeded generator; same seed and inputs give the same selection.
        tails: lower/upper percentiles to drop.
        n_strata: number of strata.
    Returns:
        (positions int64[budget] ascending, their strata int64[budget]; see `stratify`).
    """
    m = len(scores)
    if not 0 <= budget <= m:
        raise ValueError(f"budget must be in [0, {m}] for a cluster of {m}, got {budget}")
    strata = stratify(scores, tails, n_strata)
    order = np.argsort(strata, kind="stable")
    labels, starts = np.unique(strata[order], return_index=True)
    groups = dict(zip(labels.tolist(), np.split(order, starts[1:])))
    empty = np.zeros(0, dtype=np.int64)

    core = [groups.get(i, empty) for i in range(n_strata)]
    tails_ = [groups.get(STRATUM_LOW_TAIL, empty), groups.get(n_strata, empty)]
    unscored = groups.get(STRATUM_UNSCORED, empty)
    picked: list[np.ndarray] = []
    need = budget
    for tier in (core, tails_, [unscored]):
        available = sum(len(g) for g in tier)
        take = min(need, available)
        picked += _take_evenly(tier, take, rng)
        need -= take
    positions = np.sort(np.concatenate(picked)) if picked else empty
    return positions.astype(np.int64), strata[positions]
