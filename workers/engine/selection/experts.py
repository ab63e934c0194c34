"""Selector-expert choice per cluster: the entropy of the z-standardised score histogram."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from workers.engine.selection.config import EXPERT_ORDER

N_BINS = 50
Z_RANGE = 4.0
# z is snapped to a 1e-9 grid in integer arithmetic before binning: rescaling an expert's scores
# moves z by ~1e-16, and without the snap a z that lands exactly on a bin edge (likely with
# integer-valued scores) could fall into either neighbour and change the expert.
_Z_GRID = 1_000_000_000
# Entropies within this many bits count as tied; ties go to EXPERT_ORDER.
TIE_TOLERANCE = 1e-9
# Experts used in log space for both the expert choice and CCS, as the released code does:
# perplexity is heavy-tailed (exp of the mean NLL), so its z-histogram piles into a few bins and
# equal-width CCS strata on raw ppl spend most of their shares on the tail. log ppl = mean NLL.
LOG_SPACE_EXPERTS = frozenset({"ppl"})


def selection_values(expert: str, values: np.ndarray) -> np.ndarray:
    """An expert's scores in the space selection works in (float64): log for LOG_SPACE_EXPERTS.

    Non-positive scores of a log-space expert become NaN (no score) rather than -inf.
    """
    x = np.asarray(values, dtype=np.float64)
    if expert not in LOG_SPACE_EXPERTS:
        return x
    out = np.full(x.shape, np.nan)
    np.log(x, out=out, where=x > 0)
    return out


def score_entropy(values: np.ndarray) -> float | None:
    """Shannon entropy (bits) of the histogram of z-standardised finite `values` over [−4, 4] in
    50 equal bins, values outside clipped into the edge bins. None when fewer than two are finite.

    Args:
        values: float[m] scores; NaN/inf are ignored.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    # Standardise on rescaled values: squaring raw scores can underflow (1e-164² is 0) or
    # overflow, and then a mere change of units would change the entropy.
    top = np.abs(x).max()
    if top == 0.0:
        return 0.0
    dev = x / top
    dev -= dev.mean()
    span = np.abs(dev).max()
    if span == 0.0:
        return 0.0  # every score equal: one bin holds all mass
    dev /= span
    z = dev / dev.std()
    zq = np.rint(np.clip(z, -2 * Z_RANGE, 2 * Z_RANGE) * _Z_GRID).astype(np.int64)
    # bin = floor((z + 4) / 8 * 50), exactly, on the integer grid.
    bins = ((zq + int(Z_RANGE * _Z_GRID)) * N_BINS) // int(2 * Z_RANGE * _Z_GRID)
    counts = np.bincount(np.clip(bins, 0, N_BINS - 1), minlength=N_BINS)
    # Entropy depends on the multiset of counts only; summing in sorted order makes permuted
    # histograms give bit-identical entropies, so genuine ties are detected as ties.
    p = np.sort(counts[counts > 0]).astype(np.float64) / x.size
    return float(-(p * np.log2(p)).sum())


def expert_order(names: Mapping[str, object]) -> list[str]:
    """The fixed tie-break order: EXPERT_ORDER first, then any other expert by name."""
    return [e for e in EXPERT_ORDER if e in names] + sorted(e for e in names if e not in EXPERT_ORDER)


def choose_expert(scores: Mapping[str, np.ndarray]) -> tuple[str | None, dict[str, float]]:
    """The expert whose scores spread most evenly over the cluster (highest histogram entropy).

    Experts with fewer than two finite scores are skipped; ties go to the fixed order
    ppl, el2n, entropy, grand, ig. Scores are judged in `selection_values` space (log ppl).

    Args:
        scores: expert name → float[m] scores of the cluster's rows (NaN = no score).
    Returns:
        (chosen expert or None when none qualifies, entropy in bits per qualifying expert).
    """
    entropies: dict[str, float] = {}
    for name in expert_order(scores):
        h = score_entropy(selection_values(name, scores[name]))
        if h is not None:
            entropies[name] = h
    if not entropies:
        return None, {}
    best = max(entropies.values())
    chosen = next(name for name, h in entropies.items() if h >= best - TIE_TOLERANCE)
    return chosen, entropies
