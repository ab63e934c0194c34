"""Batched per-sample LoRA gradients vs one backward per sample."""
import pytest
import torch

from tests.workers.engine.features.helpers import loop_gradients, mixed_samples
from workers.engine.features import FeatureConfig, FeatureEngine

# float32 on CPU: both sides sum the same terms in a different order
RTOL = 1e-4


def atol(ref: torch.Tensor) -> float:
    """Absolute slack for entries near zero: float32 rounding of sums of ~|ref| terms."""
    return 1e-5 * float(ref.abs().max())


@pytest.mark.parametrize("layers", ["last", (0, 2)])
def test_batched_per_sample_gradients_equal_a_per_sample_loop(tiny_llava_nonzero, image_dir, layers):
    samples = mixed_samples(image_dir)
    engine = FeatureEngine(tiny_llava_nonzero, FeatureConfig(layers=layers, proj_dim=16))
    from workers.engine.models import encode_sample

    ours = engine.gradient_pass([encode_sample(tiny_llava_nonzero, s) for s in samples])["grads"]
    ref = loop_gradients(tiny_llava_nonzero, samples, engine.layers)
    assert ours.shape == ref.shape == (len(samples), engine.capture.dim)
    assert all(float(r.norm()) > 1e-4 for r in ref)  # non-trivial gradients (B != 0)
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=atol(ref))


def test_causal_lm_gradients_equal_the_loop(tiny_causal_lm_nonzero, image_dir):
    samples = mixed_samples(image_dir)
    engine = FeatureEngine(tiny_causal_lm_nonzero, FeatureConfig(proj_dim=16))
    from workers.engine.models import encode_sample

    ours = engine.gradient_pass([encode_sample(tiny_causal_lm_nonzero, s) for s in samples])["grads"]
    ref = loop_gradients(tiny_causal_lm_nonzero, samples, engine.layers)
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=atol(ref))


def test_every_linear_module_type_matches_the_loop(tiny_llava_nonzero, image_dir):
    """The default adapter (r = 64 on all seven linear modules): each module type's A and B
    gradients, compared on their own slice of the flat gradient, are non-trivial and exact."""
    from workers.engine.features.lora_grads import lora_parameters
    from workers.engine.models import ALL_LINEAR, encode_sample

    loaded = tiny_llava_nonzero
    samples = mixed_samples(image_dir)
    engine = FeatureEngine(loaded, FeatureConfig(proj_dim=16))
    ours = engine.gradient_pass([encode_sample(loaded, s) for s in samples])["grads"]
    ref = loop_gradients(loaded, samples, engine.layers)
    seen, start = {}, 0
    for name, _, param in lora_parameters(loaded, engine.layers):
        module = next(m for m in ALL_LINEAR if f".{m}." in name)
        factor = "A" if ".lora_A." in name else "B"
        stop = start + param.numel()
        assert param.shape[0 if factor == "A" else 1] == 64  # r = 64
        a, b = ours[:, start:stop], ref[:, start:stop]
        assert float(b.norm()) > 1e-6, name
        torch.testing.assert_close(a, b, rtol=RTOL, atol=atol(b), msg=lambda m, n=name: f"{n}: {m}")
        seen.setdefault(module, set()).add(factor)
        start = stop
    assert start == ours.shape[1]
    assert seen == {m: {"A", "B"} for m in ALL_LINEAR}


def test_backward_stops_at_the_lowest_configured_layer(tiny_llava_nonzero, image_dir):
    """Layers below the lowest configured one build no autograd graph at all."""
    from workers.engine.models import encode_sample

    loaded = tiny_llava_nonzero
    engine = FeatureEngine(loaded, FeatureConfig(layers=(1, 2), proj_dim=16))
    seen: dict[int, bool] = {}
    hooks = [
        layer.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad))
        for i, layer in enumerate(loaded.decoder_layers)
    ]
    try:
        engine.gradient_pass([encode_sample(loaded, s) for s in mixed_samples(image_dir)[:2]])
    finally:
        for h in hooks:
            h.remove()
    assert seen == {0: False, 1: True, 2: True}
    # and the model's trainable flags are restored afterwards
    assert all(p.requires_grad for n, p in loaded.model.named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for n, p in loaded.model.named_parameters() if "lora_" not in n)


def test_layers_without_lora_are_rejected(image_dir):
    from workers.engine.models import LoraSpec, ModelSpec, load_model

    loaded = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"), lora=LoraSpec(layers=(0,)))
    with pytest.raises(ValueError, match="no LoRA parameters"):
        FeatureEngine(loaded, FeatureConfig(layers="last"))
    with pytest.raises(ValueError, match="out of range"):
        FeatureEngine(loaded, FeatureConfig(layers=(5,)))
