"""Pruning equals a brute-force O(n²) greedy on small sets; invariants hold on the cell path."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import workers.engine.selection.neighbours as neighbours
from workers.engine.pruning import PruneConfig, prune_pool
from workers.engine.selection.budget import allocate_budget
from workers.engine.selection.clustering import Clustering


def brute_force(ids, x, assign, eps, cap=None, keep=None):
    """The definition, with the full float64 similarity matrix of every cluster. Returns
    sample id → (reason, similarity, acceptable duplicate_of ids): the most similar earlier kept
    sample, any of them when several tie (identical vectors)."""
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tau = 1.0 - eps
    out, survivors = {}, []

    def best_kept(s, i, kept, rows):
        cand = [j for j in kept if j < i]
        if not cand:
            return -np.inf, set()
        top = max(s[i, j] for j in cand)
        return top, {int(ids[rows[j]]) for j in cand if s[i, j] >= top - 1e-6}

    for c in range(assign.max() + 1):
        rows = np.flatnonzero(assign == c)
        rows = rows[np.argsort(ids[rows])]
        s = x[rows] @ x[rows].T
        kept = []
        for i in range(len(rows)):
            top, reps = best_kept(s, i, kept, rows)
            if top > tau:
                out[int(ids[rows[i]])] = ("near_duplicate", top, reps)
            else:
                kept.append(i)
        survivors.append((c, rows, kept, s))
    quotas = [len(k) if keep is None else min(len(k), keep) for _, _, k, _ in survivors]
    if cap is not None and sum(quotas) > cap:
        quotas = allocate_budget(quotas, cap)
    if cap is not None or keep is not None:
        for (c, rows, kept, s), q in zip(survivors, quotas):
            red = {i: best_kept(s, i, kept, rows) for i in kept}
            ranked = sorted(kept, key=lambda i: (-red[i][0], -i))
            for i in ranked[: len(kept) - q]:
                top, reps = red[i]
                out[int(ids[rows[i]])] = ("pool_cap", None if not reps else top, reps or {None})
    return out, survivors


def as_dict(pruned):
    return {p.sample_id: (p.reason, p.similarity, p.duplicate_of) for p in pruned}


def assert_same(got, want):
    assert got.keys() == want.keys()
    for sid, (reason, sim, reps) in want.items():
        g_reason, g_sim, g_rep = got[sid]
        assert g_reason == reason and g_rep in reps, sid
        assert (g_sim is None) == (sim is None) and (sim is None or abs(g_sim - sim) < 1e-5)


def planted_pool(seed, n_random, groups, noise, d=16, n_clusters=3, chains=(), eps=0.05):
    """Random vectors, planted near-duplicate groups (base + small noise), and chains along a
    great circle whose neighbours are near-duplicates but whose second neighbours are not (so
    the greedy's order matters); ids shuffled."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(n_random, d))]
    for size in groups:
        base = rng.normal(size=d)
        parts.append(base + noise * np.linalg.norm(base) / np.sqrt(d) * rng.normal(size=(size, d)))
    step = np.arccos(1 - 0.6 * eps)  # cos(step) > 1 - eps > cos(2 step)
    for size in chains:
        u, v = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
        t = step * np.arange(size) + 0.05 * step * rng.normal(size=size)
        parts.append(np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)
    x = np.concatenate(parts)
    ids = rng.permutation(10 * len(x))[: len(x)].astype(np.int64)
    assign = rng.integers(0, n_clusters, len(x)).astype(np.int64)
    return ids, x, assign


def no_near_ties(x, assign, eps, margin=1e-4):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    same = assign[:, None] == assign[None, :]
    return not np.any(same & (np.abs(s - (1 - eps)) < margin))


def clustering_of(assign, d):
    return Clustering(assign, np.zeros((assign.max() + 1, d), np.float32))


# Planted pools with near-tied similarities are filtered out (`assume`): a tie makes the brute
# force's answer one of several right ones. Some seeds filter most draws; that is by design, not a
# sign the strategy is broken (the tests failed Hypothesis's filter_too_much check now and then).
_SLOW_AND_FILTERED = [HealthCheck.too_slow, HealthCheck.filter_too_much]

pool_st = dict(
    seed=st.integers(0, 2**31 - 1),
    chains=st.lists(st.integers(2, 15), max_size=3),
    n_random=st.integers(0, 60),
    groups=st.lists(st.integers(1, 12), max_size=6),
    noise=st.sampled_from([0.0, 0.02, 0.1, 0.25]),
    eps=st.sampled_from([0.02, 0.05, 0.15, 0.4]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW_AND_FILTERED)
@given(**pool_st, k=st.sampled_from([1, 2, 16]))
def test_exact_path_equals_brute_force(seed, n_random, groups, noise, eps, chains, k):
    ids, x, assign = planted_pool(seed, n_random, groups, noise, chains=chains, eps=eps)
    assume(len(ids) > 0 and no_near_ties(x, assign, eps))
    cfg = PruneConfig(eps=eps, max_neighbors=k)
    got = as_dict(prune_pool(ids, x.astype(np.float32), clustering_of(assign, 16), cfg))
    assert_same(got, brute_force(ids, x, assign, eps)[0])


@settings(max_examples=40, deadline=None, suppress_health_check=_SLOW_AND_FILTERED)
@given(**pool_st, cap_frac=st.floats(0.0, 1.0))
def test_pool_cap_equals_brute_force(seed, n_random, groups, noise, eps, chains, cap_frac):
    ids, x, assign = planted_pool(seed, n_random, groups, noise, chains=chains, eps=eps)
    assume(len(ids) > 0 and no_near_ties(x, assign, eps))
    s = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = s @ s.T
    assume(len(np.unique(np.round(s, 6))) == len(np.unique(np.round(s, 9))))  # no tied redundancies
    cap = int(cap_frac * len(ids))
    cfg = PruneConfig(eps=eps, max_pool_size=cap)
    got = prune_pool(ids, x.astype(np.float32), clustering_of(assign, 16), cfg)
    assert len(ids) - len(got) == min(cap, len(ids)) or all(p.reason == "near_duplicate" for p in got)
    assert_same(as_dict(got), brute_force(ids, x, assign, eps, cap)[0])


@settings(max_examples=30, deadline=None, suppress_health_check=_SLOW_AND_FILTERED)
@given(**pool_st, keep=st.integers(1, 40), cap_frac=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_keep_per_cluster_equals_brute_force(seed, n_random, groups, noise, eps, chains, keep, cap_frac):
    ids, x, assign = planted_pool(seed, n_random, groups, noise, n_clusters=3, chains=chains, eps=eps)
    assume(len(ids) > 0 and no_near_ties(x, assign, eps))
    s = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = s @ s.T
    assume(len(np.unique(np.round(s, 6))) == len(np.unique(np.round(s, 9))))  # no tied redundancies
    cap = None if cap_frac is None else int(cap_frac * len(ids))
    got = prune_pool(ids, x.astype(np.float32), clustering_of(assign, 16),
                     PruneConfig(eps=eps, max_pool_size=cap, keep_per_cluster=keep))
    left = np.bincount(assign, minlength=3) - np.bincount([p.cluster for p in got], minlength=3)
    assert left.max() <= keep and (cap is None or left.sum() <= cap)
    assert_same(as_dict(got), brute_force(ids, x, assign, eps, cap, keep)[0])


def test_budget_multiple_caps_relative_to_the_round_and_the_smaller_cap_binds():
    ids, x, assign = planted_pool(7, 300, [4, 6], 0.05, d=24, n_clusters=3, chains=[], eps=0.05)
    clustering = clustering_of(assign, 24)
    cfg = PruneConfig(max_pool_size=200, budget_multiple=2.5)
    assert (cfg.pool_cap(40), cfg.pool_cap(100), cfg.pool_cap(None)) == (100, 200, 200)
    assert PruneConfig(max_pool_size=None, budget_multiple=1.5).pool_cap(7) == 11  # ceil(10.5)
    assert PruneConfig(max_pool_size=None).pool_cap(7) is None
    got = prune_pool(ids, x.astype(np.float32), clustering, cfg, budget=40)
    assert len(ids) - len(got) == 100
    # without the round's budget only the absolute cap applies
    assert len(ids) - len(prune_pool(ids, x.astype(np.float32), clustering, cfg)) == 200
    # members outside this pruning (a new-only round's) take their room under the cap
    assert len(ids) - len(prune_pool(ids, x.astype(np.float32), clustering, cfg, budget=40, others=30)) == 70
    assert cfg.dedup_only().pool_cap(40) is None and cfg.dedup_only().keep_per_cluster is None


def test_the_default_pool_is_bounded():
    assert PruneConfig().max_pool_size == 1_000_000 and PruneConfig().pool_cap(None) == 1_000_000


def test_planted_duplicate_groups_keep_exactly_one_survivor_each():
    rng = np.random.default_rng(5)
    d, groups = 64, [1, 2, 5, 17, 40]
    bases = rng.normal(size=(len(groups), d))
    x = np.concatenate([b + 0.01 * rng.normal(size=(g, d)) for b, g in zip(bases, groups)])
    gid = np.repeat(np.arange(len(groups)), groups)
    ids = rng.permutation(len(x)).astype(np.int64) + 100
    pruned = prune_pool(ids, x.astype(np.float16), clustering_of(np.zeros(len(x), np.int64), d), PruneConfig())
    gone = {p.sample_id for p in pruned}
    for g in range(len(groups)):
        members = ids[gid == g]
        survivors = [i for i in members if i not in gone]
        assert survivors == [members.min()]  # the oldest sample represents its group
    assert all(p.reason == "near_duplicate" and p.similarity > 0.95 for p in pruned)


@settings(max_examples=25, deadline=None, suppress_health_check=_SLOW_AND_FILTERED)
@given(**pool_st, k=st.sampled_from([1, 16]))
def test_cell_path_probing_every_cell_is_exact(seed, n_random, groups, noise, eps, chains, k):
    ids, x, assign = planted_pool(seed, n_random + 30, groups, noise, n_clusters=2, chains=chains, eps=eps)
    assume(no_near_ties(x, assign, eps))
    # Tiny cells and blocks: the IVF-style path and the block loop run, and probing every
    # cell must make it exact.
    cfg = PruneConfig(eps=eps, exact_max=8, cell_size=6, nprobe=1000, max_neighbors=k)
    old = neighbours.BLOCK_ENTRIES
    neighbours.BLOCK_ENTRIES = 40
    try:
        got = as_dict(prune_pool(ids, x.astype(np.float32), clustering_of(assign, 16), cfg))
    finally:
        neighbours.BLOCK_ENTRIES = old
    assert_same(got, brute_force(ids, x, assign, eps)[0])


def test_cell_path_invariants_and_recall_on_tight_groups():
    rng = np.random.default_rng(11)
    d = 32
    x = rng.normal(size=(3000, d))
    dup_of = rng.choice(3000, size=600, replace=False)
    x = np.concatenate([x, x[dup_of] + 0.003 * rng.normal(size=(600, d))])
    ids = rng.permutation(len(x)).astype(np.int64)
    assign = np.zeros(len(x), np.int64)
    cfg = PruneConfig(eps=0.05, exact_max=100, cell_size=50, nprobe=3)
    got = as_dict(prune_pool(ids, x.astype(np.float16), clustering_of(assign, d), cfg))
    want, _ = brute_force(ids, x.astype(np.float16).astype(np.float64), assign, 0.05)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pos = {int(i): p for p, i in enumerate(ids)}
    for sid, (_, sim, rep) in got.items():  # every pruned sample really repeats a kept one
        assert rep not in got and xn[pos[sid]] @ xn[pos[rep]] > 0.95 and rep < sid
    recall = len(got.keys() & want.keys()) / len(want)
    assert recall >= 0.99, recall


def test_config_validation_names_the_field():
    assert PruneConfig(preset="lite").eps == 0.15 and PruneConfig().eps == 0.05
    with pytest.raises(ValueError, match="preset"):
        PruneConfig(preset="huge")
    with pytest.raises(ValueError, match="max_pool_size"):
        PruneConfig(max_pool_size=-1)
    with pytest.raises(ValueError, match="nprobe"):
        PruneConfig(nprobe=0)
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="keep_per_cluster"):
            PruneConfig(keep_per_cluster=bad)
    for bad in (0.5, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match="budget_multiple"):
            PruneConfig(budget_multiple=bad)


def test_result_does_not_depend_on_threads_and_lite_prunes_more():
    ids, x, assign = planted_pool(3, 400, [5, 9, 30], 0.05, d=24, n_clusters=4, chains=[12, 12], eps=0.15)
    clustering = clustering_of(assign, 24)
    base = dict(exact_max=64, cell_size=32, max_pool_size=300)
    one = prune_pool(ids, x.astype(np.float16), clustering, PruneConfig(threads=1, **base))
    two = prune_pool(ids, x.astype(np.float16), clustering, PruneConfig(threads=2, **base))
    assert one == two and len(one) == len(ids) - 300
    default = {p.sample_id for p in prune_pool(ids, x, clustering, PruneConfig())}
    lite = {p.sample_id for p in prune_pool(ids, x, clustering, PruneConfig(preset="lite"))}
    assert len(lite) > len(default)


def test_the_select_stage_sources_and_blocks_change_nothing(tmp_path, monkeypatch):
    """Pruning from the features file (FileRows, as the select stage reads it) gives exactly what
    it gives on the array in memory; with tiny blocks, the same decisions."""
    import workers.engine.selection.cells as cells
    from workers.engine.selection import SelectionConfig, select_samples
    from workers.engine.feature_file import FileRows

    ids, x, assign = planted_pool(5, 900, [5, 9, 30, 60], 0.02, d=24, n_clusters=3, chains=[12], eps=0.15)
    x16 = x.astype(np.float16)
    np.save(tmp_path / "f.npy", x16)
    cfg = PruneConfig(exact_max=64, cell_size=32, max_pool_size=700, eps=0.15)
    want = prune_pool(ids, x16, clustering_of(assign, 24), cfg)
    assert len(want) > 300 and any(p.reason == "near_duplicate" for p in want)
    with FileRows(tmp_path / "f.npy") as rows:
        assert prune_pool(ids, rows, clustering_of(assign, 24), cfg) == want
        monkeypatch.setattr(cells, "PROBE_BLOCK_ROWS", 7)
        monkeypatch.setattr(neighbours, "QUERY_BLOCK_BYTES", 24 * 4 * 5)  # 5 query rows at a time
        small = prune_pool(ids, rows, clustering_of(assign, 24), cfg)
        # BLAS sums a product in an order that depends on the block's shape: the decisions stay,
        # a similarity may move in its last bit
        assert [(p.sample_id, p.reason, p.duplicate_of) for p in small] == [(p.sample_id, p.reason, p.duplicate_of) for p in want]
        assert all(a.similarity == pytest.approx(b.similarity, abs=1e-6) for a, b in zip(small, want) if b.similarity is not None)
        monkeypatch.undo()
        scores = {"ppl": np.random.default_rng(0).random(len(ids)).astype(np.float32)}
        sel = SelectionConfig(n_clusters=3, prune=cfg)
        on_file = select_samples(ids, rows, scores, "semdedup", 100, sel, 0)
    in_memory = select_samples(ids, x16, scores, "semdedup", 100, sel, 0)
    assert [s.sample_id for s in on_file.selected] == [s.sample_id for s in in_memory.selected]
    assert np.array_equal(on_file.clustering.assign, in_memory.clustering.assign)
