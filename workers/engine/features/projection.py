"""Seeded sparse Johnson–Lindenstrauss projection (SJLT), generated block by block on the fly.

Why sparse, by measurement (2-core CPU, proj_dim 8192, `bench/projection.py`): a dense Rademacher
matrix for a 0.65M-dimensional gradient (one SmolLM2-135M layer, all linear modules, r = 64) is
21 GB in float32; regenerating it in 4,096-row blocks costs ~0.33 s per block, ~55 s per batch,
and even a cached one costs 10.7 GFLOP per sample. The sparse transform below costs
O(nnz · grad_dim) per sample: ~0.04 s for 8 samples at 0.65M, ~0.3 s at 5M (one LLaMA-7B layer),
with nothing cached, so memory is O(block) whatever the gradient size.

The transform (Kane & Nelson 2014, "block" construction; the SJLT dattri and GraSS use): the
proj_dim outputs are split into `nnz` contiguous chunks; each input coordinate i is sent to one
output in every chunk, with an independent random sign, scaled by 1/√nnz. As a matrix S
[in_dim, proj_dim], each row holds exactly `nnz` entries ±1/√nnz, so E[S Sᵀ] = I and

    E⟨xS, yS⟩ = ⟨x, y⟩,    Var⟨xS, yS⟩ ≤ (‖x‖²‖y‖² + ⟨x, y⟩²) / proj_dim

(the same bound as a dense Gaussian JL matrix), and with nnz = Θ(ε⁻¹ log 1/δ) and
proj_dim = Θ(ε⁻² log 1/δ) it is a JL embedding: every norm preserved within 1 ± ε with
probability 1 − δ. At proj_dim 8192 the standard deviation of the inner product of two unit
vectors is at most √(2/8192) ≈ 0.016, and ≈ 1/√8192 ≈ 0.011 for orthogonal ones.

Determinism: block b of seed s is drawn from numpy's PCG64 keyed by (s, b) on the CPU, so the
same seed gives the same matrix on any machine and device. The projection is linear and per
sample, so any batch split gives the same features (bit for bit on the CPU; on CUDA the
scatter-add order may differ within float rounding).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

# Input coordinates per generated block: ~2.4 MB of indices and signs at nnz = 4.
BLOCK_COORDS = 1 << 16
DEFAULT_NNZ = 4


def chunk_bounds(proj_dim: int, nnz: int) -> np.ndarray:
    """int64[nnz + 1]: output chunk j is [bounds[j], bounds[j + 1])."""
    return np.array([j * proj_dim // nnz for j in range(nnz + 1)], dtype=np.int64)


def sjlt_block(seed: int, block: int, rows: int, proj_dim: int, nnz: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns int64[nnz, rows], signs int8[nnz, rows]) of input coordinates
    [block·BLOCK_COORDS, block·BLOCK_COORDS + rows): row j's column lies in output chunk j."""
    bounds = chunk_bounds(proj_dim, nnz)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, block])))
    columns = rng.integers(bounds[:-1, None], bounds[1:, None], size=(nnz, rows))
    signs = rng.integers(0, 2, size=(nnz, rows), dtype=np.int8) * 2 - 1
    return columns, signs.astype(np.int8)


class SparseJLProjector:
    """x[n, in_dim] -> x @ S, S the seeded SJLT matrix [in_dim, proj_dim] (never materialised).

    Args:
        nnz: non-zeros per input coordinate (1 is CountSketch); at most proj_dim.
        device: where the projection runs; the blocks are drawn on the CPU and moved there.
    """

    def __init__(self, in_dim: int, proj_dim: int, seed: int, nnz: int = DEFAULT_NNZ, device: Any = "cpu") -> None:
        import torch

        if in_dim < 1 or proj_dim < 1:
            raise ValueError(f"projector dimensions must be positive, got in_dim={in_dim}, proj_dim={proj_dim}")
        if not 1 <= nnz <= proj_dim:
            raise ValueError(f"projector nnz must be in [1, proj_dim={proj_dim}], got {nnz}")
        self.in_dim, self.proj_dim, self.seed, self.nnz = in_dim, proj_dim, seed, nnz
        self.device = torch.device(device)
        self.scale = 1.0 / math.sqrt(nnz)

    def blocks(self) -> Any:
        """Yields (start, columns int64[nnz, rows], signs float32[nnz, rows]) on `device`."""
        import torch

        for b, start in enumerate(range(0, self.in_dim, BLOCK_COORDS)):
            rows = min(BLOCK_COORDS, self.in_dim - start)
            columns, signs = sjlt_block(self.seed, b, rows, self.proj_dim, self.nnz)
            yield (start, torch.from_numpy(columns).to(self.device),
                   torch.from_numpy(signs).to(device=self.device, dtype=torch.float32))

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
                matrix[rows, columns[j]] = signs[j] * self.scale
        return matrix
