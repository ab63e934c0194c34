import numpy as np
import pytest

from core.budget import resolve_budget


@pytest.mark.parametrize(
    ("budget", "candidates", "expected"),
    [(10, 100, 10), (1000, 100, 100), (0, 5, 0), (0.25, 10, 3), (0.5, 3, 2), (0.5, 7, 4), (0.5, 6, 3),
     (1.0, 9, 9), (0.01, 10, 1), (0.5, 0, 0), (5, 0, 0), (np.int64(4), 10, 4), (np.float32(0.5), 4, 2)],
)
def test_counts_cap_and_fractions_round_half_up_with_at_least_one(budget, candidates, expected):
    assert resolve_budget(budget, candidates) == expected


@pytest.mark.parametrize("bad", [-1, 0.0, 1.5, -0.2, True, "10", None])
def test_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="budget"):
        resolve_budget(bad, 100)
