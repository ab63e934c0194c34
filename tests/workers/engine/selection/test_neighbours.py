"""Blocked earlier-neighbour search against a dense reference."""
import numpy as np
import pytest

import workers.engine.selection.neighbours as nbm
from workers.engine.selection.neighbours import earlier_candidates, earlier_neighbours, split_cells


def unit_rows(m, d=16, seed=0, dups=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, d))
    if dups:
        src = rng.integers(0, m, dups)
        x = np.concatenate([x, x[src] + 0.01 * rng.normal(size=(dups, d))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def dense_reference(x, k, allowed=None):
    """k most similar earlier rows (ties: earlier first) from the full matrix."""
    s = x.astype(np.float64) @ x.astype(np.float64).T
    out = []
    for i in range(len(x)):
        cand = [j for j in range(i) if allowed is None or allowed(i, j)]
        out.append(sorted(cand, key=lambda j: (-s[i, j], j))[:k])
    return out


@pytest.mark.parametrize("k", [1, 4, 50])
def test_exhaustive_cell_matches_dense_reference(k, monkeypatch):
    monkeypatch.setattr(nbm, "BLOCK_ENTRIES", 300)  # many small blocks and query chunks
    monkeypatch.setattr(nbm, "MEMBER_TILE", 7)
    x = unit_rows(120, dups=30)
    cells = split_cells(x, exact_max=10_000, cell_size=16, nprobe=3, seed=0)
    assert cells.n_cells == 1
    nb = earlier_neighbours(x, cells, k)
    want = dense_reference(x, k)
    for i in range(len(x)):
        got = [j for j in nb.nbr[i].tolist() if j >= 0]
        assert got == want[i], i
        assert nb.complete[i] == (i <= k)
        s = x[got] @ x[i]
        np.testing.assert_allclose(nb.sim[i, : len(got)], s, atol=1e-5)


def test_cells_partition_rows_and_probe_nearest_first():
    x = unit_rows(3000, d=24, seed=1)
    cells = split_cells(x, exact_max=100, cell_size=64, nprobe=3, seed=0)
    assert cells.probes.shape == (3000, 3)
    assert (cells.home >= 0).all()
    sizes = np.bincount(cells.home)
    assert sizes.sum() == 3000 and cells.n_cells >= 3000 // 64 // 2
    members = cells.members()
    assert all(np.all(np.diff(g) > 0) for g in members)
    queries = cells.queries()
    for c in range(cells.n_cells):  # a row queries exactly the cells it probes
        rows = np.flatnonzero((cells.probes == c).any(axis=1))
        np.testing.assert_array_equal(queries[c], rows)
    # No −1 padding here, probes are distinct.
    assert (cells.probes >= 0).all() and all(len(set(p)) == 3 for p in cells.probes.tolist())


def test_cell_path_matches_dense_reference_on_its_candidate_graph():
    x = unit_rows(800, d=12, seed=2, dups=200)
    cells = split_cells(x, exact_max=50, cell_size=32, nprobe=3, seed=0)
    k = 5
    nb = earlier_neighbours(x, cells, k)
    home = cells.home
    want = dense_reference(x, k, allowed=lambda i, j: home[j] in cells.probes[i])
    for i in range(len(x)):
        assert [j for j in nb.nbr[i].tolist() if j >= 0] == want[i], i
    members = cells.members()
    for i in (5, 400, 999):
        cand = earlier_candidates(cells, members, i)
        assert sorted(cand.tolist()) == [j for j in range(i) if home[j] in cells.probes[i]]
