"""Blocked earlier-neighbour search against a dense reference."""
import numpy as np
import pytest

import workers.engine.selection.neighbours as nbm
from workers.engine.selection.cells import split_cells
from workers.engine.selection.neighbours import best_earlier, earlier_candidates, earlier_matches


def unit_rows(m, d=16, seed=0, dups=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, d))
    if dups:
        src = rng.integers(0, m, dups)
        x = np.concatenate([x, x[src] + 0.01 * rng.normal(size=(dups, d))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def dense_reference(x, threshold, k, allowed=None):
    """From the full float64 matrix: per row (best earlier row, its similarity, the first k
    earlier rows above threshold, whether there were at most k); ties: earlier first."""
    s = x.astype(np.float64) @ x.astype(np.float64).T
    out = []
    for i in range(len(x)):
        cand = sorted((j for j in range(i) if allowed is None or allowed(i, j)), key=lambda j: (-s[i, j], j))
        above = [j for j in cand if s[i, j] > threshold]
        out.append((cand[0] if cand else -1, s[i, cand[0]] if cand else -np.inf, above[:k], len(above) <= k))
    return out


def assert_matches(x, found, want):
    for i, (best, best_sim, above, complete) in enumerate(want):
        assert found.best[i] == best, i
        np.testing.assert_allclose(found.best_sim[i], best_sim, atol=1e-5)
        nbr, sim = found.edges(i)
        assert nbr.tolist() == above, i
        assert found.complete[i] == complete, i
        np.testing.assert_allclose(sim, x[nbr] @ x[i], atol=1e-5)


@pytest.mark.parametrize("k", [1, 4, 50])
@pytest.mark.parametrize("slack", [0, 1 << 16])  # 0: lists are cut after every tile
def test_exhaustive_cell_matches_dense_reference(k, slack, monkeypatch):
    monkeypatch.setattr(nbm, "BLOCK_ENTRIES", 300)  # many small blocks and query chunks
    monkeypatch.setattr(nbm, "MEMBER_TILE", 7)
    monkeypatch.setattr(nbm, "EDGE_SLACK", slack)
    x = unit_rows(120, dups=30)
    cells = split_cells(x, exact_max=10_000, cell_size=16, nprobe=3, seed=0)
    assert cells.n_cells == 1
    found = earlier_matches(x, cells, 0.3, k)
    want = dense_reference(x, 0.3, k)
    assert sum(len(w[2]) for w in want) > 50
    assert all(w[3] for w in want) == (k == 50)  # small k: some lists were cut
    assert_matches(x, found, want)


def test_best_earlier_among_allowed_rows_only():
    x = unit_rows(150, d=8, seed=3, dups=40)
    cells = split_cells(x, exact_max=10_000, cell_size=16, nprobe=3, seed=0)
    rng = np.random.default_rng(0)
    queries, members = rng.uniform(size=len(x)) < 0.5, rng.uniform(size=len(x)) < 0.6
    best, best_sim = best_earlier(x, cells, queries, members)
    want = dense_reference(x, 1.0, 0, allowed=lambda i, j: members[j])
    for i in range(len(x)):
        if queries[i]:
            assert best[i] == want[i][0], i
            np.testing.assert_allclose(best_sim[i], want[i][1], atol=1e-5)
        else:
            assert best[i] == -1 and best_sim[i] == -np.inf


def test_cell_path_matches_dense_reference_on_its_candidate_graph():
    x = unit_rows(800, d=12, seed=2, dups=200)
    cells = split_cells(x, exact_max=50, cell_size=32, nprobe=3, seed=0)
    found = earlier_matches(x, cells, 0.8, 5)
    home = cells.home
    want = dense_reference(x, 0.8, 5, allowed=lambda i, j: home[j] in cells.probes[i])
    assert_matches(x, found, want)
    members = cells.members()
    for i in (5, 400, 999):
        cand = earlier_candidates(cells, members, i)
        assert sorted(cand.tolist()) == [j for j in range(i) if home[j] in cells.probes[i]]
