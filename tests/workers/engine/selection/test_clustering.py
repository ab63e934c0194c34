"""Spherical k-means: recovers planted clusters, seeded, "auto" finds the planted k."""
import numpy as np
import pytest

from workers.engine.selection.clustering import cluster_features, simplified_silhouette


def planted(n=3000, d=32, k=6, noise=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    labels = rng.integers(0, k, n)
    x = centers[labels] * rng.uniform(0.5, 3.0, size=(n, 1))  # scale must not matter
    x += noise * np.sqrt(d / 32) * rng.normal(size=(n, d)) * np.linalg.norm(centers[labels], axis=1, keepdims=True) / np.sqrt(d)
    return x.astype(np.float16), labels


def same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_recovers_planted_clusters_from_float16_memmap(tmp_path):
    x, labels = planted()
    mm = np.memmap(tmp_path / "f.bin", dtype=np.float16, mode="w+", shape=x.shape)
    mm[:] = x
    c = cluster_features(mm, 6, seed=1)
    assert c.assign.dtype == np.int64 and c.centroids.dtype == np.float32
    assert c.centroids.shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(c.centroids, axis=1), 1.0, atol=1e-5)
    assert same_partition(c.assign, labels)
    assert c.sizes().sum() == len(x)


def test_same_seed_same_clustering():
    x, _ = planted(noise=1.5)  # overlapping clusters: the seed matters
    a, b = cluster_features(x, 5, seed=7), cluster_features(x, 5, seed=7)
    np.testing.assert_array_equal(a.assign, b.assign)
    np.testing.assert_array_equal(a.centroids, b.centroids)


@pytest.mark.parametrize("seed", [2**31 - 1, 2**32 - 1, 2**40])
def test_any_seed_the_api_or_an_older_pool_holds_runs(seed):
    """FAISS takes a C int seed; seed + r of the k-means++ restarts passes it at 2**31 - 1."""
    x, labels = planted(n=600, k=4, seed=3)
    c = cluster_features(x, 4, seed=seed)
    assert same_partition(c.assign, labels)


def test_auto_finds_the_planted_number_of_clusters():
    for k in (3, 7):
        x, labels = planted(k=k, seed=k)
        c = cluster_features(x, "auto", seed=0, auto_max_clusters=10)
        assert c.n_clusters == k
        assert same_partition(c.assign, labels)


def test_simplified_silhouette_against_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cen = x[:3] / np.linalg.norm(x[:3], axis=1, keepdims=True)
    dist = np.linalg.norm(x[:, None, :] - cen[None, :, :], axis=2)
    own = dist.argmin(1)
    a = dist[np.arange(50), own]
    b = np.where(np.eye(3, dtype=bool)[own], np.inf, dist).min(1)
    assert abs(simplified_silhouette(x, cen) - np.mean((b - a) / np.maximum(a, b))) < 1e-5


def test_small_and_empty_pools():
    x, _ = planted(n=4)
    c = cluster_features(x, 10, seed=0)
    assert c.n_clusters == 4 and sorted(c.assign.tolist()) == [0, 1, 2, 3]
    empty = cluster_features(np.zeros((0, 8), np.float16), 3, seed=0)
    assert empty.assign.shape == (0,)
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_features(x, 0, seed=0)
