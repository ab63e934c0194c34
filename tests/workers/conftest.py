"""Shared fixtures for engine tests: session-scoped tiny models and a few image files."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on shared cores the spinning threads
    made a 60-step training run 18x slower (36 s vs 2 s measured under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Solid-colour PNGs named after their colour (red.png, blue.png, green.png)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    for name, rgb in COLORS.items():
        Image.new("RGB", (64, 48), rgb).save(d / f"{name}.png")
    return d


@pytest.fixture(scope="session")
def tiny_llava():
    from workers.engine.models import ModelSpec, load_model

    return load_model(ModelSpec("tiny-llava", model_type="llava"))


@pytest.fixture(scope="session")
def tiny_causal_lm():
    from workers.engine.models import ModelSpec, load_model

    return load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"))


def randomize_lora_b(loaded, seed: int = 0, std: float = 0.05) -> None:
    """Give LoRA B non-zero values: a fresh adapter has B = 0, which makes every A-gradient zero."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="session")
def tiny_llava_nonzero():
    """tiny-llava whose LoRA B is non-zero (read-only: do not train it)."""
    from workers.engine.models import ModelSpec, load_model

    loaded = load_model(ModelSpec("tiny-llava", model_type="llava"))
    randomize_lora_b(loaded, seed=1)
    return loaded


@pytest.fixture(scope="session")
def tiny_causal_lm_nonzero():
    from workers.engine.models import ModelSpec, load_model

    loaded = load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm"))
    randomize_lora_b(loaded, seed=2)
    return loaded
