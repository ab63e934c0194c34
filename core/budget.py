"""The one budget rule: what a round's `budget` (a count or a fraction) means in samples."""
from __future__ import annotations

import math
import numbers


def resolve_budget(budget: int | float, candidates: int) -> int:
    """The number of samples a budget selects from `candidates` candidates.

    A count is capped at the candidates. A fraction in (0, 1] rounds half up (0.5 of 3 is 2 on
    every platform) and takes at least one sample of a non-empty pool, so a small fraction of a
    small pool still trains on something. Raises ValueError on anything else (bools included).
    """
    if isinstance(budget, bool) or not isinstance(candidates, numbers.Integral) or candidates < 0:
        raise ValueError(f"budget must be an int count or a float fraction of candidates >= 0, got {budget!r}")
    if isinstance(budget, numbers.Integral):
        if budget < 0:
            raise ValueError(f"budget count must be >= 0, got {budget!r}")
        return int(min(int(budget), candidates))
    if isinstance(budget, numbers.Real):
        if not 0.0 < float(budget) <= 1.0:
            raise ValueError(f"budget fraction must be in (0, 1], got {budget!r}")
        if candidates == 0:
            return 0
        return int(min(candidates, max(1, math.floor(float(budget) * candidates + 0.5))))
    raise ValueError(f"budget must be an int count or a float fraction, got {budget!r}")
