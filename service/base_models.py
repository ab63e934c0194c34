"""Which base models a pool may name, checked when the pool is created (not at its first round):

- a preset (`tiny-llava`, ...) of the pool's model type;
- an absolute path to a directory under the operator's models root (`ADAPTINF_MODELS_ROOT`)
  holding a `config.json`; the pool stores it resolved (symlinks followed), and any other server
  path gets the same one answer whether it exists or not;
- a Hugging Face id (`org/name`, or a legacy single name such as `gpt2`) that matches the
  operator's allow-list (`ADAPTINF_ALLOWED_BASE_MODELS`, patterns such as `HuggingFaceTB/*`; empty:
  any id), and with `ADAPTINF_ALLOW_MODEL_DOWNLOADS`, or when it is already in the local Hugging
  Face cache (the API and the workers share `HF_HOME` in a deployment).

Problems name no server path but the models root, which users need to name a local model.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

from core.presets import PRESET_TYPES
from service.config import Settings


def _hub_id_problem(name: str) -> str | None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        presets = ", ".join(sorted(PRESET_TYPES))
        return (f"{name!r} is not a preset ({presets}), an absolute path under ADAPTINF_MODELS_ROOT, "
                "or a Hugging Face id org/name")
    return None


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _local_model(name: str, settings: Settings) -> tuple[str | None, str | None]:
    if settings.models_root is None:
        return None, ("local model paths are off: ADAPTINF_MODELS_ROOT is not set; the operator sets it to a "
                      "directory of model folders, and a pool names one by its absolute path")
    outside = f"a local model must be an absolute path under ADAPTINF_MODELS_ROOT ({settings.models_root})"
    if not name.startswith("/"):
        return None, outside  # no ~ (whose home?) and no relative paths (relative to what?)
    try:
        root = settings.models_root.resolve()
        path = Path(name).resolve()
        if path != root and root not in path.parents:
            return None, outside
        if not (path / "config.json").is_file():
            return None, (f"{name} holds no config.json: a local model is a Hugging Face model directory "
                          f"(config.json and weights) under ADAPTINF_MODELS_ROOT ({settings.models_root})")
    except (OSError, RuntimeError, ValueError):  # a name too long, a symlink loop: no oracle either
        return None, outside
    return str(path), None


def resolve_base_model(name: str, model_type: str, settings: Settings) -> tuple[str, str | None]:
    """(the name to store, why a pool cannot use it or None)."""
    if name in PRESET_TYPES:
        if PRESET_TYPES[name] != model_type:
            return name, f"preset {name!r} is a {PRESET_TYPES[name]} model, not {model_type}"
        return name, None
    if name.startswith(("/", ".", "~")):
        resolved, problem = _local_model(name, settings)
        return resolved or name, problem
    if (problem := _hub_id_problem(name)) is not None:
        return name, problem
    allowed = settings.allowed_base_models
    if allowed and not any(fnmatchcase(name, pattern) for pattern in allowed):
        return name, (f"Hugging Face model {name!r} is not one this server allows; ADAPTINF_ALLOWED_BASE_MODELS "
                      f"allows {', '.join(allowed)} (and the presets)")
    if settings.allow_model_downloads or _in_hub_cache(name):
        return name, None
    return name, (f"Hugging Face model {name!r} is not in the server's Hugging Face cache and downloads are off: "
                  "the operator sets ADAPTINF_ALLOW_MODEL_DOWNLOADS=true to let workers fetch it, downloads it into "
                  "that cache (HF_HOME), or puts its directory under ADAPTINF_MODELS_ROOT")
