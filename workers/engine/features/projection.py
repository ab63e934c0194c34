"""Seeded sparse Johnson–Lindenstrauss projection (SJLT), generated block by block.

Why sparse, by measurement (2-core CPU, proj_dim 8192, `bench/projection.py`): a dense Rademacher
matrix for a 0.65M-dimensional gradient (one SmolLM2-135M layer, all linear modules, r = 64) is
21 GB in float32; regenerating it in 4,096-row blocks costs ~0.33 s per block, ~50 s per batch,
and even a cached one costs 10.7 GFLOP per sample. The sparse transform below costs
O(nnz · grad_dim) per sample: ~0.02 s for 8 samples at 0.65M, ~0.15 s at 5M (one LLaMA-7B layer).

The transform (Kane & Nelson 2014, "block" construction; the SJLT dattri and GraSS use): the
proj_dim outputs are split into `nnz` equal chunks; each input coordinate i is sent to one output
in every chunk, with an independent random sign, scaled by 1/√nnz. As a matrix S
[in_dim, proj_dim], each row holds exactly `nnz` entries ±1/√nnz, so E[S Sᵀ] = I and, for any
fixed x and y,

    E⟨xS, yS⟩ = ⟨x, y⟩,    Var⟨xS, yS⟩ ≤ (‖x‖²‖y‖² + ⟨x, y⟩²) / proj_dim

(the bound of a dense Gaussian JL matrix): at proj_dim 8192 the inner product of two orthogonal
unit vectors has a standard deviation of at most 1/√8192 ≈ 0.011. With nnz = Θ(ε⁻¹ log 1/δ) and
proj_dim = Θ(ε⁻² log 1/δ) it is moreover a JL embedding (each fixed vector's norm within 1 ± ε
with probability 1 − δ); at the default nnz = 4 we rely on the variance bound only.

Memory: the coordinates' targets (int64 column + int8 sign, 9 bytes per coordinate and non-zero;
int64 because `index_add_` with int32 indices measured 5× slower on the CPU) are kept on the
device while they fit CACHE_BYTES (5M coordinates at nnz 4: 180 MB), so a GPU never waits on the
CPU to redraw them; beyond that they are redrawn block by block on every call. Either way memory
is bounded, never O(grad_dim × proj_dim).

Determinism: block b of seed s is computed with explicit integer arithmetic from the raw 64-bit
words of PCG64 keyed by (s, b) (NumPy guarantees that raw stream across versions and machines;
it does not for its distribution methods). The same seed therefore gives the same matrix
everywhere. The projection is linear and per sample, so any batch split gives the same features:
bit for bit on the CPU; on CUDA, `index_add_` accumulates in a nondeterministic order, so
results may differ in the last float bits.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from core.engine_defaults import PROJECTION_NNZ

# Bumped whenever the matrix a seed stands for changes (stored in feature fingerprints).
VERSION = "sjlt-v1"
# Input coordinates per generated block: the matrix depends on it (blocks are keyed by index).
BLOCK_COORDS = 1 << 16
CACHE_BYTES = 256 << 20


def sjlt_block(seed: int, block: int, rows: int, proj_dim: int, nnz: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns int64[nnz, rows], signs int8[nnz, rows]) of input coordinates
    [block·BLOCK_COORDS, block·BLOCK_COORDS + rows); row j's columns lie in output chunk j."""
    if proj_dim % nnz:
        raise ValueError(f"proj_dim ({proj_dim}) must be a multiple of nnz ({nnz})")
    chunk = proj_dim // nnz
    words = np.random.PCG64(np.random.SeedSequence([seed, block])).random_raw(nnz * rows).reshape(nnz, rows)
    # the high 32 bits pick the column (multiply-shift: bias below chunk / 2³², ≤ 2·10⁻⁶), the lowest bit the sign
    offsets = ((words >> np.uint64(32)) * np.uint64(chunk)) >> np.uint64(32)
    columns = offsets.astype(np.int64) + (np.arange(nnz, dtype=np.int64) * chunk)[:, None]
    signs = (words & np.uint64(1)).astype(np.int8) * 2 - 1
    return columns, signs.astype(np.int8)


class SparseJLProjector:
    """x[n, in_dim] -> x @ S, S the seeded SJLT matrix [in_dim, proj_dim] (never materialised).

    Args:
        nnz: non-zeros per input coordinate (1 is CountSketch); must divide proj_dim.
        device: where the projection runs; the blocks are drawn on the CPU and moved there.
    """

    def __init__(self, in_dim: int, proj_dim: int, seed: int, nnz: int = PROJECTION_NNZ, device: Any = "cpu") -> None:
        import torch

        if in_dim < 1 or proj_dim < 1:
            raise ValueError(f"projector dimensions must be positive, got in_dim={in_dim}, proj_dim={proj_dim}")
        if not 1 <= nnz <= proj_dim or proj_dim % nnz:
            raise ValueError(f"projector nnz must divide proj_dim={proj_dim}, got {nnz}")
        self.in_dim, self.proj_dim, self.seed, self.nnz = in_dim, proj_dim, seed, nnz
        self.device = torch.device(device)
        self.scale = 1.0 / math.sqrt(nnz)
        self._cache: list[tuple[int, Any, Any]] | None = [] if in_dim * nnz * 9 <= CACHE_BYTES else None

    def _draw(self) -> Iterator[tuple[int, Any, Any]]:
        import torch

        for b, start in enumerate(range(0, self.in_dim, BLOCK_COORDS)):
            columns, signs = sjlt_block(self.seed, b, min(BLOCK_COORDS, self.in_dim - start), self.proj_dim, self.nnz)
            yield start, torch.from_numpy(columns).to(self.device), torch.from_numpy(signs).to(self.device)

    def blocks(self) -> Iterator[tuple[int, Any, Any]]:
        """(start, columns int64[nnz, rows], signs int8[nnz, rows]) on `device`, block by block."""
        if self._cache is None:
            yield from self._draw()
            return
        if not self._cache:
            self._cache.extend(self._draw())
        yield from self._cache

    def project(self, x: Any) -> Any:
        """x: float[n, in_dim] -> float32[n, proj_dim]."""
        import torch

        n, d = x.shape
        if d != self.in_dim:
            raise ValueError(f"projector expects in_dim={self.in_dim}, got {d}")
        x = x.to(device=self.device, dtype=torch.float32)
        out = torch.zeros((n, self.proj_dim), dtype=torch.float32, device=self.device)
        for start, columns, signs in self.blocks():
            part = x[:, start: start + columns.shape[1]]
            for j in range(self.nnz):
                out.index_add_(1, columns[j], part * signs[j])
        return out.mul_(self.scale)

    def dense_matrix(self) -> Any:
        """S itself, float32[in_dim, proj_dim]: only for references and tests on small shapes."""
        import torch

        matrix = torch.zeros((self.in_dim, self.proj_dim), dtype=torch.float32, device=self.device)
        for start, columns, signs in self.blocks():
            rows = torch.arange(start, start + columns.shape[1], device=self.device)
            for j in range(self.nnz):
                matrix[rows, columns[j]] = signs[j].float() * self.scale
        return matrix
