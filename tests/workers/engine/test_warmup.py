import numpy as np
import pytest

from tests.workers.engine.features.helpers import conversation
from workers.engine.features import FeatureConfig, compute_features
from workers.engine.models import ModelSpec, load_model
from workers.engine.training import TrainConfig
from workers.engine.warmup import train_warmup_adapter, warmup_subset


def _samples(n=40):
    return [conversation(i, f"Echo {i}", f"echo {i}") for i in range(n)]


def test_subset_is_seeded_sized_and_ordered():
    s = _samples()
    a, b, c = warmup_subset(s, 0.1, 3), warmup_subset(s, 0.1, 3), warmup_subset(s, 0.1, 4)
    assert [x.id for x in a] == [x.id for x in b] and len(a) == 4
    assert [x.id for x in a] != [x.id for x in c]
    assert [x.id for x in a] == sorted(x.id for x in a)
    assert len(warmup_subset(s[:3], 0.05, 0)) == 1
    with pytest.raises(ValueError, match="fraction"):
        warmup_subset(s, 0.0, 0)


def test_warmup_makes_a_fresh_adapter_give_non_zero_features():
    loaded = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"))
    samples = _samples()
    cfg = FeatureConfig(proj_dim=32)
    cold = compute_features(loaded, samples[:3], cfg)
    steps = []
    stats = train_warmup_adapter(loaded, samples, fraction=0.2, seed=0, cfg=TrainConfig(epochs=2, lr=1e-2, batch_size=4),
                                 on_step=lambda *a: steps.append(a))
    assert stats.steps == 4 == len(steps)  # 8 samples, batch 4, 2 epochs
    lora_b = [p for n, p in loaded.model.named_parameters() if "lora_B" in n]
    assert all(float(p.abs().sum()) > 0 for p in lora_b)
    warm = compute_features(loaded, samples[:3], cfg)
    assert not np.array_equal(cold.features, warm.features)
