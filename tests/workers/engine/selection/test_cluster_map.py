"""The dashboard's cluster view: the streamed randomized PCA against numpy's exact SVD, sampling,
flags and histograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.engine.feature_file import FeatureFileWriter, FileRows
from workers.engine.selection import cluster_map
from workers.engine.selection.cluster_map import build_cluster_view, pca_2d, sample_positions, score_histograms


def _blobs(n: int = 3_000, d: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian blobs in a random 2-D plane of R^d plus small noise."""
    rng = np.random.default_rng(seed)
    plane = np.linalg.qr(rng.standard_normal((d, 2)))[0].T  # 2 x d, orthonormal rows
    centres = np.array([[0, 8], [7, -4], [-7, -4]], dtype=np.float64)
    assign = rng.integers(0, 3, n)
    x = (centres[assign] + rng.standard_normal((n, 2))) @ plane + 0.05 * rng.standard_normal((n, d))
    return x.astype(np.float32), assign


def _exact_pca(x: np.ndarray) -> np.ndarray:
    c = x.astype(np.float64) - x.mean(axis=0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    return c @ vt[:2].T


def test_pca_2d_matches_exact_svd_up_to_sign(monkeypatch) -> None:
    monkeypatch.setattr(cluster_map, "_BLOCK", 700)  # several blocks, one of them partial
    x, _ = _blobs()
    got = pca_2d(x, np.arange(len(x)))
    want = _exact_pca(x)
    for k in range(2):
        sign = np.sign(got[:, k] @ want[:, k])
        # tolerance: the sketch is exact for a rank-2 signal up to the 0.05 noise's leakage
        np.testing.assert_allclose(sign * got[:, k], want[:, k], atol=1e-2 * np.abs(want[:, k]).max())


def test_pca_2d_reads_file_rows_like_arrays(tmp_path: Path) -> None:
    x, _ = _blobs(500, 16)
    writer = FeatureFileWriter(tmp_path / "f.npy", x.shape)
    writer.write(x.astype(np.float16))
    writer.close()
    at = np.arange(0, 500, 3)
    with FileRows(tmp_path / "f.npy") as rows:
        from_file = pca_2d(rows, at, seed=3)
    np.testing.assert_allclose(from_file, pca_2d(x.astype(np.float16), at, seed=3), atol=1e-5)
    assert from_file.shape == (len(at), 2) and np.abs(from_file).max(axis=0).min() > 1


def test_sample_positions_is_bounded_sorted_and_distinct() -> None:
    assert sample_positions(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    at = sample_positions(50_000, 20_000, 1)
    assert len(at) == 20_000 and (np.diff(at) > 0).all() and at[-1] < 50_000


def test_score_histograms_count_all_and_selected_over_the_same_edges() -> None:
    assign = np.array([0, 0, 0, 0, 1, 1, 1])
    selected = np.array([True, False, True, False, False, False, True])
    scores = {"ppl": np.array([1.0, np.exp(1.5), np.e ** 2, np.nan, 1, 1, 1], dtype=np.float32),
              "el2n": np.array([0.1, 0.2, 0.3, 0.4, 0.0, 0.5, 1.0], dtype=np.float32)}
    got = score_histograms(assign, selected, {0: "ppl", 1: "el2n", 2: None}, scores, bins=2)
    assert [h["cluster"] for h in got] == [0, 1]
    ppl, el2n = got
    assert ppl["log_scale"] and ppl["unscored"] == 1
    np.testing.assert_allclose(ppl["edges"], [0, 1, 2], atol=1e-6)  # log space: ln 1 .. ln e^2
    assert ppl["counts"] == [1, 2] and ppl["selected"] == [1, 1]
    assert not el2n["log_scale"] and el2n["counts"] == [1, 2] and el2n["selected"] == [0, 1]


def test_build_cluster_view_flags_selected_and_pruned_samples() -> None:
    x, assign = _blobs(300, 8)
    ids = np.arange(1000, 1300, dtype=np.int64)
    scores = {"el2n": np.linspace(0, 1, 300, dtype=np.float32)}
    kept = ids[sample_positions(300, 100, seed=0)]
    selected, pruned = kept[[0, 5]], kept[[7, 50, 99]]  # flagged samples the map does show
    view = build_cluster_view(ids, x, assign, selected, np.concatenate([pruned, [s for s in ids if s not in kept][:1]]),
                              {0: "el2n", 1: "el2n", 2: None}, scores, max_points=100)
    p = view["points"]
    assert view["candidates"] == 300 and len(p["sample_id"]) == len(p["x"]) == len(p["pruned"]) == 100
    assert p["sample_id"] == kept.tolist()
    assert sum(p["selected"]) == 2 and sum(p["pruned"]) == 3  # a flagged sample off the map shows nowhere
    flagged = dict(zip(p["sample_id"], zip(p["selected"], p["pruned"])))
    for sid, (sel, pr) in flagged.items():
        assert sel == (sid in selected) and pr == (sid in pruned)
    assert p["cluster"] == [int(assign[i - 1000]) for i in p["sample_id"]]
    assert sorted(h["cluster"] for h in view["histograms"]) == [0, 1]


def test_pca_2d_of_degenerate_inputs_is_finite_and_two_wide() -> None:
    assert pca_2d(np.ones((1, 5), np.float16), np.array([0])).tolist() == [[0, 0]]
    line = pca_2d(np.arange(6, dtype=np.float32).reshape(6, 1), np.arange(6))  # d = 1: a flat second axis
    assert line[:, 0].tolist() == [2.5, 1.5, 0.5, -0.5, -1.5, -2.5] and not line[:, 1].any()
    assert pca_2d(np.zeros((0, 4)), np.array([], dtype=np.int64)).shape == (0, 2)


def test_pca_2d_takes_overflowed_features_as_zero() -> None:
    """A float16 feature that overflowed (inf) or a NaN one must not fail the SVD, and the round with it."""
    x, _ = _blobs(50, 8)
    bad = x.astype(np.float16)
    bad[3, 2], bad[10, 0] = np.inf, np.nan
    xy = pca_2d(bad, np.arange(50))
    assert np.isfinite(xy).all() and xy.shape == (50, 2)
    zeroed = np.nan_to_num(bad.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    np.testing.assert_allclose(xy, pca_2d(zeroed, np.arange(50)), atol=1e-5)
