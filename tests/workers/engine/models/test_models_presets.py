import subprocess
import sys

import pytest
import torch

from workers.engine.models import ModelSpec, build_preset, load_model, materialize_preset


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-causal-lm"])
def test_preset_rebuilds_bit_identically_and_leaves_rng_alone(name):
    torch.manual_seed(7)
    before = torch.rand(3)
    torch.manual_seed(7)
    a, _ = build_preset(name)
    after = torch.rand(3)
    b, _ = build_preset(name)
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(before, after)  # the caller's RNG stream is untouched


def test_preset_is_identical_in_another_process(tmp_path):
    code = (
        "import sys, torch; from workers.engine.models import build_preset; "
        "m, _ = build_preset('tiny-causal-lm'); "
        "torch.save({k: v for k, v in m.state_dict().items()}, sys.argv[1])"
    )
    out = tmp_path / "state.pt"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[4]))
    other = torch.load(out)
    mine, _ = build_preset("tiny-causal-lm")
    assert all(torch.equal(other[k], v) for k, v in mine.state_dict().items())


def test_materialized_llava_loads_with_plain_transformers_and_peft(tmp_path, image_dir):
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    directory = materialize_preset("tiny-llava", tmp_path / "base")
    model = LlavaForConditionalGeneration.from_pretrained(directory, local_files_only=True)
    processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
    built, _ = build_preset("tiny-llava")
    ref = built.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert processor.tokenizer.chat_template and processor.image_token_id == model.config.image_token_id

    from_dir = load_model(ModelSpec(str(directory), model_type="llava"))
    from_dir.save_adapter(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    peft_model = PeftModel.from_pretrained(model, tmp_path / "adapter")
    lora = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    saved = {k: v for k, v in from_dir.model.state_dict().items() if "lora_" in k}
    assert lora.keys() == saved.keys() and lora
    assert all(torch.equal(lora[k], saved[k]) for k in lora)


def test_materialized_causal_lm_loads_with_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = materialize_preset("tiny-causal-lm", tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    built, tok = build_preset("tiny-causal-lm")
    assert all(torch.equal(v, built.state_dict()[k]) for k, v in model.state_dict().items())
    assert tokenizer("hello <image>")["input_ids"] == tok("hello <image>")["input_ids"]


def test_unknown_preset_and_type_mismatch_are_rejected():
    with pytest.raises(ValueError, match="model_type"):
        load_model(ModelSpec("tiny-llava", model_type="causal-lm"))
    with pytest.raises(OSError):
        load_model(ModelSpec("/nonexistent/model-dir", model_type="causal-lm"))


def test_the_service_knows_every_preset_and_its_type():
    from core.presets import PRESET_TYPES, PRETRAINED
    from workers.engine.models.presets import PRESETS
    from workers.engine.models.smol import SMOL_PRESETS

    assert PRESET_TYPES == {name: shape.model_type for name, shape in PRESETS.items()} | SMOL_PRESETS
    assert PRETRAINED == tuple(SMOL_PRESETS)
