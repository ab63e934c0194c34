"""Blocked float16 → float32 conversion with L2 normalisation, and the row sources it reads.

Features arrive as float16: an array, a memmap, or (in the select stage) `FileRows` over the
round's concatenated shards. A float32 copy of a 1M × 1024 pool is 4 GB, so every consumer walks
the rows in blocks and keeps at most one float32 block alive at a time; pruning reads a cluster
through `UnitRows`, which converts the rows it is asked for on each access.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

# 2,048 rows × 1,024 dims × 4 bytes = 8 MB per block: wide enough for BLAS, and small enough
# that malloc hands the same pages back block after block. Fresh pages cost far more than the
# arithmetic on them where memory is faulted in lazily (VMs): assigning 50k × 1,024 rows to 10
# centroids took 0.33 s with 32k-row blocks and 0.07 s with 2k-row ones on the 2-core dev box.
BLOCK_ROWS = 2_048
# Rows gathered, converted and normalised together: 256 × 1,024 × 4 bytes = 1 MB stays in L2.
GATHER_ROWS = 256


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Float32 copy of `x` with every row scaled to unit L2 norm (all-zero rows stay zero).

    Args:
        x: [m, d] float16 or float32.
    Returns:
        [m, d] float32, C-contiguous.
    """
    out = np.empty(x.shape, dtype=np.float32)
    to_float32(np.asarray(x), out)
    _scale_to_unit(out)
    return out


def to_float32(src: np.ndarray, out: np.ndarray) -> None:
    """out[...] = src for a C-contiguous float32 `out`. float16 goes through torch, whose
    vectorised half conversion is ~10× NumPy's (measured: 8 ms vs 75 ms for 50k × 1024)."""
    if src.dtype != np.float16:
        out[...] = src
        return
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about read-only memmap views
        torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(src)))


def _inverse_norms(x: np.ndarray) -> np.ndarray:
    """1 / ‖row‖ of a float32 [m, d] array; 0 for all-zero (and NaN) rows."""
    # einsum avoids the [m, d] temporary that np.linalg.norm allocates
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)


def _scale_to_unit(out: np.ndarray) -> None:
    # multiplying by the inverse norms is a plain vectorised loop, where a masked
    # `np.divide(..., where=)` over the rows took 2.5× as long
    out *= _inverse_norms(out)[:, None]


def gather_normalized(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Normalised float32 copy of `x[rows]`, read in blocks so a memmap is never copied whole.

    Args:
        x: [n, d] float16 or float32 (array, memmap or `FileRows`).
        rows: int64 row positions, any order.
    Returns:
        [len(rows), d] float32.
    """
    d = x.shape[1]
    out = np.empty((len(rows), d), dtype=np.float32)
    ascending = bool(np.all(rows[1:] > rows[:-1]))
    for start in range(0, len(rows), GATHER_ROWS):
        part = rows[start : start + GATHER_ROWS]
        dst = out[start : start + len(part)]
        if ascending:
            to_float32(x[part], dst)
        else:
            # Reading sorted rows keeps memmap access sequential; scatter back into caller order.
            order = np.argsort(part, kind="stable")
            block = np.empty((len(part), d), dtype=np.float32)
            to_float32(x[part[order]], block)
            dst[order] = block
        _scale_to_unit(dst)  # while the chunk is still in cache
    return out


def row_blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) over range(n) in blocks of `size`, a last block of one row merged into the
    one before: a one-row product goes through GEMV, which sums in another order than GEMM, and
    pruning compares similarities with thresholds."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for k, start in enumerate(starts):
        yield start, starts[k + 1] if k + 1 < len(starts) else n


def iter_normalized_blocks(x: np.ndarray, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start row, normalised float32 block) over `x` in row order.

    Args:
        x: [n, d] float16 or float32 (array, memmap or `FileRows`).
        block_rows: rows per block.
    """
    for start in range(0, x.shape[0], block_rows):
        yield start, normalize_rows(np.asarray(x[start : start + block_rows]))


class UnitRows:
    """A cluster's rows as unit float32 rows, converted on each access from the features (float16,
    or float32): indexing gives exactly what `gather_normalized` gives for the same rows.

    Over a `FileRows` the rows are read from the file on each access (the page cache keeps it)
    and nothing per row is held but its inverse norm; over an array or memmap they are copied
    once, keeping float16 as float16. Pruning used to hold each cluster it worked on as a
    float32 copy, 32 KB a row at 8,192 dimensions: two large clusters at once took the select
    stage of a 200k-sample round to 2.1 GB of anonymous memory.
    """

    def __init__(self, source, rows: np.ndarray | None, inv: np.ndarray) -> None:
        self.source, self.rows, self.inv = source, rows, inv
        self.shape, self.dtype, self.ndim = (len(inv), source.shape[1]), np.dtype(np.float32), 2

    @classmethod
    def gather(cls, x, rows: np.ndarray) -> UnitRows:
        """Rows `rows` of `x` ([n, d] float16/32 array, memmap or `FileRows`), read in sorted chunks."""
        from workers.engine.feature_file import FileRows

        from_file = isinstance(x, FileRows)
        raw = None if from_file else np.empty((len(rows), x.shape[1]), dtype=np.float16 if x.dtype == np.float16 else np.float32)
        inv = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), GATHER_ROWS):
            part = rows[start : start + GATHER_ROWS]
            order = np.argsort(part, kind="stable")
            chunk = np.empty((len(part), x.shape[1]), dtype=x.dtype)
            chunk[order] = x[part[order]]
            if raw is not None:
                raw[start : start + len(part)] = chunk
            wide = np.empty(chunk.shape, dtype=np.float32)
            to_float32(chunk, wide)
            inv[start : start + len(part)] = _inverse_norms(wide)  # what `_scale_to_unit` multiplies by
        return cls(x, np.asarray(rows, dtype=np.int64), inv) if from_file else cls(raw, None, inv)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        src = self.source[self.rows[key]] if self.rows is not None else self.source[key]
        out = np.empty(src.shape, dtype=np.float32)
        to_float32(src, out)
        inv = self.inv[key]
        out *= inv[:, None] if out.ndim == 2 else inv
        return out

    def matmul_t(self, other: np.ndarray, block_rows: int = BLOCK_ROWS) -> np.ndarray:
        """self @ other.T, [m, k] float32, one block of rows converted at a time."""
        out = np.empty((self.shape[0], other.shape[0]), dtype=np.float32)
        for start, stop in row_blocks(self.shape[0], block_rows):
            out[start:stop] = self[start:stop] @ other.T
        return out
