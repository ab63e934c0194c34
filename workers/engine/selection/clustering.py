"""Pseudo-skill clusters: spherical k-means (FAISS) on L2-normalised gradient features."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from workers.engine.selection.vectors import BLOCK_ROWS, gather_normalized, iter_normalized_blocks, to_float32


@dataclass(frozen=True)
class Clustering:
    """Args: assign: int64[n] cluster of every row; centroids: float32[k, d], unit norm."""

    assign: np.ndarray
    centroids: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def sizes(self) -> np.ndarray:
        return np.bincount(self.assign, minlength=self.n_clusters)

    def members(self) -> list[np.ndarray]:
        """Row positions of every cluster, ascending."""
        order = np.argsort(self.assign, kind="stable")
        bounds = np.cumsum(self.sizes())[:-1]
        return np.split(order, bounds)


def faiss_gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def greedy_kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (2 + ln k candidates per step, the one lowering the potential
    most wins) with squared chordal distance 2 − 2·cos. Returns float32[k, d].

    Plain k-means++ often puts two seeds in one tight cluster when clusters are equally sized,
    and Lloyd iterations never undo that merge/split.
    """
    n = x.shape[0]
    trials = 2 + int(np.log(k))
    first = int(rng.integers(n))
    d2 = np.maximum(0.0, 2.0 - 2.0 * (x @ x[first]))
    chosen = [first]
    for _ in range(1, k):
        total = float(d2.sum())
        p = d2 / total if total > 0 else None
        cand = rng.choice(n, size=trials, p=p)
        nd = np.minimum(d2[None, :], np.maximum(0.0, 2.0 - 2.0 * (x[cand] @ x.T)))
        best = int(np.argmin(nd.sum(axis=1)))
        chosen.append(int(cand[best]))
        d2 = nd[best]
    return np.ascontiguousarray(x[chosen], dtype=np.float32)


def train_spherical_kmeans(
    x: np.ndarray, k: int, seed: int, niter: int, *, plus_plus: bool = True, redo: int = 3,
    threads: int | None = 1,
) -> np.ndarray:
    """Spherical k-means (FAISS Lloyd iterations) on already-normalised rows.

    With `plus_plus`, `redo` runs from greedy k-means++ seeds and keeps the one with the highest
    mean cosine to the centroids (ties: the earlier run); otherwise one run from FAISS's random
    seeding (cheap, for the many small cells of pruning).

    Args:
        x: [m, d] float32 unit rows, m >= k.
        threads: the `redo` runs are independent and seeded apart, so they run on this many
            threads (None: the engine default); the result does not depend on it.
    Returns:
        float32[k, d] unit centroids.
    """
    import faiss

    from workers.engine.selection.parallel import map_parallel

    m, d = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)

    def run(init: np.ndarray | None, run_seed: int) -> np.ndarray:
        km = faiss.Kmeans(
            # FAISS takes a C int seed: fold larger ones (seed + r can pass 2**31 - 1)
            d, k, niter=niter, seed=run_seed % 2**31, spherical=True, gpu=faiss_gpu_available(), verbose=False,
            # The caller already subsampled; stop FAISS from subsampling again or warning about it.
            max_points_per_centroid=max(1, -(-m // k)), min_points_per_centroid=1,
        )
        km.train(x, init_centroids=init)
        return np.ascontiguousarray(km.centroids, dtype=np.float32)

    if not plus_plus:
        return run(None, seed)

    def seeded_run(r: int) -> tuple[float, np.ndarray]:
        centroids = run(greedy_kmeans_pp(x, k, np.random.default_rng([seed, r])), seed + r)
        return float((x @ centroids.T).max(axis=1).mean()), centroids

    best, best_fit = None, -np.inf
    for fit, centroids in map_parallel(seeded_run, range(redo), threads):
        if fit > best_fit + 1e-12:
            best, best_fit = centroids, fit
    return best


def assign_nearest(x: np.ndarray, centroids: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Highest-cosine centroid of every row of `x` (float16/32, any norm), in row blocks.

    Args:
        x: [n, d] float16 or float32. centroids: [k, d] float32 unit rows.
        threads: row blocks converted and searched in parallel (None: the engine default).
    Returns:
        int64[n].
    """
    import faiss

    from workers.engine.selection.parallel import map_parallel

    index = faiss.IndexFlatIP(centroids.shape[1])
    if faiss_gpu_available():
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(centroids)
    out = np.empty(x.shape[0], dtype=np.int64)

    def one(start: int) -> None:
        # The argmax of x·c over unit centroids does not depend on the row's norm: no need to
        # normalise (an all-zero row ties everywhere and goes to centroid 0 either way).
        src = np.asarray(x[start : start + BLOCK_ROWS])
        block = np.empty(src.shape, dtype=np.float32)
        to_float32(src, block)
        out[start : start + len(block)] = index.search(block, 1)[1][:, 0]

    for _ in map_parallel(one, range(0, x.shape[0], BLOCK_ROWS), threads):
        pass
    return out


def _seeded_rows(n: int, m: int, seed: int) -> np.ndarray:
    if m >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 0x5EED]).choice(n, size=m, replace=False))


def simplified_silhouette(x: np.ndarray, centroids: np.ndarray) -> float:
    """Mean simplified silhouette (Hruschka et al. 2004): distances to the own centroid (a)
    and to the nearest other centroid (b), s = (b - a) / max(a, b). O(n·k), no pairwise matrix.

    Args:
        x: [m, d] float32 unit rows. centroids: [k, d] float32 unit rows, k >= 2.
    """
    sims = x @ centroids.T
    top2 = -np.sort(-sims, axis=1)[:, :2]
    # Euclidean distance on the unit sphere: ‖u − v‖ = sqrt(2 − 2 cos).
    a = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * top2[:, 0]))
    b = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * top2[:, 1]))
    denom = np.maximum(a, b)
    s = np.divide(b - a, denom, out=np.zeros_like(a), where=denom > 0)
    return float(s.mean())


def choose_n_clusters(x: np.ndarray, seed: int, *, max_k: int = 32, sample: int = 20_000, niter: int = 10) -> int:
    """The "auto" criterion: on a seeded subsample of `sample` rows, fit spherical k-means for
    k = 2..max_k and keep the k with the highest mean simplified silhouette (ties: smaller k).

    Args:
        x: [n, d] float16 or float32 features.
    """
    n = x.shape[0]
    rows = _seeded_rows(n, sample, seed)
    xs = gather_normalized(x, rows)
    best_k, best_score = 1, -np.inf
    for k in range(2, min(max_k, len(rows) - 1) + 1):
        centroids = train_spherical_kmeans(xs, k, seed, niter, redo=1)
        score = simplified_silhouette(xs, centroids)
        if score > best_score + 1e-12:
            best_k, best_score = k, score
    return best_k


def cluster_features(
    x: np.ndarray,
    n_clusters: int | Literal["auto"],
    seed: int,
    niter: int = 20,
    *,
    points_per_centroid: int = 256,
    auto_max_clusters: int = 32,
    auto_sample: int = 20_000,
    threads: int | None = None,
) -> Clustering:
    """Spherical k-means clusters of the pool, seeded; on GPU when FAISS has one.

    Centroids are trained on a seeded subsample of `points_per_centroid` rows per centroid (FAISS
    subsamples the same way by default); then every row is assigned to its nearest centroid in
    blocks, so a 1M-row pool never needs a float32 copy of its own.

    Args:
        x: [n, d] float16 or float32 features (array, memmap or `FileRows`); normalised here.
        n_clusters: k, or "auto" (see `choose_n_clusters`). k is capped at n.
        seed: seeds the subsample and the k-means initialisation.
        niter: k-means iterations.
        threads: threads for the assignment pass (kernels run single-threaded, see `parallel`).
    Returns:
        Clustering(assign int64[n], centroids float32[k, d]).
    """
    from workers.engine.selection.parallel import single_threaded_kernels

    with single_threaded_kernels():
        return _cluster(x, n_clusters, seed, niter, points_per_centroid, auto_max_clusters, auto_sample, threads)


def _cluster(x, n_clusters, seed, niter, points_per_centroid, auto_max_clusters, auto_sample, threads) -> Clustering:
    n, d = x.shape
    if n == 0:
        return Clustering(np.zeros(0, dtype=np.int64), np.zeros((0, d), dtype=np.float32))
    if n_clusters == "auto":
        k = choose_n_clusters(x, seed, max_k=auto_max_clusters, sample=auto_sample)
    elif isinstance(n_clusters, int) and not isinstance(n_clusters, bool) and n_clusters >= 1:
        k = n_clusters
    else:
        raise ValueError(f"n_clusters must be a positive int or 'auto', got {n_clusters!r}")
    k = min(k, n)
    if k == 1:
        centroid = _normalized_sum(x)
        norm = np.linalg.norm(centroid)
        centroid = (centroid / norm if norm > 0 else centroid).astype(np.float32)[None, :]
        return Clustering(np.zeros(n, dtype=np.int64), centroid)
    train_rows = _seeded_rows(n, k * points_per_centroid, seed)
    centroids = train_spherical_kmeans(gather_normalized(x, train_rows), k, seed, niter, threads=threads)
    return Clustering(assign_nearest(x, centroids, threads), centroids)


def _normalized_sum(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1], dtype=np.float64)
    for _, block in iter_normalized_blocks(x):
        total += block.sum(axis=0, dtype=np.float64)
    return total
