"""Blocked float16 → float32 conversion with L2 normalisation.

Features arrive as float16 (often an np.memmap over concatenated shards). A float32 copy of a
1M × 1024 pool is 4 GB, so every consumer walks the rows in blocks and keeps at most one
float32 block (or one cluster's rows) alive at a time.
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


def _scale_to_unit(out: np.ndarray) -> None:
    # einsum avoids the [m, d] temporary that np.linalg.norm allocates; multiplying by the
    # inverse norms (0 for all-zero rows) is a plain vectorised loop, where a masked
    # `np.divide(..., where=)` took 2.5× as long.
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    out *= inv[:, None]


def gather_normalized(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Normalised float32 copy of `x[rows]`, read in blocks so a memmap is never copied whole.

    Args:
        x: [n, d] float16 or float32 (array or memmap).
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


def iter_normalized_blocks(x: np.ndarray, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start row, normalised float32 block) over `x` in row order.

    Args:
        x: [n, d] float16 or float32 (array or memmap).
        block_rows: rows per block.
    """
    for start in range(0, x.shape[0], block_rows):
        yield start, normalize_rows(np.asarray(x[start : start + block_rows]))
