import pytest
import torch

from tests.workers.engine.features.helpers import conversation
from workers.engine.models import ModelSpec, load_model
from workers.engine.training import TrainConfig, train_lora


def _samples():
    return [conversation(i, f"Repeat {w}", w) for i, w in enumerate(["alpha", "beta", "gamma", "delta"] * 2)]


def _lora_state(loaded):
    return {k: v.clone() for k, v in loaded.model.state_dict().items() if "lora_" in k}


def test_training_lowers_the_loss_and_only_moves_lora_weights():
    loaded = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"))
    base_before = {k: v.clone() for k, v in loaded.model.state_dict().items() if "lora_" not in k}
    lora_before = _lora_state(loaded)
    steps = []
    stats = train_lora(loaded, _samples(), TrainConfig(epochs=20, lr=5e-3, batch_size=4, max_steps=30),
                       on_step=lambda st: steps.append((st.step, st.total, st.loss, st.lr, st.epoch)))
    assert stats.steps == 30 and [s for s, *_ in steps] == list(range(1, 31)) and steps[0][1] == 30
    # 8 samples in batches of 4: two steps per epoch; warm-up of int(0.03 * 30) = 0 steps, then
    # the rate decays linearly from lr to 0 (transformers' linear schedule)
    assert [e for *_, e in steps][:3] == [0.5, 1.0, 1.5]
    assert [lr for *_, lr, _ in steps] == pytest.approx([5e-3 * (30 - k) / 30 for k in range(30)])
    assert stats.seconds > 0
    assert stats.loss_last < 0.5 * stats.loss_first
    assert stats.mean_loss == pytest.approx(sum(l for _, _, l, *_ in steps) / 30)
    after = loaded.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base_before.items())
    assert any(not torch.equal(v, after[k]) for k, v in lora_before.items())
    assert not loaded.model.training


def test_training_is_seeded_and_continues_a_saved_adapter(tmp_path):
    cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=3, seed=4)
    runs = []
    for _ in range(2):
        loaded = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"))
        train_lora(loaded, _samples(), cfg)
        runs.append(_lora_state(loaded))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    loaded.save_adapter(tmp_path / "a")
    resumed = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"), adapter_dir=tmp_path / "a")
    stats = train_lora(resumed, _samples(), TrainConfig(epochs=1, lr=1e-2, batch_size=3, max_steps=1))
    assert stats.steps == 1 and stats.loss_first < train_lora(
        load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm")), _samples(), TrainConfig(max_steps=1, batch_size=3)
    ).loss_first


def test_on_step_can_cancel():
    loaded = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"))

    def cancel(info):
        if info.step == 2:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        train_lora(loaded, _samples(), TrainConfig(epochs=3, batch_size=2), on_step=cancel)
    assert not any(p.grad is not None for p in loaded.model.parameters())
    assert all(p.requires_grad for n, p in loaded.model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("kwargs, field", [
    (dict(epochs=0), "TrainConfig.epochs"), (dict(lr=0), "TrainConfig.lr"), (dict(batch_size=0), "TrainConfig.batch_size"),
    (dict(max_steps=0), "TrainConfig.max_steps"), (dict(warmup_ratio=1.0), "TrainConfig.warmup_ratio"),
    (dict(grad_clip=0), "TrainConfig.grad_clip"),
])
def test_train_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)
