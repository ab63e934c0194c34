"""Blocked nearest-earlier-neighbour search inside one cluster, without an n×n matrix.

Rows are a cluster's L2-normalised features in a fixed order (ascending sample id). For every
row we want its most similar *earlier* rows. A small cluster is one cell searched exhaustively in
blocks (exact). A larger one is split into cells of about `cell_size` rows (`selection.cells`);
a row is compared with the rows of its `nprobe` nearest cells (IVF-style), again in blocks, so
time is O(n · nprobe · cell_size · d) and memory O(n · k).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from workers.engine.selection.cells import Cells
from workers.engine.selection.vectors import row_blocks

# Block of the similarity computation: 4M float32 entries = 16 MB, whatever the cell sizes.
BLOCK_ENTRIES = 4_000_000

# Query rows gathered at once (float32): a cell that many rows probe (a hub) must not become a
# copy of most of its cluster (20k queries × 8,192 dimensions would be 655 MB).
QUERY_BLOCK_BYTES = 64 << 20

# Members per tile. Rows and members are both in row order, so a tile of consecutive members
# is only compared with the queries after its first member: about half of the cell's
# query × member products, where whole-cell blocks computed them all (measured at 50k rows:
# 41.6 → ~24 GFLOP). 64 keeps the GEMMs wide enough to run near BLAS speed.
MEMBER_TILE = 64

# Listed edges held before each row's list is cut to its `max_edges` best (on top of m·max_edges).
EDGE_SLACK = 1 << 16


def scan_earlier_blocks(
    x: np.ndarray, cells: Cells, queries_mask: np.ndarray | None = None, members_mask: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (query rows, member rows, float32 similarities) covering every (row, earlier row
    in a cell the row probes) pair, in tiles of at most BLOCK_ENTRIES similarities. Entries
    whose member is not earlier than its query are −inf.

    Args:
        queries_mask, members_mask: bool[m]; when given, only these rows query / are searched.
    """
    q_rows = max(1, QUERY_BLOCK_BYTES // (4 * x.shape[1]))
    for members, queries in zip(cells.members(), cells.queries()):
        if members_mask is not None:
            members = members[members_mask[members]]
        if queries_mask is not None:
            queries = queries[queries_mask[queries]]
        if len(members) == 0 or len(queries) == 0:
            continue
        for q_start, q_stop in row_blocks(len(queries), q_rows):
            qs = queries[q_start:q_stop]
            xq = x[qs]
            for start in range(0, len(members), MEMBER_TILE):
                tile = members[start : start + MEMBER_TILE]
                first = int(np.searchsorted(qs, tile[0], side="right"))
                if first == len(qs):
                    break  # later tiles start even later
                xt = x[tile]
                step = max(1, BLOCK_ENTRIES // len(tile))
                for q0 in range(first, len(qs), step):
                    q = qs[q0 : q0 + step]
                    s = xq[q0 : q0 + step] @ xt.T
                    # Only queries up to the tile's last member can see a member that is not
                    # earlier (queries and members ascend): mask that band, leave the rest untouched.
                    band = int(np.searchsorted(q, tile[-1], side="right"))
                    if band:
                        before = np.searchsorted(tile, q[:band])
                        s[:band][np.arange(len(tile))[None, :] >= before[:, None]] = -np.inf
                    yield q, tile, s


@dataclass
class EarlierMatches:
    """What a scan finds for every row of a cluster among its earlier candidates.

    best: int64[m] the most similar earlier candidate (ties: the earlier row), −1 when none;
    best_sim: float32[m], −inf when none.
    indptr, nbr, sim: per row i, nbr[indptr[i]:indptr[i+1]] are its earlier candidates with
    similarity > threshold, most similar first (ties: earlier first), at most `max_edges`.
    complete: bool[m], False when a row had more than `max_edges` such candidates.
    """

    best: np.ndarray
    best_sim: np.ndarray
    indptr: np.ndarray
    nbr: np.ndarray
    sim: np.ndarray
    complete: np.ndarray

    def edges(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.nbr[a:b], self.sim[a:b]


def _top_edges(rows: np.ndarray, nbr: np.ndarray, sim: np.ndarray, k: int, complete: np.ndarray):
    """Sort edges by (row, most similar, earlier) and keep each row's first k; rows that lose
    edges are marked incomplete."""
    order = np.lexsort((nbr, -sim, rows))
    rows, nbr, sim = rows[order], nbr[order], sim[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, np.int64)
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    complete[rows[rank >= k]] = False
    keep = rank < k
    return rows[keep], nbr[keep], sim[keep]


def _update_best(best: np.ndarray, best_sim: np.ndarray, q: np.ndarray, tile: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Fold one tile into the running per-row maximum (ties: the earlier row); returns the
    tile's row maxima."""
    arg = s.argmax(axis=1)  # first maximum: members ascend within a tile
    top = s[np.arange(len(q)), arg]
    cand = tile[arg]
    better = (top > best_sim[q]) | ((top == best_sim[q]) & (cand < best[q]))
    best[q[better]], best_sim[q[better]] = cand[better], top[better]
    return top


def earlier_matches(x: np.ndarray, cells: Cells, threshold: float, max_edges: int) -> EarlierMatches:
    """Every row's most similar earlier candidate and its candidates above `threshold`.

    A single pass over the tiles keeps a running maximum per row and the sparse entries above
    the threshold; no top-k is kept per row, so the cost beyond the GEMM is a few passes over
    each tile. Memory is O(m · max_edges): when the stored edges pass that, each row keeps its
    `max_edges` most similar ones (the result is the same whenever that happens).

    Args:
        x: [m, d] float32 unit rows (or `UnitRows`), in the order that defines "earlier".
        cells: from `split_cells`.
        threshold: similarity above which a candidate is listed.
        max_edges: listed candidates kept per row.
    """
    m = x.shape[0]
    best = np.full(m, -1, dtype=np.int64)
    best_sim = np.full(m, -np.inf, dtype=np.float32)
    complete = np.ones(m, dtype=bool)
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    stored, budget = 0, max_edges * m + EDGE_SLACK
    for q, tile, s in scan_earlier_blocks(x, cells):
        top = _update_best(best, best_sim, q, tile, s)
        hit = np.flatnonzero(top > threshold)  # most rows have no candidate above it
        if len(hit):
            r, c = np.nonzero(s[hit] > threshold)
            r = hit[r]
            chunks.append((q[r], tile[c], s[r, c]))
            stored += len(r)
            if stored > budget:
                chunks = [_top_edges(*map(np.concatenate, zip(*chunks)), max_edges, complete)]
                stored = len(chunks[0][0])
    if chunks:
        rows, nbr, sim = _top_edges(*map(np.concatenate, zip(*chunks)), max_edges, complete)
    else:
        rows, nbr, sim = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=m))].astype(np.int64)
    return EarlierMatches(best, best_sim, indptr, nbr, sim, complete)


def best_earlier(x: np.ndarray, cells: Cells, queries_mask: np.ndarray, members_mask: np.ndarray):
    """For the rows in `queries_mask`: the most similar earlier candidate among the rows in
    `members_mask` (ties: the earlier row). Returns (int64[m] row or −1, float32[m] or −inf)."""
    m = x.shape[0]
    best = np.full(m, -1, dtype=np.int64)
    best_sim = np.full(m, -np.inf, dtype=np.float32)
    for q, tile, s in scan_earlier_blocks(x, cells, queries_mask, members_mask):
        _update_best(best, best_sim, q, tile, s)
    return best, best_sim


def earlier_candidates(cells: Cells, members: list[np.ndarray], i: int) -> np.ndarray:
    """All earlier rows in row i's probed cells, ascending (for the rare exhaustive re-check)."""
    parts = [g[: np.searchsorted(g, i)] for g in (members[c] for c in cells.probes[i] if c >= 0)]
    return np.sort(np.concatenate(parts))
