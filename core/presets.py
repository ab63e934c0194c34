"""The built-in model presets a pool may name, and their model types (built by
workers/engine/models/presets.py and smol.py; a test keeps the two lists equal)."""
from __future__ import annotations

PRESET_TYPES: dict[str, str] = {
    "tiny-llava": "llava",
    "tiny-causal-lm": "causal-lm",
    "tiny-llava-30m": "llava",
    "tiny-causal-lm-30m": "causal-lm",
    "smollm2-135m-shape": "causal-lm",
    "llava-1b-shape": "llava",
    # real pretrained weights from installed packages (workers/engine/models/smol.py)
    "smol-lm": "causal-lm",
    "smol-llava": "llava",
}

# The presets with real pretrained weights, built once from installed packages and cached.
PRETRAINED: tuple[str, ...] = ("smol-lm", "smol-llava")
