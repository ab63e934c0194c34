"""Typed, validated descriptions of a base model and of the LoRA adapter put on it."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.engine_defaults import ALL_LINEAR

MODEL_TYPES = ("llava", "causal-lm")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoraSpec:
    """LoRA hyper-parameters. Defaults follow Adapt-∞'s released LLaVA-1.5 recipe: every linear
    module of the decoder at r = 64 (alpha = 2r, LLaVA's LoRA convention).

    Args:
        layers: decoder-layer indices that get LoRA modules; None means every decoder layer.
        seed: seeds the random init of the LoRA A matrices so a fresh adapter is reproducible.
        train_projector: also train the multimodal projector in full (LLaVA's `mm_projector`;
            saved in the checkpoint with the adapter). Only for llava models.
    """

    r: int = 64
    alpha: int = 128
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_LINEAR
    layers: tuple[int, ...] | None = None
    seed: int = 0
    train_projector: bool = False

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoraSpec.r must be >= 1, got {self.r!r}")
        if self.alpha <= 0:
            raise ValueError(f"LoraSpec.alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSpec.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, str) or not self.target_modules:
            raise ValueError(f"LoraSpec.target_modules must be a non-empty tuple of names, got {self.target_modules!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not isinstance(self.train_projector, bool):
            raise ValueError(f"LoraSpec.train_projector must be a bool, got {self.train_projector!r}")
        if self.layers is not None:
            layers = tuple(self.layers)
            if not layers or any((not isinstance(i, int)) or i < 0 for i in layers):
                raise ValueError(f"LoraSpec.layers must be None or non-negative ints, got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(sorted(set(layers))))


@dataclass(frozen=True)
class ModelSpec:
    """Which base model to load and where.

    Args:
        base_model: a preset name (`tiny-llava`, `tiny-causal-lm`, ...), a local directory or a
            Hugging Face id.
        model_type: `llava` (LlavaForConditionalGeneration + processor) or `causal-lm`.
        allow_download: False loads with `local_files_only=True`.
        dtype: `auto` is bfloat16 on CUDA and float32 on CPU.
        device: `auto` is `cuda` when available, else `cpu`; or any torch device string.
        preset_cache: where the pretrained presets (`smol-lm`, `smol-llava`) are built and cached;
            None is `ADAPTINF_PRESET_CACHE` or ~/.cache/adaptinf/presets.
    """

    base_model: str
    model_type: str = "llava"
    allow_download: bool = False
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str = field(default="sdpa")
    preset_cache: str | None = None

    def __post_init__(self) -> None:
        if not self.base_model or not isinstance(self.base_model, str):
            raise ValueError(f"ModelSpec.base_model must be a non-empty string, got {self.base_model!r}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"ModelSpec.model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"ModelSpec.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not self.device:
            raise ValueError(f"ModelSpec.device must be 'auto' or a torch device, got {self.device!r}")
