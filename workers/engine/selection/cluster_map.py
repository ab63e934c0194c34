"""What the dashboard draws of a round's selection: a 2-D map of the candidates and the score
histogram of every cluster's expert. Pure numpy; the select stage stores the result as a blob."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workers.engine.selection.experts import LOG_SPACE_EXPERTS, selection_values

MAP_MAX_POINTS = 20_000  # a scatter of 20k points still pans smoothly in the browser (plotly WebGL)
HISTOGRAM_BINS = 20
_RANK = 12  # randomized PCA: sketch width (2 components + oversampling)
_BLOCK = 4_096  # rows read at a time: 4,096 x 8,192 float32 = 128 MiB at the default proj_dim


def pca_2d(rows: Any, positions: np.ndarray, seed: int = 0) -> np.ndarray:
    """The first two principal components of rows `positions` of `rows`, streamed in blocks.

    An exact PCA needs the d x d covariance (n d^2 flops: 1.3 TFLOP for 20k rows at d = 8,192) or
    all rows in memory; a randomized range finder with one power iteration (Halko et al. 2011,
    alg. 4.3) needs three passes of n d r flops and memory for d x r and n x r numbers: 3.8 s for
    20k rows of 8,192 float16 read from a file, on two busy cores.

    Args:
        rows: [n, d] array or FileRows (float16 or float32).
        positions: int64[m] ascending row positions to map.
    Returns:
        float32[m, 2] coordinates, each axis's sign fixed so its largest |value| is positive.
    """
    m, d = len(positions), rows.shape[1]
    if m == 0:
        return np.zeros((0, 2), dtype=np.float32)
    blocks = [positions[s : s + _BLOCK] for s in range(0, m, _BLOCK)]

    def read(block: np.ndarray) -> np.ndarray:
        # float16 features overflow to inf on a huge gradient (and a NaN loss gives NaN): such a
        # value counts as 0 here, or one of them would make the SVD fail and the round with it
        return np.nan_to_num(np.asarray(rows[block], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    def centred(block: np.ndarray) -> np.ndarray:
        return read(block) - mean

    mean = np.zeros(d)  # summed in float64, used in float32 like the blocks
    mean = (sum((read(b).sum(axis=0, dtype=np.float64) for b in blocks), mean) / m).astype(np.float32)
    r = min(_RANK, d, m)
    omega = np.random.default_rng(seed).standard_normal((d, r)).astype(np.float32)
    z = np.zeros((d, r), dtype=np.float64)
    for b in blocks:  # z = X^T X omega: the sketch after one power iteration
        x = centred(b)
        z += x.T @ (x @ omega)
    q, _ = np.linalg.qr(z)
    q = q.astype(np.float32)
    sketch = np.concatenate([centred(b) @ q for b in blocks]).astype(np.float64)  # m x r, in the basis q
    _, _, vt = np.linalg.svd(sketch, full_matrices=False)
    coords = sketch @ vt[:2].T
    if coords.shape[1] < 2:  # d or m of 1: a flat second axis
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    return (coords * np.where(signs == 0, 1, signs)).astype(np.float32)


def sample_positions(n: int, limit: int, seed: int) -> np.ndarray:
    """All of range(n) when n <= limit, else `limit` of them uniformly without replacement, ascending."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)).astype(np.int64)


def score_histograms(
    assign: np.ndarray, selected: np.ndarray, experts: Mapping[int, str | None], scores: Mapping[str, np.ndarray],
    bins: int = HISTOGRAM_BINS,
) -> list[dict[str, Any]]:
    """Per cluster with an expert: the histogram of its rows' expert scores (in the space selection
    works in: log for ppl), for all rows and for the selected ones, over the same edges.

    Args:
        assign: int64[n] cluster of each row; selected: bool[n]; scores: expert → float32[n].
    """
    out = []
    for cluster, expert in sorted(experts.items()):
        if expert is None or expert not in scores:
            continue
        rows = assign == cluster
        values = selection_values(expert, scores[expert][rows])
        finite = np.isfinite(values)
        if not finite.any():
            continue
        edges = np.histogram_bin_edges(values[finite], bins=bins)
        counts, _ = np.histogram(values[finite], bins=edges)
        chosen, _ = np.histogram(values[finite & selected[rows]], bins=edges)
        out.append({"cluster": int(cluster), "expert": expert, "log_scale": expert in LOG_SPACE_EXPERTS,
                    "edges": edges.tolist(), "counts": counts.tolist(), "selected": chosen.tolist(),
                    "unscored": int((~finite).sum())})
    return out


def build_cluster_view(
    ids: np.ndarray, features: Any, assign: np.ndarray, selected_ids: np.ndarray, pruned_ids: np.ndarray,
    experts: Mapping[int, str | None], scores: Mapping[str, np.ndarray], seed: int = 0,
    max_points: int = MAP_MAX_POINTS,
) -> dict[str, Any]:
    """The map (a uniform sample of at most `max_points` candidates, 2-D PCA of their features,
    with cluster, selected and pruned flags) and the score histograms (over all candidates).

    Args:
        ids: int64[n] candidate sample ids; features: [n, d] rows (array or FileRows);
        assign: int64[n] clusters; selected_ids, pruned_ids: int64 sample ids.
    """
    n = len(ids)
    selected = np.isin(ids, selected_ids)
    pruned = np.isin(ids, pruned_ids)
    at = sample_positions(n, max_points, seed)
    xy = pca_2d(features, at, seed)
    return {
        "candidates": int(n),
        "points": {
            "sample_id": ids[at].tolist(),
            "x": np.round(xy[:, 0], 5).tolist(),
            "y": np.round(xy[:, 1], 5).tolist(),
            "cluster": assign[at].tolist(),
            "selected": selected[at].tolist(),
            "pruned": pruned[at].tolist(),
        },
        "histograms": score_histograms(assign, selected, experts, scores),
    }
