"""select_samples: every method selects exactly min(B, n), seeded, with provenance and stats."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.registry import EXPERTS
from workers.engine.selection import (
    Clustering, SelectionConfig, allocate_budget, choose_expert, select_samples,
)
from workers.engine.pruning import PruneConfig



def make_pool(n=1200, d=16, k=4, seed=0, text_only=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    labels = rng.integers(0, k, n)
    x = (centers[labels] + rng.normal(size=(n, d))).astype(np.float16)
    ids = rng.choice(10**6, size=n, replace=False).astype(np.int64)
    scores = {
        "ppl": rng.lognormal(size=n).astype(np.float32),
        "el2n": rng.uniform(size=n).astype(np.float32),
        "entropy": rng.gamma(3.0, size=n).astype(np.float32),
        "grand": rng.exponential(size=n).astype(np.float32),
        "ig": rng.normal(1, 0.2, size=n).astype(np.float32),
    }
    scores["ig"][rng.uniform(size=n) < text_only] = np.nan
    return ids, x, scores


def fixed_clustering(n, k, seed, d=16):
    assign = np.random.default_rng(seed).integers(0, k, n).astype(np.int64)
    return Clustering(assign, np.zeros((k, d), np.float32))


@pytest.fixture(scope="module")
def pooled():
    ids, x, scores = make_pool()
    cfg = SelectionConfig(n_clusters=4)
    return ids, x, scores, cfg


@pytest.mark.parametrize("method", ["adapt-inf", "random", "score:el2n", "semdedup", "full"])
@pytest.mark.parametrize("budget", [0, 250, 0.5, 5000])
def test_every_method_selects_exactly_the_budget(pooled, method, budget):
    ids, x, scores, cfg = pooled
    r = select_samples(ids, x, scores, method, budget, cfg, seed=3)
    want = len(ids) if method == "full" else min(int(budget * len(ids) + 0.5) if isinstance(budget, float) else budget, len(ids))
    got = [p.sample_id for p in r.selected]
    assert len(got) == want == r.budget and len(set(got)) == want and set(got) <= set(ids.tolist())
    assert sum(c.selected for c in r.clusters) == want
    assert [c.size for c in r.clusters] == r.clustering.sizes().tolist()
    pos = {int(i): p for p, i in enumerate(ids)}
    for p in r.selected:
        assert r.clustering.assign[pos[p.sample_id]] == p.cluster


def test_adapt_inf_follows_budgets_experts_and_ccs(pooled):
    ids, x, scores, cfg = pooled
    r = select_samples(ids, x, scores, "adapt-inf", 400, cfg, seed=1)
    members = r.clustering.members()
    assert [c.budget for c in r.clusters] == allocate_budget([len(m) for m in members], 400)
    pos = {int(i): p for p, i in enumerate(ids)}
    for c, rows in zip(r.clusters, members):
        expert, ent = choose_expert({k: v[rows] for k, v in scores.items()})
        assert (c.expert, c.entropies) == (expert, ent)
        picked = [p for p in r.selected if p.cluster == c.id]
        assert len(picked) == c.budget and all(p.expert == expert for p in picked)
        for p in picked:
            assert p.score == pytest.approx(float(scores[expert][pos[p.sample_id]]))
            assert 0 <= p.stratum < 50  # budgets this small never need the tails
    again = select_samples(ids, x, scores, "adapt-inf", 400, cfg, seed=1)
    assert again.selected == r.selected
    other = select_samples(ids, x, scores, "adapt-inf", 400, cfg, seed=2)
    assert other.selected != r.selected


def test_score_method_uses_one_expert_and_unscored_rows_last(pooled):
    ids, x, scores, cfg = pooled
    r = select_samples(ids, x, scores, "score:ig", 0.9, cfg, seed=0)
    assert {c.expert for c in r.clusters} == {"ig"}
    for c, rows in zip(r.clusters, r.clustering.members()):
        n_scored = int(np.isfinite(scores["ig"][rows]).sum())
        unscored = [p for p in r.selected if p.cluster == c.id and p.score is None]
        assert len(unscored) == max(0, c.budget - n_scored) > 0
        assert all(p.stratum is None for p in unscored)
    with pytest.raises(ValueError, match="score:nope"):
        select_samples(ids, x, scores, "score:nope", 10, cfg, seed=0)
    with pytest.raises(ValueError, match="method"):
        select_samples(ids, x, scores, "best", 10, cfg, seed=0)


def test_ppl_strata_are_equal_width_in_log_space():
    # One cluster, log-normal ppl: CCS strata are equal-width in log ppl, and provenance keeps the
    # raw ppl. Raw-space strata would put most of the range (and of the picks) in the long tail.
    ids, x, scores = make_pool(n=4000, seed=4)
    cfg = SelectionConfig(n_clusters=1, n_strata=10, tails=(0.0, 100.0))
    r = select_samples(ids, x, scores, "score:ppl", 400, cfg, seed=0)
    ppl = dict(zip(ids.tolist(), scores["ppl"].astype(np.float64).tolist()))
    assert all(p.score == pytest.approx(ppl[p.sample_id]) for p in r.selected)
    log_all = np.log(scores["ppl"].astype(np.float64))
    edges = np.linspace(log_all.min(), log_all.max(), 11)
    expected = np.clip(np.digitize(np.log([p.score for p in r.selected]), edges[1:-1]), 0, 9)
    assert [p.stratum for p in r.selected] == expected.tolist()
    # the picks spread over log ppl: the raw median of the picks stays below the raw mean of the pool
    assert np.median([p.score for p in r.selected]) < np.exp(log_all).mean()


def test_semdedup_sets_duplicates_aside_before_sampling():
    ids, x, scores = make_pool(n=600)
    x = np.concatenate([x, x[:200]])  # 200 exact duplicates of earlier rows, with later ids
    ids = np.concatenate([ids, np.arange(2 * 10**6, 2 * 10**6 + 200)])
    scores = {k: np.concatenate([v, v[:200]]) for k, v in scores.items()}
    cfg = SelectionConfig(n_clusters=3, prune=PruneConfig(eps=0.01))
    r = select_samples(ids, x, scores, "semdedup", 500, cfg, seed=0)
    assert sum(c.pruned for c in r.clusters) == 200
    assert not any(p.sample_id >= 2 * 10**6 for p in r.selected)
    r = select_samples(ids, x, scores, "semdedup", 700, cfg, seed=0)  # survivors too few: top up
    assert len(r.selected) == 700 and sum(p.sample_id >= 2 * 10**6 for p in r.selected) == 100


def test_given_clustering_is_reused(pooled):
    ids, x, scores, cfg = pooled
    first = select_samples(ids, x, scores, "adapt-inf", 300, cfg, seed=4)
    again = select_samples(ids, x, scores, "adapt-inf", 300, cfg, seed=4, clustering=first.clustering)
    assert again.clustering is first.clustering and again.selected == first.selected


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400), k=st.integers(1, 8), budget=st.integers(0, 500), seed=st.integers(0, 2**31 - 1),
    method=st.sampled_from(["adapt-inf", "score:grand", "random"]),
)
def test_property_exact_bounded_and_seeded(n, k, budget, seed, method):
    ids, x, scores = make_pool(n=n, seed=seed % 1000)
    clustering = fixed_clustering(n, k, seed)
    cfg = SelectionConfig(n_clusters=k)
    r = select_samples(ids, x, scores, method, budget, cfg, seed, clustering)
    assert len(r.selected) == min(budget, n)
    sizes = clustering.sizes()
    for c in r.clusters:
        assert c.selected <= sizes[c.id]
    if method != "random":
        assert [c.selected for c in r.clusters] == allocate_budget(sizes.tolist(), budget)
    assert select_samples(ids, x, scores, method, budget, cfg, seed, clustering).selected == r.selected


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="n_clusters"):
        SelectionConfig(n_clusters=0)
    with pytest.raises(ValueError, match="tails"):
        SelectionConfig(tails=(50, 10))
    with pytest.raises(ValueError, match="n_strata"):
        SelectionConfig(n_strata=0)


@pytest.mark.parametrize("ascending", [True, False])
def test_duplicate_ids_are_refused_in_any_order(ascending):
    ids, x, scores = make_pool(n=50)
    ids = np.sort(ids) if ascending else ids
    select_samples(ids, x, scores, "random", 10, SelectionConfig(n_clusters=2), seed=0)  # unique: fine
    ids = ids.copy()
    ids[7] = ids[31]
    with pytest.raises(ValueError, match="ids must be unique"):
        select_samples(ids, x, scores, "random", 10, SelectionConfig(n_clusters=2), seed=0)
