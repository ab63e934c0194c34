"""Built-in tiny models, built from a config with a fixed seed and a locally made tokenizer.

They never download anything and are loaded through exactly the same code as a 7B checkpoint.
`materialize_preset` writes one as a normal Hugging Face directory, so other processes (the
training worker, checkpoint users) can load it with `from_pretrained` and get the same weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRESET_SEED = 1234
# LLaVA-1.5-like chat format; `generation` markers let HF return assistant masks as well.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}USER: {{ message['content'] }}\n"
    "{% else %}ASSISTANT: {% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


@dataclass(frozen=True)
class PresetShape:
    """Sizes of one preset. `vision_*` are ignored for causal-lm presets."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 64
    image_size: int = 56  # (image_size / 14)^2 image tokens per image
    max_positions: int = 2048
    # Far above HF's 0.02: with a 64-wide model, 0.02 caps every logit near 1, so a small LoRA
    # cannot fit even a three-answer task (measured: loss stuck at 4.7 vs 0.05 with 0.2).
    init_std: float = 0.2


PRESETS: dict[str, PresetShape] = {
    # A few hundred K parameters: unit tests and demos, seconds on CPU.
    "tiny-llava": PresetShape("llava", hidden=64, layers=3, heads=4, kv_heads=2, intermediate=128),
    "tiny-causal-lm": PresetShape("causal-lm", hidden=64, layers=3, heads=4, kv_heads=2, intermediate=128),
    # ~30M parameters, 256 image tokens per image: the feature benchmark's LLaVA-1.5-shaped model.
    "tiny-llava-30m": PresetShape(
        "llava", hidden=512, layers=8, heads=8, kv_heads=8, intermediate=1408,
        vision_hidden=256, vision_layers=4, vision_heads=4, vision_intermediate=1024, image_size=224, init_std=0.05,
    ),
    "tiny-causal-lm-30m": PresetShape(
        "causal-lm", hidden=512, layers=8, heads=8, kv_heads=8, intermediate=1408, init_std=0.05
    ),
    # Real shapes with random weights, for speed and memory benchmarks only. The byte tokenizer
    # keeps embeddings and LM head small: SmolLM2-135M's decoder is 107M parameters here (one
    # layer, all linear, r=64 = a 0.65M gradient); the LLaVA-1.5-like model (TinyLlama-1.1B's
    # decoder, a CLIP ViT-L/14-336 tower, 576 image tokens) is 1.28B.
    "smollm2-135m-shape": PresetShape(
        "causal-lm", hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, init_std=0.02
    ),
    "llava-1b-shape": PresetShape(
        "llava", hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632,
        vision_hidden=1024, vision_layers=24, vision_heads=16, vision_intermediate=4096, image_size=336, init_std=0.02,
    ),
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset_shape(name: str) -> PresetShape:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]


def build_tokenizer() -> Any:
    """Byte-level tokenizer (256 byte symbols + specials, no merges): lossless, no corpus needed."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _build_processor(shape: PresetShape, tokenizer: Any) -> Any:
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    side = shape.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLIP CLS token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def _text_config(shape: PresetShape, tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=shape.init_std,
    )


def _build_model(shape: PresetShape, tokenizer: Any) -> Any:
    from transformers import CLIPVisionConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration

    text_config = _text_config(shape, tokenizer)
    if shape.model_type == "causal-lm":
        return LlamaForCausalLM(text_config)
    vision_config = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=14,
        projection_dim=shape.vision_hidden,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    return LlavaForConditionalGeneration(config)


def build_preset(name: str) -> tuple[Any, Any]:
    """Build a preset in memory, float32 on CPU. Returns (model, processor-or-tokenizer).

    Deterministic: the global RNG is forked and seeded, so the weights are the same in every
    process (for one torch version) and the caller's RNG state is left untouched.
    """
    import torch

    shape = preset_shape(name)
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRESET_SEED)
        model = _build_model(shape, tokenizer)
    model.eval()
    if shape.model_type == "causal-lm":
        return model, tokenizer
    return model, _build_processor(shape, tokenizer)


def materialize_preset(name: str, directory: str | Path) -> Path:
    """Save preset `name` as a normal HF model directory (config, safetensors, tokenizer/processor)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model, processor = build_preset(name)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory
