"""Expert choice: histogram entropy of z-scores over [-4, 4], unit-free, fixed tie order."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from workers.engine.selection.experts import LOG_SPACE_EXPERTS, choose_expert, score_entropy, selection_values


def entropy_reference(values):
    """Slow obvious reference: float64 z, bins by comparison with the 51 edges, clip outside."""
    x = [v for v in values if math.isfinite(v)]
    if len(x) < 2:
        return None
    mean = sum(x) / len(x)
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / len(x))
    if std == 0:
        return 0.0
    edges = np.linspace(-4, 4, 51)
    counts = [0] * 50
    for v in x:
        z = (v - mean) / std
        b = int(np.searchsorted(edges, z, side="right")) - 1
        counts[min(max(b, 0), 49)] += 1
    return -sum(c / len(x) * math.log2(c / len(x)) for c in counts if c)


def test_entropy_matches_reference_on_random_data():
    rng = np.random.default_rng(0)
    for dist in (rng.normal(size=500), rng.gamma(0.5, size=300), rng.uniform(size=1000), rng.standard_cauchy(400)):
        assert abs(score_entropy(dist) - entropy_reference(dist.tolist())) < 1e-9


def test_entropy_edge_cases():
    assert score_entropy(np.array([1.0])) is None
    assert score_entropy(np.array([np.nan, 2.0, np.inf])) is None
    assert score_entropy(np.array([3.0, 3.0, 3.0])) == 0.0
    # two values at z = ±1: two bins, one bit
    assert abs(score_entropy(np.array([0.0, 1.0])) - 1.0) < 1e-12
    # values far outside ±4σ are clipped into the edge bins, not dropped
    x = np.r_[np.zeros(1000), 1e6]
    assert abs(score_entropy(x) - entropy_reference(x.tolist())) < 1e-12


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
columns = st.lists(finite, min_size=2, max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(columns, min_size=2, max_size=5),
    st.integers(0, 4),
    st.sampled_from([1e-3, 0.37, 2.0, 1024.0, 7.5e4]),
    st.floats(-1e3, 1e3, allow_nan=False),
)
def test_choice_does_not_depend_on_units(cols, which, scale, shift):
    names = ["ppl", "el2n", "entropy", "grand", "ig"][: len(cols)]
    scores = {name: np.asarray(c) for name, c in zip(names, cols)}
    target = names[which % len(names)]
    x = scores[target]
    if target in LOG_SPACE_EXPERTS:
        shift = 0.0  # perplexity is judged in log space: its change of units is a factor alone
        # and one that keeps every positive value positive and normal (5e-324 · 0.001 underflows
        # to 0, which is no score at all: that is not a change of units either)
        positive = x[x > 0]
        assume(np.all(positive * scale >= np.finfo(np.float64).tiny) and np.all(np.isfinite(positive * scale)))
    # A shift that swamps the spread in float64 destroys information (1 + 1e-65 == 1): that is
    # not a change of units, so such cases are left out.
    assume(np.ptp(x) == 0 or np.ptp(x) * scale > 1e-6 * (abs(shift) + np.abs(x).max() * scale))
    rescaled = dict(scores, **{target: x * scale + shift})
    e1, h1 = choose_expert(scores)
    e2, h2 = choose_expert(rescaled)
    assert e1 == e2
    assert h1.keys() == h2.keys()
    for k in h1:
        assert abs(h1[k] - h2[k]) < 1e-9


def test_ppl_is_judged_in_log_space():
    # Perplexity is exp(mean NLL): log-normal across samples. Raw, its z-histogram piles into a
    # few bins and a flat el2n would win; in log space it is as spread as el2n.
    rng = np.random.default_rng(3)
    nll = rng.normal(2.0, 1.0, size=5000)
    ppl, el2n = np.exp(nll), rng.normal(size=5000)
    _, h = choose_expert({"ppl": ppl, "el2n": el2n})
    assert h["ppl"] == pytest.approx(score_entropy(nll), abs=1e-9)
    assert score_entropy(ppl) < h["ppl"] - 1.0  # the raw histogram is more than a bit poorer
    np.testing.assert_array_equal(selection_values("ppl", np.array([np.e, 0.0, -1.0, np.nan]))[1:], [np.nan] * 3)
    assert selection_values("ppl", np.array([np.e]))[0] == pytest.approx(1.0)
    assert selection_values("el2n", np.array([-1.0]))[0] == -1.0


def test_highest_entropy_wins_and_ties_follow_fixed_order():
    rng = np.random.default_rng(1)
    spread = rng.uniform(size=2000)  # flat: high entropy
    peaked = np.r_[np.zeros(1990), rng.uniform(size=10) * 100]  # mass in one bin
    assert choose_expert({"ppl": peaked, "el2n": spread})[0] == "el2n"
    # identical histograms in a different unit: a tie, the fixed order decides
    assert choose_expert({"grand": spread * 10, "el2n": spread, "ig": spread + 5})[0] == "el2n"
    # a permuted histogram has the same entropy exactly: still a tie
    assert choose_expert({"ig": spread, "entropy": -spread})[0] == "entropy"


def test_experts_with_fewer_than_two_finite_scores_are_skipped():
    x = np.arange(10.0)
    only_one = np.full(10, np.nan)
    only_one[3] = 1.0
    expert, ent = choose_expert({"ppl": only_one, "ig": x})
    assert expert == "ig" and set(ent) == {"ig"}
    assert choose_expert({"ppl": only_one}) == (None, {})


def test_tiny_and_huge_units_do_not_underflow_or_overflow():
    for scale in (1e-300, 1e-160, 1e150, 1e300):
        x = np.array([0.0, 1.0, 2.0, 2.0]) * scale
        assert abs(score_entropy(x) - entropy_reference([0.0, 1.0, 2.0, 2.0])) < 1e-12
