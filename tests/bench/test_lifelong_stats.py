"""bench/lifelong_stats.py: Student-t intervals over seeds, paired by seed, against hand values."""
import math

import pytest

from bench.lifelong_stats import excludes_zero, mean_ci, paired_ci


def test_mean_ci_matches_the_t_interval_by_hand():
    # mean 3, sample sd sqrt(2.5), t(0.975, 4) = 2.7764451: half-width 2.7764451 * 1.5811388 / sqrt(5)
    ci = mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert ci["mean"] == 3 and ci["n"] == 5
    assert ci["ci95"] == pytest.approx([3 - half, 3 + half], abs=1e-6)


def test_undefined_values_are_left_out_and_one_value_has_no_interval():
    assert mean_ci([0.5, None, float("nan")]) == {"mean": 0.5, "ci95": [None, None], "n": 1}
    assert mean_ci([]) == {"mean": None, "ci95": [None, None], "n": 0}


def test_paired_differences_remove_the_shared_seed_effect():
    # the seeds differ a lot, the methods by a steady 0.1: unpaired intervals overlap, the paired one excludes 0
    a, b = [0.2, 0.5, 0.9, 0.35], [0.1, 0.4, 0.8, 0.25]
    assert not excludes_zero(mean_ci([x - 0.5 for x in a]))
    d = paired_ci(a, b)
    assert d["mean"] == pytest.approx(0.1) and d["ci95"] == pytest.approx([0.1, 0.1])
    assert excludes_zero(paired_ci(a, [x + 0.05 + 0.01 * i for i, x in enumerate(a)]))
    assert paired_ci([0.1, None], [0.2, 0.3])["n"] == 1  # a seed missing on one side drops out
    with pytest.raises(ValueError, match="one per seed"):
        paired_ci([0.1], [0.1, 0.2])


def test_excludes_zero():
    assert excludes_zero({"ci95": [0.01, 0.2]}) and excludes_zero({"ci95": [-0.3, -0.1]})
    assert not excludes_zero({"ci95": [-0.01, 0.2]}) and not excludes_zero({"ci95": [None, None]})
