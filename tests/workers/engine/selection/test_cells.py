"""Cells (workers/engine/selection/cells.py): a partition of the rows, probed nearest first."""
import numpy as np
import pytest

import workers.engine.selection.cells as cellsm
from workers.engine.selection.cells import split_cells


def unit_rows(m, d, seed):
    x = np.random.default_rng(seed).normal(size=(m, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


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


@pytest.mark.parametrize("radix", [3, 40, 2**31])  # 2**31: the int64 keys would overflow
def test_probe_sets_equal_numpy_unique_over_rows(radix):
    rng = np.random.default_rng(radix % 1000)
    ordered = np.sort(rng.integers(0, min(radix, 50), size=(500, 3)), axis=1)
    if radix == 2**31:
        ordered[::7] += 2**31 - 60
    sets, which = cellsm._probe_sets(ordered, radix)
    want_sets, want_which = np.unique(ordered, axis=0, return_inverse=True)
    np.testing.assert_array_equal(sets, want_sets)
    np.testing.assert_array_equal(which, want_which.ravel())


@pytest.mark.parametrize("p", [1, 2, 3, 7])
def test_top_columns_equal_a_stable_descending_sort(p):
    rng = np.random.default_rng(p)
    s = rng.integers(0, 4, size=(300, 5)).astype(np.float32)  # many ties
    want = np.argsort(-s, axis=1, kind="stable")[:, :p]
    cols, vals = cellsm._top_columns(s.copy(), p)
    np.testing.assert_array_equal(cols, want)
    np.testing.assert_array_equal(vals, np.take_along_axis(s, want, axis=1))
