"""The pretrained presets: smol-lm (SmolLM2-135M-Instruct from its installed GGUF) and smol-llava
(SmolLM2 + EfficientNet-Lite0 + a stage-1 projector), built offline and loaded like any HF model.

smol-llava is built here with a reduced stage 1 (a few steps on a few captioned digit images)
through the same code as the real recipe; the real build's figures are in the README.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.samples import EngineSample, Message
from workers.engine.models import LoraSpec, ModelSpec, load_model
from workers.engine.models.alignment import AlignConfig
from workers.engine.models.stamps import CAPTION_PROMPT
from workers.engine.models.smol import build_report, build_smol_preset, packaged_file

pytestmark = pytest.mark.slow
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _digit_image(i: int, directory: Path) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = (255 - d.images[i] * 255 / 16).astype(np.uint8)
    path = directory / f"digit-{i}.png"
    Image.fromarray(pixels, "L").resize((112, 112)).convert("RGB").save(path)
    return path


@pytest.fixture(scope="module")
def digit_captions(tmp_path_factory: pytest.TempPathFactory) -> list[EngineSample]:
    from sklearn.datasets import load_digits

    directory, target = tmp_path_factory.mktemp("captions"), load_digits().target
    return [EngineSample(i, (Message("user", CAPTION_PROMPT), Message("assistant", f"A handwritten {DIGITS[target[i]]}.")),
                         (_digit_image(i, directory),)) for i in range(24)]


@pytest.fixture(scope="module")
def llava_dir(smol_cache: Path, digit_captions: list[EngineSample]) -> Path:
    return build_smol_preset("smol-llava", smol_cache, align=AlignConfig(steps=8, batch_size=4, lr=3e-3, max_eval=4),
                             captions=digit_captions)


def _greedy(loaded, text: str, images: list | None = None, new: int = 8) -> str:  # noqa: ANN001
    messages = [{"role": "user", "content": text}]
    proc = loaded.processor or loaded.tokenizer
    prompt = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = (proc(text=prompt, images=images, return_tensors="pt") if images
              else proc(prompt, return_tensors="pt", add_special_tokens=False))
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=new, do_sample=False)
    return loaded.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_smol_lm_is_the_pretrained_smollm2(smol_cache: Path) -> None:
    loaded = load_model(ModelSpec("smol-lm", model_type="causal-lm", device="cpu", preset_cache=str(smol_cache)),
                        lora=LoraSpec(r=4, alpha=8))
    config = loaded.hf_model.config
    assert (config.hidden_size, config.num_hidden_layers, len(loaded.tokenizer)) == (576, 30, 49152)
    assert build_report(smol_cache / "smol-lm-v1")["parameters"] == 134_515_008
    # only trained weights answer this; a randomly initialised model of the same shape does not
    assert "Paris" in _greedy(loaded, "What is the capital of France? Answer in one word.")


def test_a_cached_build_is_reused_offline(smol_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = smol_cache / "smol-lm-v1" / "build.json"
    before = report.stat().st_mtime_ns
    assert build_smol_preset("smol-lm", smol_cache) == smol_cache / "smol-lm-v1"
    assert report.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="unknown pretrained preset"):
        build_smol_preset("smol-xl", smol_cache)
    with pytest.raises(FileNotFoundError, match="not installed: make install"):
        packaged_file("no-such-distribution", "x.bin")


def test_models_build_command_prints_the_directory_and_report(smol_cache: Path, tmp_path: Path) -> None:
    env = {**os.environ, "ADAPTINF_PRESET_CACHE": str(smol_cache)}
    out = subprocess.run([str(Path(sys.executable).parent / "adaptinf"), "models", "build", "smol-lm",
                          "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, check=True).stdout
    directory, report = out.strip().splitlines()[-2:]
    assert Path(directory) == smol_cache / "smol-lm-v1" and json.loads(report)["preset"] == "smol-lm"


def test_the_build_is_deterministic(llava_dir: Path, smol_cache: Path, digit_captions: list[EngineSample],
                                   tmp_path: Path) -> None:
    import shutil

    shutil.copytree(smol_cache / "smol-lm-v1", tmp_path / "smol-lm-v1")  # the same SmolLM2 build, not rebuilt
    again = build_smol_preset("smol-llava", tmp_path, align=AlignConfig(steps=8, batch_size=4, lr=3e-3, max_eval=4),
                              captions=digit_captions)
    assert (again / "model.safetensors").read_bytes() == (llava_dir / "model.safetensors").read_bytes()
    assert build_report(again) == build_report(llava_dir) and build_report(again)["recipe"]["align"]["steps"] == 8


def test_the_language_model_is_smol_lm(llava_dir: Path, smol_cache: Path) -> None:
    from safetensors import safe_open

    with safe_open(llava_dir / "model.safetensors", "pt") as llava, \
            safe_open(smol_cache / "smol-lm-v1" / "model.safetensors", "pt") as lm:
        lm_keys = [k for k in lm.keys() if k.startswith("model.layers.")]
        assert len(lm_keys) == 30 * 9  # q, k, v, o, gate, up, down and two norms per layer
        for key in lm_keys:
            # LLaVA saves its language model under the checkpoint names of llava-hf ("language_model.model.")
            assert torch.equal(llava.get_tensor(f"language_model.{key}"), lm.get_tensor(key))
        embed = lm.get_tensor("model.embed_tokens.weight")
        grown = llava.get_tensor("language_model.model.embed_tokens.weight")
        assert torch.equal(grown[:-1], embed) and grown.shape[0] == embed.shape[0] + 1  # + the <image> token


def test_the_vision_tower_is_imagenet_efficientnet_lite0(llava_dir: Path) -> None:
    from efficientnet_lite_pytorch import EfficientNet
    from transformers import LlavaForConditionalGeneration

    from workers.engine.models.smol import EFFNET_DIST, EFFNET_FILE

    model = LlavaForConditionalGeneration.from_pretrained(llava_dir)
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(packaged_file(EFFNET_DIST, EFFNET_FILE), weights_only=True))
    reference.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = model.model.vision_tower(x).last_hidden_state
        want = reference.extract_features(x).flatten(2).transpose(1, 2)
    assert tokens.shape == (2, 49, 1280)
    torch.testing.assert_close(tokens, want, rtol=1e-4, atol=1e-4)
    model.train()  # the tower stays frozen in eval mode: its batch norm must not move
    assert not model.model.vision_tower.training and not model.model.vision_tower.net.training


def test_stage_one_alignment_lowers_the_held_out_caption_loss(llava_dir: Path) -> None:
    report = build_report(llava_dir)["alignment"]
    assert report["steps"] == 8 and report["eval_samples"] == 2
    assert report["eval_loss_after"] < report["eval_loss_before"]


def test_a_checkpoint_loads_with_peft_and_answers_an_image_question(llava_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    ours = load_model(ModelSpec(str(llava_dir), model_type="llava", device="cpu"),
                      lora=LoraSpec(r=4, alpha=8, layers=(28, 29)))
    with torch.no_grad():  # a non-zero adapter, so loading it changes what the model says
        gen = torch.Generator().manual_seed(0)
        for name, p in ours.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    ours.save_adapter(tmp_path / "adapter")
    image = Image.open(_digit_image(7, tmp_path)).convert("RGB")
    question = "<image>\nWhich digit is written here?"

    processor = AutoProcessor.from_pretrained(llava_dir)
    plain = PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(llava_dir), tmp_path / "adapter")
    plain.eval()
    peft_view = type(ours)(plain, processor.tokenizer, processor, torch.device("cpu"), torch.float32, "llava", ours.spec)
    answer = _greedy(peft_view, question, [image])
    assert answer.strip() and answer == _greedy(ours, question, [image])
    prompt = processor.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[image], return_tensors="pt")
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 49  # the 7 x 7 grid
    with torch.no_grad():
        with_adapter = plain(**inputs).logits[0, -1]
        with plain.disable_adapter():
            without = plain(**inputs).logits[0, -1]
    assert not torch.allclose(with_adapter, without)  # the adapter was loaded and is applied
