"""EfficientNet-Lite0 as a transformers vision tower, so LLaVA builds, saves and loads it like CLIP.

The ImageNet-trained network's last feature map (1280 x 7 x 7 at 224 px) becomes 49 image
tokens of width 1280. The class is registered with `AutoConfig`/`AutoModel` when this module is
imported (`workers.engine.models` imports it), which is what `LlavaForConditionalGeneration`
needs to build the tower from a saved `config.json`.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

MODEL_TYPE = "efficientnet_lite_vision"
VARIANT = "efficientnet-lite0"
FEATURE_STRIDE = 32  # 224 px → a 7 x 7 grid


class EfficientNetLiteVisionConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, variant: str = VARIANT, hidden_size: int = 1280, image_size: int = 224, **kwargs: Any) -> None:
        self.variant = variant
        self.hidden_size = hidden_size
        self.image_size = image_size
        self.patch_size = FEATURE_STRIDE
        super().__init__(**kwargs)


class EfficientNetLiteVisionModel(PreTrainedModel):
    """`forward(pixel_values)` → hidden_states[-1] = [batch, (size/32)^2, 1280] grid tokens.

    The tower stays in eval mode even when the model around it trains: LLaVA keeps the vision
    tower frozen, and batch norm in train mode would rewrite its running statistics.
    """

    config_class = EfficientNetLiteVisionConfig
    main_input_name = "pixel_values"
    base_model_prefix = "efficientnet"
    # No attention inside: any attention implementation chosen for the LLaVA model is fine here.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: EfficientNetLiteVisionConfig) -> None:
        super().__init__(config)
        from efficientnet_lite_pytorch import EfficientNet

        # Lite models use ReLU6 (set by the library); never call its set_swish, which swaps in swish.
        self.net = EfficientNet.from_name(config.variant, image_size=config.image_size)
        self.patch_size = config.patch_size
        self.post_init()

    def _init_weights(self, module: Any) -> None:
        """The weights come from the ImageNet checkpoint (`load_imagenet_weights`) or a saved model."""

    def train(self, mode: bool = True) -> "EfficientNetLiteVisionModel":
        super().train(False)
        return self

    def load_imagenet_weights(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # the classifier is not used
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("_fc.") for k in missing):
            raise ValueError(f"{path} does not fit {self.config.variant}: missing {missing}, unexpected {unexpected}")

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs: Any) -> BaseModelOutputWithPooling:
        grid = self.net.extract_features(pixel_values.to(self.net._conv_stem.weight.dtype))  # noqa: SLF001
        tokens = grid.flatten(2).transpose(1, 2)  # [batch, h*w, 1280], row-major over the grid
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1), hidden_states=(tokens,))


AutoConfig.register(MODEL_TYPE, EfficientNetLiteVisionConfig, exist_ok=True)
AutoModel.register(EfficientNetLiteVisionConfig, EfficientNetLiteVisionModel, exist_ok=True)
