"""Which base models a pool may name, checked when the pool is created (not at its first round):

- a preset (`tiny-llava`, ...) of the pool's model type;
- a directory under the operator's models root (`ADAPTINF_MODELS_ROOT`) holding a `config.json`;
  any other server path is refused without saying whether it exists;
- a Hugging Face id (`org/name`): with `ADAPTINF_ALLOW_MODEL_DOWNLOADS`, or when it is already in
  the local Hugging Face cache (the API and the workers share `HF_HOME` in a deployment).
"""
from __future__ import annotations

import re
from pathlib import Path

from core.presets import PRESET_TYPES
from service.config import Settings

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def base_model_problem(name: str, model_type: str, settings: Settings) -> str | None:
    """Why a pool cannot use `name` as its base model, or None."""
    if name in PRESET_TYPES:
        if PRESET_TYPES[name] != model_type:
            return f"preset {name!r} is a {PRESET_TYPES[name]} model, not {model_type}"
        return None
    if _looks_like_path(name):
        if settings.models_root is None:
            return "local model paths are off; the operator allows a directory with ADAPTINF_MODELS_ROOT"
        root = settings.models_root.expanduser().resolve()
        path = Path(name).expanduser().resolve()
        if path != root and root not in path.parents:
            return f"a local model must lie under ADAPTINF_MODELS_ROOT ({root})"
        if not (path / "config.json").is_file():
            return f"{path} holds no config.json (a Hugging Face model directory)"
        return None
    if not _HUB_ID.match(name):
        presets = ", ".join(sorted(PRESET_TYPES))
        return (f"{name!r} is not a preset ({presets}), a path under ADAPTINF_MODELS_ROOT, "
                "or a Hugging Face id org/name")
    if settings.allow_model_downloads or _in_hub_cache(name):
        return None
    return (f"{name!r} is not in the local Hugging Face cache and downloads are off: set "
            "ADAPTINF_ALLOW_MODEL_DOWNLOADS=true to let workers fetch it, or put it under ADAPTINF_MODELS_ROOT")
