import numpy as np
import pytest
import torch

from workers.engine.features import projection
from workers.engine.features.projection import RademacherProjector, rademacher_block


def test_entries_are_plus_minus_one_over_sqrt_k_and_balanced():
    m = RademacherProjector(300, 64, seed=0).dense_matrix()
    assert set(torch.unique(m * 8).tolist()) == {-1.0, 1.0}
    assert abs(float((m > 0).float().mean()) - 0.5) < 0.02


def test_same_seed_same_matrix_other_seed_other_matrix():
    assert np.array_equal(rademacher_block(3, 0, 50, 40), rademacher_block(3, 0, 50, 40))
    assert not np.array_equal(rademacher_block(3, 0, 50, 40), rademacher_block(4, 0, 50, 40))
    assert not np.array_equal(rademacher_block(3, 0, 50, 40), rademacher_block(3, 1, 50, 40))


@pytest.mark.parametrize("dense_cache", [True, False])
def test_blockwise_projection_equals_the_dense_matmul(monkeypatch, dense_cache):
    monkeypatch.setattr(projection, "BLOCK_ROWS", 64)  # several blocks, the last one partial
    if not dense_cache:
        monkeypatch.setattr(projection, "DENSE_CACHE_BYTES", 0)  # int8 cache path
    x = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    p = RademacherProjector(300, 48, seed=7)
    torch.testing.assert_close(p.project(x), x @ p.dense_matrix(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="in_dim=300"):
        p.project(torch.zeros(2, 299))


def test_projection_roughly_preserves_norms_and_angles():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 2000, generator=g)
    y = RademacherProjector(2000, 4096, seed=0).project(x)
    ratio = y.norm(dim=1) / x.norm(dim=1)
    assert float((ratio - 1).abs().max()) < 0.1  # JL: relative error ~ sqrt(2/k) ≈ 0.02 per vector
