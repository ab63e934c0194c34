"""Load a base model (preset, local directory or HF id) and put a LoRA adapter on it."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.engine.models.presets import build_preset, is_preset, preset_shape
from workers.engine.models.smol import SMOL_PRESETS, build_smol_preset
from workers.engine.models.specs import LoraSpec, ModelSpec


@dataclass
class LoadedModel:
    """A PEFT-wrapped model ready for features, training and evaluation.

    `processor` is the LLaVA processor for `llava` models and None for `causal-lm`.
    """

    model: Any  # peft.PeftModel
    tokenizer: Any
    processor: Any | None
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    model_type: str
    spec: ModelSpec

    @property
    def hf_model(self) -> Any:
        """The transformers model under the PEFT wrapper (LoRA layers injected in place)."""
        return self.model.get_base_model()

    @property
    def decoder_layers(self) -> Any:
        """The text decoder's layer list (`nn.ModuleList`)."""
        return self.hf_model.get_decoder().layers

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    def save_adapter(self, directory: str | Path) -> Path:
        """Write a PEFT adapter dir (adapter_config.json + adapter_model.safetensors); its config
        names the base model as the pool does (a preset name, a hub id or a path)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        # Presets are built from a config, so PEFT writes no base model name. It is filled in the
        # written file, not before saving: given a name, PEFT's save looks it up on the Hub.
        path = directory / "adapter_config.json"
        config = json.loads(path.read_text())
        if config.get("base_model_name_or_path") is None:
            config["base_model_name_or_path"] = self.spec.base_model
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return directory


def resolve_device_dtype(spec: ModelSpec) -> tuple[Any, Any]:
    import torch

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device)
    if spec.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, spec.dtype)
    return device, dtype


def _load_base(spec: ModelSpec, device: Any, dtype: Any) -> tuple[Any, Any]:
    """Returns (hf_model, processor_or_tokenizer)."""
    if is_preset(spec.base_model):
        if preset_shape(spec.base_model).model_type != spec.model_type:
            raise ValueError(
                f"ModelSpec.model_type {spec.model_type!r} does not match preset {spec.base_model!r} "
                f"({preset_shape(spec.base_model).model_type})"
            )
        model, proc = build_preset(spec.base_model)
        model.config._attn_implementation = spec.attn_implementation  # noqa: SLF001 - HF's own switch
        return model.to(dtype), proc
    source, kwargs = spec.base_model, dict(local_files_only=not spec.allow_download)
    if spec.base_model in SMOL_PRESETS:
        if SMOL_PRESETS[spec.base_model] != spec.model_type:
            raise ValueError(f"ModelSpec.model_type {spec.model_type!r} does not match preset {spec.base_model!r} "
                             f"({SMOL_PRESETS[spec.base_model]})")
        built = build_smol_preset(spec.base_model, spec.preset_cache, device=str(device))
        source, kwargs = str(built), dict(local_files_only=True)
    if spec.model_type == "llava":
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        # registers smol-llava's EfficientNet-Lite tower with the Auto classes (any local copy of it too)
        import workers.engine.models.efficientnet_tower  # noqa: F401

        model = LlavaForConditionalGeneration.from_pretrained(
            source, dtype=dtype, attn_implementation=spec.attn_implementation, **kwargs
        )
        return model, AutoProcessor.from_pretrained(source, **kwargs)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, attn_implementation=spec.attn_implementation, **kwargs
    )
    return model, AutoTokenizer.from_pretrained(source, **kwargs)


def lora_target_regex(hf_model: Any, lora: LoraSpec) -> str:
    """A PEFT `target_modules` regex matching only the text decoder's layers (never the vision tower)."""
    decoder = hf_model.get_decoder()
    prefix = next(name for name, module in hf_model.named_modules() if module is decoder.layers)
    n_layers = len(decoder.layers)
    if lora.layers is not None and max(lora.layers) >= n_layers:
        raise ValueError(f"LoraSpec.layers {lora.layers!r} out of range for a {n_layers}-layer decoder")
    layer_alt = r"\d+" if lora.layers is None else "|".join(str(i) for i in lora.layers)
    module_alt = "|".join(re.escape(m) for m in lora.target_modules)
    return rf"{re.escape(prefix)}\.(?:{layer_alt})\.(?:.+\.)?(?:{module_alt})"


def projector_name(hf_model: Any) -> str:
    """The multimodal projector's module name, as PEFT's `modules_to_save` matches it (by suffix)."""
    if not any(name.rsplit(".", 1)[-1] == "multi_modal_projector" for name, _ in hf_model.named_modules()):
        raise ValueError("LoraSpec.train_projector needs a llava model with a multi_modal_projector")
    return "multi_modal_projector"


def _attach_lora(hf_model: Any, lora: LoraSpec) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_regex(hf_model, lora),
        bias="none",
        modules_to_save=[projector_name(hf_model)] if lora.train_projector else None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(lora.seed)  # LoRA A is randomly initialised; keep a fresh adapter reproducible
        return get_peft_model(hf_model, config)


def load_model(spec: ModelSpec, adapter_dir: str | Path | None = None, lora: LoraSpec | None = None) -> LoadedModel:
    """Load `spec` and attach an adapter: the one in `adapter_dir`, or a fresh LoRA from `lora`.

    `lora` is only used when `adapter_dir` is None (default: `LoraSpec()`).
    """
    from peft import PeftModel

    device, dtype = resolve_device_dtype(spec)
    hf_model, proc = _load_base(spec, device, dtype)
    hf_model.to(device)
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"adapter_dir {str(adapter_dir)!r} has no adapter_config.json")
        model = PeftModel.from_pretrained(hf_model, adapter_dir, is_trainable=True)
    else:
        model = _attach_lora(hf_model, lora or LoraSpec())
    model.to(device)
    model.eval()
    if spec.model_type == "llava":
        processor, tokenizer = proc, proc.tokenizer
    else:
        processor, tokenizer = None, proc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedModel(model, tokenizer, processor, device, dtype, spec.model_type, spec)
