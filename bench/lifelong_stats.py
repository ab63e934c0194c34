"""Confidence intervals over seeds for the lifelong benchmarks (`bench/lifelong.py`).

Each seed is one independent run (its own data, warm-up and model), so a metric's values over
seeds are treated as i.i.d. and summarised by the Student-t 95% interval of their mean. Method
comparisons are paired by seed (the same data and warm-up for both methods), which removes the
seed-to-seed variance that both share.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float | list[float] | int | None]:
    """{"mean", "ci95": [lo, hi], "n"} of the finite `values` (Student t, n - 1 degrees of freedom).

    With one value the interval is unknown ([mean, mean] would claim a certainty no run has):
    it is [None, None]. With none, mean is None too.
    """
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "ci95": [None, None], "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def paired_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float | list[float] | int | None]:
    """`mean_ci` of the per-seed differences a[i] - b[i] (seeds where both are finite)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need one per seed on both sides, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    return mean_ci(diffs, level)


def excludes_zero(ci: dict) -> bool:
    """Whether a `mean_ci` interval lies entirely on one side of 0."""
    lo, hi = ci["ci95"]
    return lo is not None and (lo > 0 or hi < 0)
