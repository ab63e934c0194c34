"""The paper's selection and pruning, as its released script does them (the bench's baseline).

A re-implementation of the algorithms in adymaharana/adapt-inf `data_selection/adapt-inf.py`,
kept faithful in what costs time and memory — not our corrected method:
- clustering: scikit-learn MiniBatchKMeans(n_clusters, batch_size=10240) on the torch-normalised
  float16 features (which scikit-learn turns into float64);
- expert choice ("mwp"): the entropy of a 50-bin histogram whose edges are ±4 × the *raw*
  standard deviation (the unit bug DESIGN §2.4 removes), NaN replaced by 0;
- budgets: ceil-based equal shares with re-splitting (sums need not equal the budget);
- CCS: 5th/95th percentile thresholds by sorted index, 50 strata scanned from the top with a
  Python pass over the cluster per stratum, `random.sample` inside a stratum;
- SemDeDup: per cluster a dense float32 similarity matrix (torch), its upper triangle, the column
  maximum M, and the `keep` samples with the lowest M by the same budget split.
"""
from __future__ import annotations

import math
import random

import numpy as np


def reference_budgets(sizes: list[int], total: int) -> list[int]:
    """The released code's equal-share budget split (ceil shares, smallest clusters first)."""
    k = len(sizes)
    if min(sizes) * k >= total:
        return [math.ceil(total / k)] * k
    order = np.argsort(sizes)
    share = math.ceil(total / k)
    out = [0] * k
    for i, c in enumerate(order):
        if sizes[c] < share:
            out[c] = sizes[c]
            share += math.ceil((share - sizes[c]) / (k - i - 1))
        else:
            out[c] = share
    return out


def reference_entropy(x: np.ndarray, nbins: int = 50) -> float:
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    std = np.std(x)
    z = (x - np.mean(x)) / std
    edges = np.linspace(-4 * std, 4 * std, nbins)  # raw-std edges applied to z: unit-dependent
    counts = np.zeros(nbins)
    for i in range(1, nbins):
        counts[i] = np.sum((z > edges[i - 1]) & (z <= edges[i]))
    p = counts / np.sum(counts)
    p = np.where(p == 0, np.finfo(float).eps, np.nan_to_num(p))
    return float(-np.sum(p * np.log2(p)))


def reference_ccs(scores: np.ndarray, bins: int, budget: int, rng: random.Random) -> np.ndarray:
    ordered = np.sort(scores)
    low, high = ordered[int(len(ordered) * 0.05)], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    right, remaining, share = high, budget, math.ceil(budget / bins)
    picked: list[int] = []
    values = scores.tolist()
    for i in range(bins):
        left = right - (high - low) / bins
        candidates = [j for j, s in enumerate(values) if left < s <= right]  # a full pass per stratum
        if len(candidates) < share:
            picked += candidates
            if i + 1 < bins:
                share = math.ceil((remaining - len(candidates)) / (bins - (i + 1)))
                remaining -= len(candidates)
        else:
            picked += rng.sample(candidates, k=share)
            remaining -= share
        right = left
    return np.asarray(picked, dtype=np.int64)


def reference_cluster(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    return MiniBatchKMeans(n_clusters=n_clusters, batch_size=10240, random_state=seed).fit(x).labels_


def reference_select(labels: np.ndarray, scores: dict[str, np.ndarray], budget: int, seed: int) -> list[int]:
    """mwp expert per cluster + CCS; returns the number selected per cluster."""
    k = int(labels.max()) + 1
    members = [np.flatnonzero(labels == c) for c in range(k)]
    budgets = reference_budgets([len(m) for m in members], budget)
    rng = random.Random(seed)
    counts = []
    for c, rows in enumerate(members):
        if len(rows) == 0:  # MiniBatchKMeans can leave a cluster empty; the script would crash
            counts.append(0)
            continue
        names = list(scores)
        ent = [reference_entropy(scores[e][rows]) for e in names]
        chosen = np.nan_to_num(scores[names[int(np.argmax(ent))]][rows].astype(np.float64))
        counts.append(len(reference_ccs(chosen, 50, budgets[c], rng)))
    return counts


def reference_semdedup(x: np.ndarray, labels: np.ndarray, keep: int) -> list[int]:
    """Dense per-cluster SemDeDup; returns the number kept per cluster."""
    import torch

    k = int(labels.max()) + 1
    members = [np.flatnonzero(labels == c) for c in range(k)]
    budgets = reference_budgets([len(m) for m in members], keep)
    kept = []
    for c, rows in enumerate(members):
        if len(rows) == 0:
            kept.append(0)
            continue
        e = torch.nn.functional.normalize(torch.from_numpy(x[rows]).float(), p=2, dim=-1)
        sim = e @ e.T  # the n_c × n_c matrix that keeps this approach from reaching 1M rows
        m = torch.max(torch.triu(sim, diagonal=1), dim=0)[0]
        del sim
        kept.append(len(torch.argsort(m)[: budgets[c]]))
    return kept


def run_reference(x16: np.ndarray, scores: dict[str, np.ndarray], budget: int, keep: int,
                  n_clusters: int = 10, seed: int = 0) -> dict[str, list[int]]:
    """Cluster, select `budget`, prune to `keep`, as the released script would."""
    import torch

    # As the script loads its float16 gradient features: torch-normalised, still float16, so
    # scikit-learn clusters a float64 copy (its accepted dtypes are float64 and float32).
    x = torch.nn.functional.normalize(torch.from_numpy(np.array(x16)), dim=-1).numpy()
    labels = reference_cluster(x, n_clusters, seed)
    selected = reference_select(labels, scores, budget, seed)
    kept = reference_semdedup(x, labels, keep)
    return {"selected_per_cluster": selected, "kept_per_cluster": kept}
