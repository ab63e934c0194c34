"""Blocked normalisation and gathering, and the engine's thread pool."""
import numpy as np

import workers.engine.selection.vectors as vec
from workers.engine.feature_file import FileRows
from workers.engine.selection.parallel import map_parallel


def test_gather_normalized_matches_float64_reference(tmp_path, monkeypatch):
    monkeypatch.setattr(vec, "GATHER_ROWS", 7)  # several chunks, the last one partial
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 9)).astype(np.float16)
    x[3] = 0  # an all-zero row stays zero instead of becoming NaN
    mm = np.memmap(tmp_path / "x.f16", dtype=np.float16, mode="w+", shape=x.shape)
    mm[:] = x
    ref = x.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1, keepdims=True)
    ref = np.divide(ref, norms, out=np.zeros_like(ref), where=norms > 0)
    for rows in (np.arange(50), rng.permutation(50)[:20], np.array([3, 1, 3])):
        got = vec.gather_normalized(mm, rows)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref[rows], atol=1e-6)
    blocks = list(vec.iter_normalized_blocks(mm, 7))
    assert [s for s, _ in blocks] == list(range(0, 50, 7))
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), ref, atol=1e-6)
    assert not np.shares_memory(vec.normalize_rows(ref.astype(np.float32)), ref)


def test_map_parallel_keeps_input_order():
    items = list(range(25))
    for threads in (1, 2, 3):
        assert list(map_parallel(lambda i: i * i, items, threads)) == [i * i for i in items]


def test_pool_threads_inherit_single_threaded_faiss():
    # OpenMP's thread count is per thread: a pool thread must not fall back to the process
    # default and run FAISS on every core while its siblings do the same.
    import faiss

    from workers.engine.selection.parallel import single_threaded_kernels

    with single_threaded_kernels():
        assert list(map_parallel(lambda _: faiss.omp_get_max_threads(), range(4), 2)) == [1] * 4


def test_unit_rows_give_exactly_the_gathered_unit_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(vec, "GATHER_ROWS", 7)
    rng = np.random.default_rng(1)
    for dtype, on_file in ((np.float16, False), (np.float32, False), (np.float16, True)):
        x = rng.normal(size=(60, 33)).astype(dtype)
        x[5] = 0
        rows = rng.permutation(60)[:41]
        want = vec.gather_normalized(x, rows)
        if on_file:
            np.save(tmp_path / "x.npy", x)
            got = vec.UnitRows.gather(FileRows(tmp_path / "x.npy"), rows)
            assert isinstance(got.source, FileRows)  # nothing copied but the norms
        else:
            got = vec.UnitRows.gather(x, rows)
        raw = got.source[got.rows] if on_file else got.source  # what it converts from: the rows as stored
        assert np.array_equal(raw, x[rows]) and raw.dtype == dtype
        assert got.shape == want.shape and len(got) == 41
        # bit for bit: pruning decides on thresholds, so the copy's values must not move
        np.testing.assert_array_equal(got[np.arange(41)], want)
        np.testing.assert_array_equal(got[3:17], want[3:17])
        np.testing.assert_array_equal(got[np.array([40, 2, 2])], want[[40, 2, 2]])
        np.testing.assert_array_equal(got[9], want[9])
        centroids = rng.normal(size=(4, 33)).astype(np.float32)
        for block in (8, 40, 64):  # 40: a last block of one row is folded into the one before
            # the same blocks of the gathered rows (BLAS's last bit depends on a product's shape)
            blocks = [want[a:b] @ centroids.T for a, b in vec.row_blocks(41, block)]
            assert [len(b) for b in blocks] == ([8] * 4 + [9] if block == 8 else [41])
            np.testing.assert_array_equal(got.matmul_t(centroids, block_rows=block), np.concatenate(blocks))


def test_row_blocks_cover_the_range_without_a_one_row_tail():
    assert list(vec.row_blocks(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(vec.row_blocks(9, 4)) == [(0, 4), (4, 9)]
    assert list(vec.row_blocks(1, 4)) == [(0, 1)] and list(vec.row_blocks(0, 4)) == []
    assert list(vec.row_blocks(8, 4)) == [(0, 4), (4, 8)]
