"""CCS inside a cluster: exact budget, coverage of strata, seeded, tails given back."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.engine.selection.ccs import STRATUM_LOW_TAIL, STRATUM_UNSCORED, ccs_sample, stratify

scores_st = st.lists(
    st.one_of(st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), st.just(float("nan"))),
    min_size=0, max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(scores_st, st.data(), st.integers(0, 2**32 - 1))
def test_exact_budget_distinct_and_seeded(values, data, seed):
    scores = np.asarray(values, dtype=np.float64)
    budget = data.draw(st.integers(0, len(scores)))
    pos, strata = ccs_sample(scores, budget, np.random.default_rng(seed))
    assert len(pos) == budget and len(np.unique(pos)) == budget
    assert np.all((pos >= 0) & (pos < len(scores)))
    np.testing.assert_array_equal(strata, stratify(scores, (5, 95), 50)[pos])
    again, _ = ccs_sample(scores, budget, np.random.default_rng(seed))
    np.testing.assert_array_equal(pos, again)
    # unscored rows are a last resort; tails only when the strata cannot fill the budget
    n_core = int(((strata >= 0) & (strata < 50)).sum())
    all_strata = stratify(scores, (5, 95), 50)
    core_total = int(((all_strata >= 0) & (all_strata < 50)).sum())
    assert n_core == min(budget, core_total)
    if (strata == STRATUM_UNSCORED).any():
        assert (all_strata[pos] != STRATUM_UNSCORED).sum() == (all_strata != STRATUM_UNSCORED).sum()


def stratum_shares_reference(counts, budget):
    """Reference water-filling by repeated equal splitting, as the design words it."""
    shares = [0] * len(counts)
    open_ = [i for i, c in enumerate(counts) if c > 0]
    left = budget
    while left > 0 and open_:
        each = left // len(open_)
        if each == 0:  # fewer left than open strata: one each, in order
            for i in open_[:left]:
                shares[i] += 1
            break
        for i in list(open_):
            take = min(each, counts[i] - shares[i])
            shares[i] += take
            left -= take
            if shares[i] == counts[i]:
                open_.remove(i)
    return shares


def test_strata_share_the_budget_equally_and_sparse_strata_go_whole():
    rng = np.random.default_rng(3)
    scores = rng.lognormal(size=5000)  # skewed: many sparse strata on the right
    pos, strata = ccs_sample(scores, 600, np.random.default_rng(0))
    all_strata = stratify(scores, (5, 95), 50)
    counts = np.bincount(all_strata[(all_strata >= 0) & (all_strata < 50)], minlength=50)
    got = np.bincount(strata, minlength=50)
    assert got.tolist() == stratum_shares_reference(counts.tolist(), 600)
    sparse = counts < got.max()
    np.testing.assert_array_equal(got[sparse], counts[sparse])


def test_tails_are_dropped_then_given_back():
    scores = np.arange(1000, dtype=np.float64)
    strata = stratify(scores, (5, 95), 50)
    assert (strata == STRATUM_LOW_TAIL).sum() == 50 and (strata == 50).sum() == 50
    pos, _ = ccs_sample(scores, 500, np.random.default_rng(0))
    assert scores[pos].min() >= 49.95 and scores[pos].max() <= 949.05
    pos, st_ = ccs_sample(scores, 990, np.random.default_rng(0))
    assert len(pos) == 990 and (st_ == STRATUM_LOW_TAIL).sum() + (st_ == 50).sum() == 990 - 900


def test_equal_scores_and_budget_errors():
    pos, strata = ccs_sample(np.ones(10), 4, np.random.default_rng(0))
    assert len(pos) == 4 and set(strata.tolist()) == {0}
    with pytest.raises(ValueError, match="budget"):
        ccs_sample(np.ones(3), 4, np.random.default_rng(0))
