"""The operator's upper bounds on a pool's numbers, from settings (`ADAPTINF_MAX_*`), and the seed range.

Type checks live in `service.pool_config`; these bounds keep one request from taking a worker for
days or its memory past the machine (1e9 epochs, r = 1e9, an unbounded sequence length). They are
checked when a pool is created and again when a round starts (against the settings of that
moment), so an operator who lowers a limit stops older pools too. Seeds must fit FAISS's 31-bit
seed. Stored configs still parse whatever they hold, so older pools keep loading.
"""
from __future__ import annotations

from typing import Any

from service.config import Settings
from service.pool_config import seed_problem

# (path in the config, setting holding its bound)
LIMITS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("lora", "r"), "max_lora_rank"),
    (("lora", "alpha"), "max_lora_alpha"),
    (("features", "proj_dim"), "max_proj_dim"),
    (("features", "batch_size"), "max_batch_size"),
    (("features", "max_length"), "max_sequence_length"),
    (("selection", "n_clusters"), "max_clusters"),
    (("selection", "n_strata"), "max_strata"),
    (("training", "epochs"), "max_epochs"),
    (("training", "max_steps"), "max_train_steps"),
    (("training", "batch_size"), "max_batch_size"),
    (("training", "max_length"), "max_sequence_length"),
    (("training", "lr"), "max_lr"),
    (("training", "projector_lr"), "max_lr"),
    (("shard_size",), "max_shard_size"),
)
# Keys where null means "no limit" (refused: the bound must hold); elsewhere null means "unset".
_NULL_IS_UNBOUNDED = {("features", "max_length"), ("training", "max_length")}
SEEDS = (("lora", "seed"), ("features", "seed"), ("training", "seed"))


def over_limits(
    config: dict[str, Any], settings: Settings, prefix: str = "body.config", *, new: bool = True
) -> list[dict[str, str]]:
    """One {"field", "message", "type"} per value of a full stored-form config above its bound.

    `new=False` (a stored config, checked when a round starts) skips the checks that pools of
    earlier releases fail by default (seeds, a `max_length: null`), so they keep running.
    """
    out = []
    for path in SEEDS if new else ():
        if (message := seed_problem(config[path[0]][path[1]])) is not None:
            out.append({"field": ".".join((prefix, *path)), "message": message, "type": "value_error"})
    for path, setting in LIMITS:
        value: Any = config
        for key in path:
            value = value[key]
        bound = getattr(settings, setting)
        env = f"ADAPTINF_{setting.upper()}"
        if value is None and path in _NULL_IS_UNBOUNDED and new:
            message = f"null (no limit) is above this service's limit of {bound} ({env})"
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value > bound:
            message = f"must be at most {bound} ({env}), got {value!r}"
        else:
            continue
        out.append({"field": ".".join((prefix, *path)), "message": message, "type": "limit_exceeded"})
    return out
