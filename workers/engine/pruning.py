"""Permanent pruning: cluster-wise semantic deduplication, then the pool's caps.

Inside each cluster, samples are visited in ascending sample id (older pool members represent
their group, so the pool does not churn across rounds). A sample is redundant when its cosine
similarity to an earlier *kept* sample exceeds 1 − ε (greedy leader rule: one survivor per group).

Neighbour search never builds an n×n matrix (`selection.cells`, `selection.neighbours`): a cluster of at most
`exact_max` rows is searched exhaustively in blocks (exact); a larger one is split into k-means
cells of about `cell_size` rows and a sample is compared with its `nprobe` nearest cells. One
pass keeps, per sample, its most similar earlier candidate and its candidates above the
threshold (at most K of them: memory O(n·K)); the greedy is exact on that candidate graph (a
sample whose K listed candidates are all pruned is re-checked against every kept candidate),
and survivors whose most similar candidate was pruned get a second scan restricted to the
survivors. Pairs outside each other's probed cells are the only approximation;
`bench/selection.py` measures the recall against the exhaustive search.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from core.engine_defaults import MAX_POOL_SIZE

# ε per preset; "lite" (the paper's LITE variant) prunes more aggressively.
PRESET_EPS = {"default": 0.05, "lite": 0.15}


@dataclass(frozen=True)
class PruneConfig:
    """How a pool is deduplicated and capped.

    Args:
        eps: cosine > 1 − eps to a kept sample means redundant; None takes the preset's value.
        max_pool_size: after dedup, prune the most redundant samples (largest clusters first)
            until the pool has at most this many; None = no absolute cap.
        budget_multiple: a cap relative to the round: at most ceil(budget_multiple × the round's
            budget) samples stay (the smaller of the two caps binds); None = none.
        keep_per_cluster: the released code's rule: after dedup every cluster keeps at most this
            many, its most redundant pruned first; None = none. Applied before the pool caps.
        embedding: what similarity is measured on: "gradient" (the projected gradient features the
            clusters come from) or "hidden" (mean-pooled last hidden states, computed in the same
            feature pass). The round passes the matching array to `prune_pool`; the `semdedup`
            selection method's set-aside always compares gradient features.
        preset: "default" (eps 0.05) or "lite" (eps 0.15).
        exact_max: clusters up to this size are searched exhaustively (exact).
        cell_size: rows per sub-cluster cell in larger clusters.
        nprobe: cells a sample is compared with (its nearest ones).
        max_neighbors: above-threshold earlier candidates kept per sample (K); a sample with
            more is re-checked exactly when all K turn out pruned.
        seed: seeds the cell k-means.
        threads: clusters processed in parallel (None: min(2, cores)); kernels run single-threaded.
    """

    eps: float | None = None
    max_pool_size: int | None = MAX_POOL_SIZE
    budget_multiple: float | None = None
    keep_per_cluster: int | None = None
    embedding: Literal["gradient", "hidden"] = "gradient"
    preset: Literal["default", "lite"] = "default"
    exact_max: int = 1024
    cell_size: int = 128
    # 3 probes: dedup recall against the exhaustive search at 300k rows, in 10 clusters and in one
    # cluster of 300k, 0.9872 / 0.9878 with 2 probes, 0.9976 / 0.9981 with 3, 0.9986 / 0.9998 with
    # 4; pruning 300k rows (10 clusters) took 4.6 s with 2, 5.9 s with 3, 6.6 s with 4.
    nprobe: int = 3
    max_neighbors: int = 16
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESET_EPS:
            raise ValueError(f"PruneConfig.preset must be one of {tuple(PRESET_EPS)}, got {self.preset!r}")
        if self.eps is None:
            object.__setattr__(self, "eps", PRESET_EPS[self.preset])
        if not isinstance(self.eps, (int, float)) or not 0.0 <= self.eps <= 2.0:
            raise ValueError(f"PruneConfig.eps must be a number in [0, 2], got {self.eps!r}")
        if self.max_pool_size is not None and (isinstance(self.max_pool_size, bool) or not isinstance(self.max_pool_size, int) or self.max_pool_size < 0):
            raise ValueError(f"PruneConfig.max_pool_size must be None or an int >= 0, got {self.max_pool_size!r}")
        if self.embedding not in ("gradient", "hidden"):
            raise ValueError(f"PruneConfig.embedding must be 'gradient' or 'hidden', got {self.embedding!r}")
        if self.keep_per_cluster is not None and (isinstance(self.keep_per_cluster, bool) or not isinstance(self.keep_per_cluster, int) or self.keep_per_cluster < 1):
            raise ValueError(f"PruneConfig.keep_per_cluster must be None or an int >= 1, got {self.keep_per_cluster!r}")
        if self.budget_multiple is not None and (isinstance(self.budget_multiple, bool) or not isinstance(self.budget_multiple, (int, float))
                                                 or not 1.0 <= self.budget_multiple < math.inf):
            raise ValueError(f"PruneConfig.budget_multiple must be None or a finite number >= 1, got {self.budget_multiple!r}")
        for name in ("exact_max", "cell_size", "nprobe", "max_neighbors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PruneConfig.{name} must be a positive int, got {value!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"PruneConfig.threads must be None or a positive int, got {self.threads!r}")

    @property
    def threshold(self) -> float:
        return 1.0 - float(self.eps)

    def pool_cap(self, budget: int | None) -> int | None:
        """The pool size a round with this (resolved) budget prunes down to: the smaller of
        `max_pool_size` and ceil(budget_multiple × budget); None when neither applies."""
        caps = [] if self.max_pool_size is None else [self.max_pool_size]
        if self.budget_multiple is not None and budget is not None:
            caps.append(math.ceil(self.budget_multiple * budget))
        return min(caps) if caps else None

    def dedup_only(self) -> "PruneConfig":
        """The same dedup with no cap of any kind (semdedup's set-aside)."""
        return replace(self, max_pool_size=None, budget_multiple=None, keep_per_cluster=None)


@dataclass(frozen=True, slots=True)
class PrunedSample:
    """One pruned sample: `similarity` to `duplicate_of`, its most similar earlier kept sample
    (None for pool_cap when it has none)."""

    sample_id: int
    cluster: int
    reason: Literal["near_duplicate", "pool_cap"]
    similarity: float | None
    duplicate_of: int | None


def _dedup_and_redundancy(x: np.ndarray, cells, found, threshold: float):
    """Greedy leader rule in row order, then every survivor's redundancy.

    Returns kept bool[m]; for pruned rows `rep`/`sim` = the most similar earlier kept row (ties:
    the earlier one) and that similarity; for kept rows the same quantity is the redundancy
    (SemDeDup's upper-triangular maximum over the survivors), −1/−inf when there is none.
    """
    from workers.engine.selection.neighbours import best_earlier, earlier_candidates

    m = x.shape[0]
    kept = np.ones(m, dtype=bool)
    rep = np.full(m, -1, dtype=np.int64)
    sim = np.full(m, -np.inf)
    members = cells.members()

    # Rows without an earlier candidate above the threshold stay kept whatever happens before
    # them, so only the others need the sequential pass. Their listed candidates are the
    # above-threshold ones, most similar first: the first one still kept is the representative.
    for i in np.flatnonzero(np.diff(found.indptr)).tolist():
        nbrs, sims = found.edges(i)
        alive = kept[nbrs]
        if alive.any():
            t = int(np.argmax(alive))
            kept[i], rep[i], sim[i] = False, nbrs[t], float(sims[t])
        elif not found.complete[i]:
            # The list was cut and every listed candidate is pruned: look at all of them.
            cand = earlier_candidates(cells, members, i)
            cand = cand[kept[cand]]
            if cand.size:
                s = x[cand] @ x[i]
                j = int(np.argmax(s))  # first maximum: the earlier row wins ties
                if s[j] > threshold:
                    kept[i], rep[i], sim[i] = False, int(cand[j]), float(s[j])

    # A survivor's redundancy is its most similar earlier candidate when that one survived too;
    # otherwise a second scan restricted to survivors finds it.
    has = found.best >= 0
    settled = kept & has & kept[np.maximum(found.best, 0)]
    rep[settled], sim[settled] = found.best[settled], found.best_sim[settled]
    again = kept & has & ~settled
    if again.any():
        r, v = best_earlier(x, cells, again, kept)
        rep[again], sim[again] = r[again], v[again]
    return kept, rep, sim


def prune_pool(ids: np.ndarray, features: np.ndarray, clustering, cfg: PruneConfig,
               budget: int | None = None, others: int = 0) -> list[PrunedSample]:
    """Samples to mark pruned: near-duplicates inside each cluster, then (with a cap) the most
    redundant survivors: every cluster cut to `keep_per_cluster`, then clusters cut down to a
    common level (water-filling) largest first until the pool fits `cfg.pool_cap(budget)`.

    Args:
        ids: int64[n] SQL sample ids, unique.
        features: [n, d] float16 or float32 (array, memmap or `FileRows`), normalised here per cluster.
        clustering: the round's `Clustering` (assign int64[n]).
        cfg: PruneConfig.
        budget: the round's resolved budget (for `budget_multiple`); None ignores that cap.
        others: pool members outside `ids` that stay (a round over its new samples only): the
            cap leaves room for them.
    Returns:
        PrunedSample per pruned sample, by cluster then sample id.
    """
    from workers.engine.selection.budget import allocate_budget
    from workers.engine.selection.cells import split_cells
    from workers.engine.selection.neighbours import earlier_matches
    from workers.engine.selection.parallel import map_parallel, single_threaded_kernels
    from workers.engine.selection.vectors import UnitRows

    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    if features.shape[0] != n or len(clustering.assign) != n:
        raise ValueError(f"ids ({n}), features ({features.shape[0]}) and clustering ({len(clustering.assign)}) differ in length")

    def one_cluster(item: tuple[int, np.ndarray]):
        c, rows = item
        rows = rows[np.argsort(ids[rows], kind="stable")]
        x = UnitRows.gather(features, rows)  # this cluster's rows, float32 unit rows on access
        cells = split_cells(x, exact_max=cfg.exact_max, cell_size=cfg.cell_size, nprobe=cfg.nprobe, seed=cfg.seed)
        found = earlier_matches(x, cells, cfg.threshold, cfg.max_neighbors)
        return (c, rows, *_dedup_and_redundancy(x, cells, found, cfg.threshold))

    # Clusters are independent: one per thread, largest first so the threads finish together.
    work = sorted(((c, r) for c, r in enumerate(clustering.members()) if len(r)), key=lambda cr: -len(cr[1]))
    with single_threaded_kernels():
        per_cluster = sorted(map_parallel(one_cluster, work, cfg.threads), key=lambda r: r[0])
    out: list[PrunedSample] = []
    quotas = [int(kept.sum()) for _, _, kept, *_ in per_cluster]
    if cfg.keep_per_cluster is not None:
        quotas = [min(q, cfg.keep_per_cluster) for q in quotas]
    cap = cfg.pool_cap(budget)
    if cap is not None:
        cap = max(0, cap - others)
    if cap is not None and sum(quotas) > cap:
        quotas = allocate_budget(quotas, cap)
    for slot, (c, rows, kept, rep, sim) in enumerate(per_cluster):
        capped = np.zeros(len(rows), dtype=bool)
        alive = np.flatnonzero(kept)
        if quotas[slot] < len(alive):
            # Most redundant first; among equals the later sample goes first.
            capped[alive[np.lexsort((-alive, -sim[alive]))][: len(alive) - quotas[slot]]] = True
        gone = np.flatnonzero(~kept | capped)  # positions ascend with sample ids
        has = rep[gone] >= 0
        dup_of = np.where(has, ids[rows[np.maximum(rep[gone], 0)]], -1)
        for sid, by_cap, h, v, of in zip(ids[rows[gone]].tolist(), capped[gone].tolist(), has.tolist(),
                                         sim[gone].tolist(), dup_of.tolist()):
            out.append(PrunedSample(sid, c, "pool_cap" if by_cap else "near_duplicate", v if h else None, of if h else None))
    return out
