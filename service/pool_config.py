"""A pool's configuration (`pools.config`) and a round's parameters (`rounds.params`), validated.

Section keys are real field names of the engine dataclasses, so a worker builds them with
`Cls(**section)`: lora → LoraSpec, features → FeatureConfig, selection → SelectionConfig,
pruning → PruneConfig, training → TrainConfig. A partial config gets the defaults filled in.
No torch here: this module is imported by the API.

Every check raises with the field's own words and the bad value, e.g.
"n_clusters must be a positive int or 'auto', got 0"; the API answers it as a 422 whose
`field` is the path (body.config.selection.n_clusters).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator, model_validator,
)

from core.engine_defaults import ALL_LINEAR, MAX_POOL_SIZE, PROJECTION_NNZ
from core.registry import METHODS

MODEL_TYPES = ("llava", "causal-lm")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_at_least(lo: int):  # noqa: ANN202
    def check(v: Any) -> Any:
        if not _is_int(v) or v < lo:
            raise ValueError(f"must be an int >= {lo}, got {v!r}")
        return v

    return check


def _optional_int_at_least(lo: int):  # noqa: ANN202
    inner = _int_at_least(lo)
    return lambda v: v if v is None else inner(v)


def _one_of(*choices: str):  # noqa: ANN202
    def check(v: Any) -> Any:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {v!r}")
        return v

    return check


def _any_int(v: Any) -> Any:
    if not _is_int(v):
        raise ValueError(f"must be an int, got {v!r}")
    return v


def _int_schema(lo: int, *, nullable: bool = False) -> WithJsonSchema:
    """The OpenAPI type of an `Any` field whose validator admits only ints >= lo (or null)."""
    schema: dict[str, Any] = {"type": "integer", "minimum": lo}
    return WithJsonSchema({"anyOf": [schema, {"type": "null"}]} if nullable else schema)


# `Any` + an after-validator: our check sees the raw JSON value (no silent "8" → 8 or true → 1)
# and its message carries that value; WithJsonSchema tells the OpenAPI what the check admits.
PosInt = Annotated[Any, AfterValidator(_int_at_least(1)), _int_schema(1)]
NonNegInt = Annotated[Any, AfterValidator(_int_at_least(0)), _int_schema(0)]
OptPosInt = Annotated[Any, AfterValidator(_optional_int_at_least(1)), _int_schema(1, nullable=True)]
OptNonNegInt = Annotated[Any, AfterValidator(_optional_int_at_least(0)), _int_schema(0, nullable=True)]
# a token limit per sample: null (no limit) parses, and new pools are held to a bound (pool_limits)
MaxLength = Annotated[Any, AfterValidator(_optional_int_at_least(2)), _int_schema(2, nullable=True)]
SEED_MAX = 2**31 - 1  # FAISS's k-means seed is a C int


def seed_problem(value: Any) -> str | None:
    """Why `value` is not a seed a new pool or round may use, or None."""
    if _is_int(value) and 0 <= value <= SEED_MAX:
        return None
    return f"must be an int in [0, {SEED_MAX}], got {value!r}"


def _seed(v: Any) -> Any:
    if (message := seed_problem(v)) is not None:
        raise ValueError(message)
    return v


AnyInt = Annotated[Any, AfterValidator(_any_int), WithJsonSchema({"type": "integer"})]
# Any int parses (a stored config of an older pool must keep loading); new pools and rounds are
# held to [0, SEED_MAX] by service.pool_limits.
Seed = AnyInt


class _Section(BaseModel):
    # Unknown keys are refused: a typo ("n_cluster") must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LoraSection(_Section):
    """The LoRA adapter trained each round: rank, scaling, dropout, target modules and layers."""

    # the engine's LoraSpec fields
    r: PosInt = 64
    alpha: PosInt = 128
    dropout: float = 0.0
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_LINEAR),
                                      description="decoder linear modules with LoRA; default all seven")
    layers: list[NonNegInt] | None = Field(None, description="decoder layers with LoRA; null = all")
    seed: Seed = 0
    train_projector: StrictBool = Field(False, description="also train the multimodal projector in full (llava)")

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout(cls, v: Any) -> Any:
        if not _is_number(v) or not 0.0 <= v < 1.0:
            raise ValueError(f"must be a number in [0, 1), got {v!r}")
        return v

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v or any(not m for m in v):
            raise ValueError(f"must be a non-empty list of module names, got {v!r}")
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and not v:
            raise ValueError("must be null (every layer) or a non-empty list of layer indices, got []")
        return v


class FeaturesSection(_Section):
    """The feature pass: which layers' gradients, their projected size, batch and token limits."""

    # the engine's FeatureConfig fields
    layers: Literal["last"] | list[AnyInt] = Field("last", description='"last" or decoder-layer indices')
    proj_dim: PosInt = 8192
    projection_nnz: PosInt = Field(PROJECTION_NNZ, description="non-zeros per gradient coordinate in the sparse JL projection; divides proj_dim")
    batch_size: PosInt = 8
    max_length: MaxLength = Field(4096, description="token limit per sample (tail-truncated); at most "
                                  "ADAPTINF_MAX_SEQUENCE_LENGTH")
    seed: Seed = 0

    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, v: Any) -> Any:
        if v == "last":
            return v
        if not isinstance(v, list) or not v:
            raise ValueError(f"must be 'last' or a non-empty list of layer indices, got {v!r}")
        return v

    @model_validator(mode="after")
    def _nnz_fits(self) -> "FeaturesSection":
        if self.proj_dim % self.projection_nnz:
            raise ValueError(f"projection_nnz must divide proj_dim ({self.proj_dim}), got {self.projection_nnz!r}")
        return self


class SelectionSection(_Section):
    """Pseudo-skill clustering and score-based sampling (CCS) inside each cluster."""

    # the engine's SelectionConfig fields
    n_clusters: Annotated[Any, WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}]})] = Field(
        10, description='a positive int or "auto"')
    tails: list[float] = Field(default_factory=lambda: [5.0, 95.0], description="CCS percentiles [low, high]")
    n_strata: PosInt = 50

    @field_validator("n_clusters")
    @classmethod
    def _n_clusters(cls, v: Any) -> Any:
        if v != "auto" and (not _is_int(v) or v < 1):
            raise ValueError(f"must be a positive int or 'auto', got {v!r}")
        return v

    @field_validator("tails", mode="before")
    @classmethod
    def _tails(cls, v: Any) -> Any:
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v)):
            raise ValueError(f"must be [low, high] percentiles, got {v!r}")
        if not 0.0 <= v[0] < v[1] <= 100.0:
            raise ValueError(f"must satisfy 0 <= low < high <= 100, got {list(v)!r}")
        return [float(x) for x in v]


class PruningSection(_Section):
    """Pool pruning after each round: redundancy threshold, caps, and the embedding deduplicated on."""

    # the engine's PruneConfig fields
    preset: Annotated[Any, AfterValidator(_one_of("default", "lite")), WithJsonSchema({"enum": ["default", "lite"]})] = Field(
        "default", description='"default" or "lite"')
    eps: float | None = Field(None, description="null = the preset's (default 0.05, lite 0.15)")
    max_pool_size: OptNonNegInt = Field(MAX_POOL_SIZE, description="the pool's cap after each round's pruning "
                                        "(most redundant pruned first, water-filled across clusters); null = none")
    budget_multiple: float | None = Field(None, description="a cap relative to the round: at most "
                                          "ceil(budget_multiple × the round's budget) samples stay; null = none")
    keep_per_cluster: OptPosInt = Field(None, description="at most this many per cluster after dedup "
                                        "(the released code's rule); null = none")
    embedding: Annotated[Any, AfterValidator(_one_of("gradient", "hidden")), WithJsonSchema({"enum": ["gradient", "hidden"]})] = Field(
        "gradient", description='"gradient": dedup on the gradient features; "hidden": on mean-pooled last '
        "hidden states, computed in the same feature pass")

    @field_validator("eps", mode="before")
    @classmethod
    def _eps(cls, v: Any) -> Any:
        if v is not None and (not _is_number(v) or not 0.0 <= v <= 2.0):
            raise ValueError(f"must be null or a number in [0, 2], got {v!r}")
        return v

    @field_validator("budget_multiple", mode="before")
    @classmethod
    def _budget_multiple(cls, v: Any) -> Any:
        if v is not None and (not _is_number(v) or not 1.0 <= v < float("inf")):
            raise ValueError(f"must be null or a finite number >= 1, got {v!r}")
        return v


class TrainingSection(_Section):
    """Training of the round's adapter on its selection."""

    # the engine's TrainConfig fields
    epochs: PosInt = 1
    lr: float = 2e-4
    batch_size: PosInt = 4
    max_steps: OptPosInt = None
    seed: Seed = 0
    max_length: MaxLength = Field(4096, description="token limit per sample (tail-truncated); a batch padded "
                                  "past it trains as micro-batches of similar lengths (the same gradient); at "
                                  "most ADAPTINF_MAX_SEQUENCE_LENGTH")
    projector_lr: float | None = Field(None, description="lr of a projector trained in full; null = lr")

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, v: Any) -> Any:
        if not _is_number(v) or not v > 0:
            raise ValueError(f"must be a number > 0, got {v!r}")
        return v

    @field_validator("projector_lr", mode="before")
    @classmethod
    def _projector_lr(cls, v: Any) -> Any:
        if v is not None and (not _is_number(v) or not v > 0):
            raise ValueError(f"must be null or a number > 0, got {v!r}")
        return v


class PoolConfig(_Section):
    """The whole `pools.config`; every key has a default."""

    lora: LoraSection = Field(default_factory=LoraSection)
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    selection: SelectionSection = Field(default_factory=SelectionSection)
    pruning: PruningSection = Field(default_factory=PruningSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    shard_size: PosInt = Field(256, description="samples per feature shard job")
    warmup_fraction: float = Field(0.05, description="share of round 1's data the warm-up adapter trains on")
    pool_index: StrictBool = Field(False, description="store a FAISS index of the round's surviving candidates' "
                                   "features each round, downloadable at GET /v1/pools/{id}/index (at 200k samples "
                                   "× 8,192 dimensions it made the select stage 64–66 s longer, and the worker "
                                   "peaked at about 7 GB while building it)")

    @field_validator("warmup_fraction", mode="before")
    @classmethod
    def _warmup(cls, v: Any) -> Any:
        if not _is_number(v) or not 0.0 < v <= 1.0:
            raise ValueError(f"must be a number in (0, 1], got {v!r}")
        return v

    def to_json(self) -> dict[str, Any]:
        """The full config as stored in `pools.config`."""
        return self.model_dump(mode="json")


def parse_pool_config(raw: dict[str, Any] | None) -> PoolConfig:
    """A full PoolConfig from a stored or partial one (raises pydantic.ValidationError)."""
    return PoolConfig.model_validate(raw or {})


def check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"must be one of {', '.join(METHODS)}, got {method!r}")
    return method


class RoundParams(_Section):
    """A round: the new datasets, how many samples to select and how.

    `budget` is a count (int >= 1) or a fraction of the candidate pool (float in (0, 1]):
    JSON `1` is one sample, `1.0` is every candidate.
    """

    # the `POST /v1/pools/{id}/rounds` body, stored as rounds.params
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"dataset_ids": ["ds_4f1c2e9a7b3d5f60a1b2c3d4"], "budget": 0.25, "method": "adapt-inf"},
        {"dataset_ids": ["ds_4f1c2e9a7b3d5f60a1b2c3d4"], "budget": 500, "method": "random", "train": False},
    ]})

    dataset_ids: list[str] = Field(min_length=1, max_length=100)
    budget: Annotated[Any, WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 1, "description": "a number of samples"},
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "a fraction of the candidates"},
    ]})] = Field(description="int >= 1 (samples) or a fraction in (0, 1] of the candidates; JSON `1` is one "
                 "sample, `1.0` every candidate")
    method: Annotated[str, AfterValidator(check_method), WithJsonSchema({"type": "string", "enum": list(METHODS)})] = Field(
        "adapt-inf", description="adapt-inf: per-cluster expert choice (the paper's method); random, semdedup and "
        "full: baselines; score:<expert>: one fixed scoring expert in every cluster")
    candidates: Literal["pool", "new"] = Field(
        "pool", description="pool: select from the whole pool plus the new data (Adapt-∞); new: from this "
        "round's new samples only (sequential fine-tuning, a baseline). New samples join the pool either way.")
    train: bool = True
    prune: bool = True
    seed: Annotated[Any, AfterValidator(_seed), WithJsonSchema({"type": "integer", "minimum": 0, "maximum": SEED_MAX})] = 0

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if _is_int(v) and v >= 1:
            return v
        if isinstance(v, float) and 0.0 < v <= 1.0:
            return v
        raise ValueError(f"must be an int >= 1 or a fraction in (0, 1], got {v!r}")

    @field_validator("dataset_ids")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        seen = set()
        for ds in v:
            if ds in seen:
                raise ValueError(f"lists dataset {ds!r} twice")
            seen.add(ds)
        return v
