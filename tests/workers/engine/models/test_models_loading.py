import json

import pytest
import torch

from workers.engine.models import ALL_LINEAR, LoraSpec, ModelSpec, load_model


def _lora_layers(loaded) -> set[str]:
    return {n.split(".lora_")[0] for n, _ in loaded.model.named_parameters() if ".lora_" in n}


def test_lora_goes_on_the_text_decoder_only(tiny_llava):
    names = _lora_layers(tiny_llava)
    assert names and all(".language_model.layers." in n for n in names)
    assert not any("vision_tower" in n for n in names)
    assert {n.rsplit(".", 1)[1] for n in names} == set(ALL_LINEAR)  # the default: every linear module
    assert len(names) == 7 * tiny_llava.num_layers
    ranks = {p.shape[0] for n, p in tiny_llava.model.named_parameters() if ".lora_A." in n}
    assert ranks == {64}
    assert tiny_llava.device.type == "cpu" and tiny_llava.dtype == torch.float32


def test_lora_layers_option_and_fresh_adapter_is_seeded():
    a = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"), lora=LoraSpec(layers=(2,), seed=3))
    b = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"), lora=LoraSpec(layers=(2,), seed=3))
    assert all(".layers.2." in n for n in _lora_layers(a))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    lora_keys = [k for k in sa if "lora_A" in k]
    assert lora_keys and all(torch.equal(sa[k], sb[k]) for k in lora_keys)
    assert all(float(v.abs().sum()) == 0 for k, v in sa.items() if "lora_B" in k)  # PEFT init: B = 0


def test_adapter_round_trip(tmp_path, tiny_causal_lm_nonzero):
    tiny_causal_lm_nonzero.save_adapter(tmp_path / "ad")
    config = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-causal-lm"  # not null: a user can tell the base
    again = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"), adapter_dir=tmp_path / "ad")
    want = {k: v for k, v in tiny_causal_lm_nonzero.model.state_dict().items() if "lora_" in k}
    got = again.model.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in want.items())
    assert all(p.requires_grad for n, p in again.model.named_parameters() if "lora_" in n)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"), adapter_dir=tmp_path / "missing")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(r=0), "LoraSpec.r"),
        (dict(dropout=1.5), "LoraSpec.dropout"),
        (dict(target_modules=()), "LoraSpec.target_modules"),
        (dict(layers=(-1,)), "LoraSpec.layers"),
    ],
)
def test_lora_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LoraSpec(**kwargs)


def test_model_spec_validation_and_layer_range():
    with pytest.raises(ValueError, match="ModelSpec.model_type"):
        ModelSpec("x", model_type="seq2seq")
    with pytest.raises(ValueError, match="ModelSpec.dtype"):
        ModelSpec("x", dtype="int8")
    with pytest.raises(ValueError, match="out of range"):
        load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"), lora=LoraSpec(layers=(9,)))


def test_train_projector_trains_and_saves_the_projector_in_full(tmp_path, image_dir):
    from tests.workers.engine.features.helpers import conversation
    from workers.engine.training import TrainConfig, train_lora

    spec = ModelSpec("tiny-llava", model_type="llava")
    loaded = load_model(spec, lora=LoraSpec(r=4, alpha=8, target_modules=("q_proj",), train_projector=True))
    projector = {k: v.clone() for k, v in loaded.model.state_dict().items()
                 if "multi_modal_projector" in k and ".modules_to_save." in k}
    assert projector
    samples = [conversation(i, "<image>\nColour?", c, [image_dir / f"{c}.png"]) for i, c in enumerate(["red", "blue"])]
    train_lora(loaded, samples, TrainConfig(max_steps=2, batch_size=2, lr=1e-2))
    after = loaded.model.state_dict()
    assert all(not torch.equal(v, after[k]) for k, v in projector.items())
    loaded.save_adapter(tmp_path / "ad")
    again = load_model(spec, adapter_dir=tmp_path / "ad").model.state_dict()
    assert all(torch.equal(after[k], again[k]) for k in projector)
    with pytest.raises(ValueError, match="needs a llava model"):
        load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"), lora=LoraSpec(train_projector=True))

    # its own learning rate (LLaVA's mm_projector_lr): Adam moves each weight by about lr per step
    slow = load_model(spec, lora=LoraSpec(r=4, alpha=8, target_modules=("q_proj",), train_projector=True))
    train_lora(slow, samples, TrainConfig(max_steps=2, batch_size=2, lr=1e-2, projector_lr=1e-6, warmup_ratio=0.0))
    moved = slow.model.state_dict()
    assert max(float((moved[k] - v).abs().max()) for k, v in projector.items()) < 1e-5
    assert max(float((after[k] - v).abs().max()) for k, v in projector.items()) > 1e-3
