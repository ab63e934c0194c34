"""Training budget: water-filling it across clusters (what a budget means: core.budget)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def allocate_budget(sizes: Sequence[int], budget: int) -> list[int]:
    """Water-filling: equal shares; a cluster smaller than its share is taken whole and the rest
    is re-split among the others. Allocations never exceed a size and sum to min(budget, Σ sizes).

    The shares are the integer level L (the largest with Σ min(size, L) <= budget) plus one extra
    sample for the first clusters (by position) that still have room, to make the sum exact.

    Args:
        sizes: samples per cluster (>= 0).
        budget: total to allocate (>= 0).
    Returns:
        per-cluster allocations, same order as `sizes`.
    """
    s = np.asarray(sizes, dtype=np.int64)
    if s.size and s.min() < 0:
        raise ValueError(f"sizes must be >= 0, got {list(sizes)!r}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget!r}")
    total = int(min(int(budget), int(s.sum())))
    if total == 0:
        return [0] * int(s.size)
    lo, hi = 0, int(s.max())  # invariant: Σ min(s, lo) <= total
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.minimum(s, mid).sum()) <= total:
            lo = mid
        else:
            hi = mid - 1
    alloc = np.minimum(s, lo)
    remainder = total - int(alloc.sum())
    # By maximality of lo, more than `remainder` clusters have size > lo.
    room = np.flatnonzero(s > lo)[:remainder]
    alloc[room] += 1
    return [int(a) for a in alloc]
