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


def _lora_grads(loaded):
    return {n: p.grad.clone() for n, p in loaded.model.named_parameters() if "lora_" in n}


def _whole_batch_backward(loaded, samples, max_length):
    """The reference: every sample padded into one batch, the mean response NLL backpropagated."""
    from workers.engine.features.scores import gather_response, token_nll
    from workers.engine.models import collate, encode_sample

    batch = collate([encode_sample(loaded, s, max_length=max_length) for s in samples], loaded.tokenizer.pad_token_id)
    hidden = loaded.hf_model.base_model(**batch.model_inputs(), use_cache=False).last_hidden_state
    tokens = gather_response(hidden, batch.labels)
    loss = token_nll(loaded.hf_model.get_output_embeddings()(tokens.hidden), tokens.targets).mean()
    loss.backward()
    return float(loss.detach())


@pytest.mark.parametrize("long_answer, groups", [("x" * 10, 1), ("a long answer, " * 20, 2)])
def test_a_long_sample_trains_apart_with_the_batch_loss_and_gradient(monkeypatch, long_answer, groups):
    """A batch padded past max_length runs as micro-batches: the same loss and gradient as the
    whole batch; a batch that fits runs whole, bit for bit as before."""
    from workers.engine import training
    from workers.engine.models.batching import token_groups

    samples = [conversation(0, "Hi", "yes"), conversation(1, "Tell me", long_answer), conversation(2, "Why", "no")]
    loaded = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"))
    loaded.model.train()
    ref_loss = _whole_batch_backward(loaded, samples, max_length=128)
    ref = _lora_grads(loaded)
    loaded.model.zero_grad(set_to_none=True)
    seen = []

    def spy(lengths, budget):
        seen.append(token_groups(lengths, budget))
        return seen[-1]

    monkeypatch.setattr(training, "token_groups", spy)
    loss = training._batch_backward(loaded, samples, TrainConfig(max_length=128))
    assert len(seen) == 1 and len(seen[0]) == groups
    got = _lora_grads(loaded)
    if groups == 1:
        assert loss == ref_loss and all(torch.equal(got[n], ref[n]) for n in ref)
    else:
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        assert all(torch.allclose(got[n], ref[n], rtol=1e-4, atol=1e-7) for n in ref)

