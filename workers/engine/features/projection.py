"""Seeded Rademacher (±1/√k) Johnson-Lindenstrauss projection, generated in row blocks."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

BLOCK_ROWS = 4096
# Above this the ±1 blocks are cached as int8 (1 byte/entry) and widened per use.
DENSE_CACHE_BYTES = 2 << 30


def rademacher_block(seed: int, block: int, rows: int, cols: int) -> np.ndarray:
    """±1 int8[rows, cols]; block b of seed s is the same on every machine and in every process."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, block])))
    bits = np.unpackbits(np.frombuffer(rng.bytes((rows * cols + 7) // 8), dtype=np.uint8))[: rows * cols]
    return (bits.astype(np.int8) * 2 - 1).reshape(rows, cols)


class RademacherProjector:
    """x[n, in_dim] -> x @ R with R[in_dim, proj_dim] = ±1/√proj_dim, seeded.

    Rows are generated in blocks of BLOCK_ROWS, so the matrix for a 7B model's gradient never
    has to exist densely in float32; the blocks are cached on `device`.
    """

    def __init__(self, in_dim: int, proj_dim: int, seed: int, device: Any = "cpu") -> None:
        import torch

        self.in_dim, self.proj_dim, self.seed = in_dim, proj_dim, seed
        self.device = torch.device(device)
        self.scale = 1.0 / math.sqrt(proj_dim)
        dense = in_dim * proj_dim * 4 <= DENSE_CACHE_BYTES
        self._cache_dtype = torch.float32 if dense else torch.int8
        self._blocks: list[Any] = []

    def _block(self, b: int) -> Any:
        import torch

        while len(self._blocks) <= b:
            i = len(self._blocks)
            rows = min(BLOCK_ROWS, self.in_dim - i * BLOCK_ROWS)
            signs = torch.from_numpy(rademacher_block(self.seed, i, rows, self.proj_dim))
            self._blocks.append(signs.to(device=self.device, dtype=self._cache_dtype))
        return self._blocks[b]

    def project(self, x: Any) -> Any:
        """x: float[n, in_dim] -> float32[n, proj_dim]."""
        import torch

        n, d = x.shape
        if d != self.in_dim:
            raise ValueError(f"projector expects in_dim={self.in_dim}, got {d}")
        x = x.to(device=self.device, dtype=torch.float32)
        out = torch.zeros((n, self.proj_dim), dtype=torch.float32, device=self.device)
        for b, start in enumerate(range(0, d, BLOCK_ROWS)):
            block = self._block(b)
            out.addmm_(x[:, start: start + block.shape[0]], block.to(torch.float32))
        return out.mul_(self.scale)

    def dense_matrix(self) -> Any:
        """The whole matrix, float32[in_dim, proj_dim] (for references and tests)."""
        import torch

        blocks = [self._block(b).to(torch.float32) for b in range(math.ceil(self.in_dim / BLOCK_ROWS))]
        return torch.cat(blocks) * self.scale
