"""Response shapes of the HTTP API: they document the OpenAPI schema, the routes build them from ORM
rows (`Model.model_validate(row)`, `from_attributes`), and the client parses the same JSON back into
them. A value derived from several columns (a job's progress, a checkpoint's metrics) is derived by
the model's own row validator, so the fields stay plain and JSON parses as before."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator,
)

from core.checkpoint_metrics import read_checkpoint_metrics
from core.progress import overall
from core.registry import EXPERTS, METHODS
from core.skills import clean_skill
from core.statuses import SUCCEEDED, TERMINAL

T = TypeVar("T")


def as_utc(dt: datetime | None) -> datetime | None:
    """In UTC: SQLite hands back naive datetimes (everything stored is UTC), and PostgreSQL gives
    them in its session's time zone, which need not be UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
_FromRow = ConfigDict(from_attributes=True)

# A skill name in a request body, stripped; the 100-character rule and its message are
# clean_skill's, max_length only guards against abuse.
SkillName = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(clean_skill)]


class ListOut(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = Field(description="Whether a next page exists: pass the last item's id as `after`.")


class FieldError(BaseModel):
    field: str = Field(description="where: body.x.y[0], query.name, path ...")
    message: str
    type: str = Field(description="a short code for the kind of error")


class Problem(BaseModel):
    """RFC 9457 problem details; other extension members (line, sample_id, limit ...) may follow."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "type": "urn:adaptinf:problem:not_found", "title": "Not Found", "status": 404,
        "detail": "no pool with id 'pool_0123'", "instance": "/v1/pools/pool_0123", "code": "not_found"}]})
    type: str = Field("about:blank", description="urn:adaptinf:problem:<code>, or about:blank")
    title: str = Field(description="the HTTP status phrase")
    status: int
    detail: str = Field(description="what went wrong, precisely enough to act on")
    instance: str | None = Field(None, description="the request path")
    code: str | None = Field(None, description="a stable snake_case code, e.g. not_found, validation_error")
    field: str | None = Field(None, description="the field at fault, when there is one")
    errors: list[FieldError] | None = Field(None, description="every invalid field (422)")


class ApiWarning(BaseModel):
    """Something a creating request was accepted with but that its sender may not have meant."""

    code: str = Field(description="stable snake_case code, e.g. images_dropped")
    message: str = Field(description="what was accepted, what it means, and what to do if it was not meant")


def created_example(model: type[BaseModel], warning: dict[str, str], **changes: Any) -> ConfigDict:
    """The config of a creating route's response model: its parent's example, changed, with a warning."""
    example = model.model_config["json_schema_extra"]["examples"][0] | changes | {"warnings": [warning]}
    return ConfigDict(json_schema_extra={"examples": [example]})


class Progress(BaseModel):
    done: int
    total: int
    unit: str | None = Field(None, description="what is counted: shards, samples, steps, clusters, images ...")
    rate: float | None = Field(None, description="units per second in this stage so far")
    eta_seconds: float | None = Field(None, description="estimated seconds left in this stage")


class StageProgress(BaseModel):
    name: str
    status: Literal["pending", "running", "done"]
    fraction: float = Field(ge=0, le=1)


class OverallProgress(BaseModel):
    """Progress across the job's stages, each weighted by its typical share of the time."""

    fraction: float = Field(ge=0, le=1)
    eta_seconds: float | None = Field(description="an estimate: the running stage's ETA plus the pending stages "
                                      "at the pace the job has kept so far; null until some work is done")
    stages: list[StageProgress]


class JobError(BaseModel):
    code: str
    message: str


class RowWith:
    """An ORM row plus values computed elsewhere (aggregates, warnings), read as one object by a
    `from_attributes` model: `PoolOut.model_validate(RowWith(pool, size=3, ...))`."""

    def __init__(self, row: Any, **values: Any) -> None:
        self._row = row
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only for names not given as values
        return getattr(self._row, name)


JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


def _stage_fraction(job: Any) -> float | None:
    """How much of the current stage is done: the worker's own fraction (finer than done/total,
    e.g. samples while shards are counted), else done/total."""
    if job.progress_fraction is not None:
        return job.progress_fraction
    return job.progress_done / job.progress_total if job.progress_total else None


def _overall_of(job: Any) -> dict[str, Any] | None:
    """Progress across the job's planned stages with an ETA (an estimate: core.progress.overall)."""
    now = datetime.now(timezone.utc)
    if job.status in TERMINAL:  # the ETA of an ended job is 0 or meaningless; its fractions stay
        out = overall(job.stages, job.kind, _stage_fraction(job), None, now)
        return out and {**out, "eta_seconds": 0.0 if job.status == SUCCEEDED else None}
    # a stage that reports its own fraction (select) reports in phases: its ETA is the phase's
    return overall(job.stages, job.kind, _stage_fraction(job), job.progress_eta, now,
                   phased=job.progress_fraction is not None)


class _ReadsJobRow(BaseModel):
    """Validated from a Job row: `progress` and `overall` are derived from its progress columns."""

    model_config = _FromRow

    @model_validator(mode="wrap")
    @classmethod
    def _from_row(cls, value: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if isinstance(value, (dict, BaseModel)):  # JSON (the client), or a model already
            return handler(value)
        progress = {"done": value.progress_done, "total": value.progress_total, "unit": value.progress_unit,
                    "rate": value.progress_rate, "eta_seconds": value.progress_eta}
        return handler(RowWith(value, progress=progress, overall=_overall_of(value)))


class JobOut(_ReadsJobRow):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "job_0a1b2c3d4e5f6a7b8c9d0e1f", "object": "job", "kind": "round", "queue": "select", "parent_id": None,
        "status": "running", "stage": "features", "progress": {"done": 3, "total": 8}, "attempts": 1,
        "max_attempts": 3, "cancel_requested": False, "params": {"round_id": "round_1a2b3c4d5e6f7a8b9c0d1e2f"},
        "result": None, "error": None, "created_at": "2026-11-30T09:20:02Z", "started_at": "2026-11-30T09:20:03Z",
        "finished_at": None}]})
    id: str
    object: Literal["job"] = "job"
    kind: str
    queue: str
    parent_id: str | None
    status: Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
    stage: str | None
    progress: Progress
    overall: OverallProgress | None = Field(None, description="rounds and ingests: progress across their stages")
    metrics: dict[str, Any] | None = Field(None, description="the latest live numbers, e.g. step, max_steps, loss "
                                           "and lr while training, samples_per_second while computing features")
    attempts: int
    max_attempts: int
    cancel_requested: bool
    params: dict[str, Any] = Field(description="what the job works on, by kind (e.g. round_id, dataset_id)")
    result: dict[str, Any] | None = Field(description="what the job produced, by kind; null until it succeeds")
    error: JobError | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class JobEventOut(BaseModel):
    model_config = _FromRow
    id: int
    object: Literal["job.event"] = "job.event"
    job_id: str
    level: str
    message: str
    data: dict[str, Any] | None
    created_at: UtcDatetime


class DatasetError(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="e.g. invalid_record, missing_image, ingest_failed, cancelled")
    detail: str


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "ds_4f1c2e9a7b3d5f60a1b2c3d4", "object": "dataset", "name": "vqa-counting", "status": "ready",
        "num_samples": 1000, "num_images": 1000, "file_name": "train.jsonl", "archive_name": "images.zip",
        "skill": "counting", "skills": {"counting": 1000}, "error": None, "created_at": "2026-11-30T09:02:11Z",
        "job_id": "job_6d7e8f9a0b1c2d3e4f5a6b7c"}]})
    id: str
    object: Literal["dataset"] = "dataset"
    name: str
    status: Literal["pending", "ready", "failed"]
    num_samples: int
    num_images: int
    file_name: str
    archive_name: str | None
    skill: str | None = Field(description="the skill declared for every sample (a record's own `skill` wins)")
    skills: dict[str, int] | None = Field(validation_alias=AliasChoices("skills", "skill_counts"), description="samples per skill, once "
                                          "ingested; samples without a skill are not counted")
    error: DatasetError | None = Field(description="why ingest failed (status failed)")
    created_at: UtcDatetime
    job_id: str | None


class DatasetCreatedOut(DatasetOut):
    model_config = created_example(DatasetOut, {
        "code": "image_token_placed",
        "message": "sample s0 has more images than <image> tokens in the text: the missing tokens were placed "
                   "before the first user turn (LLaVA's convention); put the tokens where the images belong if that "
                   "is not what you meant"}, status="pending", num_samples=0, num_images=0, skills=None)
    warnings: list[ApiWarning] = Field(description="what the upload was accepted with but you may not have meant")


class SampleOut(BaseModel):
    model_config = _FromRow
    id: int
    object: Literal["dataset.sample"] = "dataset.sample"
    key: str
    record: dict[str, Any]
    messages: list[Any]
    image_names: list[Any]
    skill: str | None = Field(description="the record's own `skill`, else the dataset's")


class MetricsRoundOut(BaseModel):
    round_id: str
    number: int = Field(description="the round's 1-based number")
    checkpoint_id: str
    accuracy: dict[str, float | None] = Field(description="exact-match accuracy per skill after this round")
    loss: dict[str, float | None] = Field(description="mean response NLL per skill after this round")


class MetricsBaseOut(BaseModel):
    accuracy: dict[str, float | None] = Field(description="the base model's accuracy per skill (adapter off)")
    loss: dict[str, float | None] = Field(description="the base model's mean response NLL per skill")


class SkillMetricsOut(BaseModel):
    skill: str
    status: Literal["arrived", "unseen", "not_evaluated"] = Field(
        description="arrived: training data declared it and a round since was evaluated; unseen: no training data "
        "declared it (left out of every summary metric); not_evaluated: it arrived in a round with no evaluation yet"
    )
    arrival_round: int | None = Field(description="number of the first succeeded round whose new datasets held it")
    trajectory: list[float | None] = Field(description="its accuracy after each evaluated round (the matrix column)")
    final: float | None = Field(description="its accuracy after the last evaluated round")
    forgetting: float | None = Field(description="best accuracy from arrival to the round before last, minus the last")
    backward_transfer: float | None = Field(description="last accuracy minus the accuracy right after arrival")
    forward_transfer: float | None = Field(description="accuracy right before the arrival round minus the base model's")


class MetricsSummaryOut(BaseModel):
    avg_acc: float | None = Field(description="mean final accuracy over arrived skills")
    forgetting: float | None = Field(description="Chaudhry et al. 2018: mean over skills arrived before the last round")
    backward_transfer: float | None = Field(description="Lopez-Paz & Ranzato 2017 (BWT)")
    forward_transfer: float | None = Field(description="Lopez-Paz & Ranzato 2017 (FWT), against the base model")
    mft: float | None = Field(description="MCITlib mean fine-tune accuracy: each skill right after its arrival")
    mfn: float | None = Field(description="MCITlib mean final accuracy (equals avg_acc)")
    maa: float | None = Field(description="MCITlib mean average accuracy: over rounds, the mean over skills arrived by then")
    relative_gain: float | None = Field(description="100 x mean final accuracy ratio to the reference pool, per arrived skill")
    skills_arrived: int
    skills_unseen: int


class PoolMetricsOut(BaseModel):
    """GET /v1/pools/{id}/metrics. Definitions: the README's "Lifelong metrics" section."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "object": "pool.metrics", "pool_id": "pool_9c0d1e2f3a4b5c6d7e8f9a0b", "skills": ["color", "counting"],
        "rounds": [
            {"round_id": "round_1a2b3c4d5e6f7a8b9c0d1e2f", "number": 1, "checkpoint_id": "ckpt_5a6b7c8d9e0f1a2b3c4d5e6f",
             "accuracy": {"color": 0.2, "counting": 0.62}, "loss": {"color": 1.9, "counting": 0.95}},
            {"round_id": "round_2b3c4d5e6f7a8b9c0d1e2f3a", "number": 2, "checkpoint_id": "ckpt_6b7c8d9e0f1a2b3c4d5e6f7a",
             "accuracy": {"color": 0.71, "counting": 0.55}, "loss": {"color": 0.8, "counting": 1.02}}],
        "accuracy": [[0.2, 0.62], [0.71, 0.55]],
        "base": {"accuracy": {"color": 0.1, "counting": 0.12}, "loss": {"color": 2.4, "counting": 2.2}},
        "reference_pool_id": None,
        "per_skill": [
            {"skill": "color", "status": "arrived", "arrival_round": 2, "trajectory": [0.2, 0.71], "final": 0.71,
             "forgetting": None, "backward_transfer": 0.0, "forward_transfer": 0.1},
            {"skill": "counting", "status": "arrived", "arrival_round": 1, "trajectory": [0.62, 0.55], "final": 0.55,
             "forgetting": 0.07, "backward_transfer": -0.07, "forward_transfer": None}],
        "summary": {"avg_acc": 0.63, "forgetting": 0.07, "backward_transfer": -0.07, "forward_transfer": 0.1,
                    "mft": 0.665, "mfn": 0.63, "maa": 0.6, "relative_gain": None, "skills_arrived": 2,
                    "skills_unseen": 0}}]})

    object: Literal["pool.metrics"] = "pool.metrics"
    pool_id: str
    skills: list[str] = Field(description="the matrix columns: the skills of the pool's evaluation sets")
    rounds: list[MetricsRoundOut]
    accuracy: list[list[float | None]] = Field(description="a[t][skill]: one row per evaluated round, columns as `skills`")
    base: MetricsBaseOut | None = Field(description="the untrained model's accuracy, for forward transfer")
    reference_pool_id: str | None
    per_skill: list[SkillMetricsOut]
    summary: MetricsSummaryOut


# ---- rounds and clusters ------------------------------------------------------------------------
# Rounds store these as JSON; `extra="allow"` keeps members a later release adds visible to
# clients, and defaults cover members an earlier release did not write.

_Stored = ConfigDict(extra="allow")
_EXPERT_NAMES = ", ".join(EXPERTS)


class ClusterOut(BaseModel):
    model_config = _Stored
    id: int
    size: int = Field(description="candidates in the cluster")
    expert: str | None = Field(description=f"the scoring expert chosen for it ({_EXPERT_NAMES}); null when none applied")
    entropies: dict[str, float] = Field(description="score-histogram entropy in bits per expert with >= 2 finite scores")
    budget: int = Field(description="samples this cluster may contribute")
    selected: int
    pruned: int = Field(description="members pruned from the pool after the round")
    set_aside: int | None = Field(None, description="samples the method itself set aside (semdedup)")


class ClustersOut(BaseModel):
    """GET /v1/pools/{id}/clusters: the clusters of the pool's latest succeeded round."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "object": "pool.clusters", "pool_id": "pool_9c0d1e2f3a4b5c6d7e8f9a0b", "round_id": "round_1a2b3c4d5e6f7a8b9c0d1e2f",
        "round_number": 1, "method": "adapt-inf",
        "clusters": [{"id": 0, "size": 120, "expert": "el2n", "entropies": {"ppl": 4.1, "el2n": 4.6}, "budget": 30,
                      "selected": 30, "pruned": 6, "set_aside": 0}]}]})
    object: Literal["pool.clusters"] = "pool.clusters"
    pool_id: str
    round_id: str | None = Field(description="null before the first succeeded round")
    round_number: int | None
    method: str | None = Field(description=f"the round's selection method ({', '.join(METHODS)})")
    clusters: list[ClusterOut] = Field(description="empty before the first succeeded round")


class RoundParamsOut(BaseModel):
    """A round's parameters as given (see the `POST /v1/pools/{id}/rounds` body)."""

    model_config = _Stored
    dataset_ids: list[str]
    budget: int | float = Field(description="int: samples; float in (0, 1]: fraction of the candidates")
    method: str = Field("adapt-inf", description=f"one of {', '.join(METHODS)}")
    candidates: Literal["pool", "new"] = "pool"
    train: bool = True
    prune: bool = True
    seed: int = 0


class TrainSummaryOut(BaseModel):
    model_config = _Stored
    steps: int | None = None
    loss_first: float | None = None
    loss_last: float | None = None
    mean_loss: float | None = None


class SkillScoreOut(BaseModel):
    model_config = _Stored
    loss: float | None = Field(None, description="mean response NLL")
    accuracy: float | None = Field(None, description="exact-match accuracy on samples with a short answer")
    n: int | None = Field(None, description="samples scored")


class RoundResultOut(BaseModel):
    """What a succeeded round did (null until it succeeds). Stored when the round ended: a member an
    earlier release did not record is null."""

    model_config = _Stored
    candidates: int | None = Field(None, description="samples selection ran on")
    new_samples: int | None = None
    duplicates: int | None = Field(None, description="new samples already in the pool, skipped")
    previously_pruned: int = 0
    budget: int | None = Field(None, description="the budget in samples")
    method: str | None = None
    warmup: bool = Field(False, description="whether a warm-up adapter was trained first (round 1)")
    clusters: list[ClusterOut] = Field(default_factory=list)
    selected: int | None = None
    pruned: int | None = None
    pool_size: int | None = Field(None, description="active members after pruning")
    train: TrainSummaryOut | None = None
    checkpoint_id: str | None = None
    continued_from_checkpoint_id: str | None = Field(
        None, description="the checkpoint training continued from (null: the base model, or a warm-up of its own)")
    damaged_checkpoints: list[str] = Field(
        default_factory=list, description="newer checkpoints skipped because their files were damaged beyond repair")
    eval: dict[str, SkillScoreOut] = Field(default_factory=dict, description="the round's checkpoint per skill")
    base_eval_datasets: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="the base model's scores per evaluation dataset first scored in this round")


# ---- pools, rounds, checkpoints ----------------------------------------------------------------


class EvalSetOut(BaseModel):
    dataset_id: str
    skill: str


class DatasetCounts(BaseModel):
    dataset_id: str
    active: int
    pruned: int


POOL_EXAMPLE = {
    "id": "pool_9c0d1e2f3a4b5c6d7e8f9a0b", "object": "pool", "name": "vqa-lifelong", "base_model": "tiny-llava",
    "model_type": "llava", "config": {"selection": {"n_clusters": 8, "tails": [5.0, 95.0], "n_strata": 50}},
    "size": 940, "pruned": 60,
    "datasets": [{"dataset_id": "ds_4f1c2e9a7b3d5f60a1b2c3d4", "active": 940, "pruned": 60}],
    "rounds_completed": 1, "current_checkpoint_id": "ckpt_5a6b7c8d9e0f1a2b3c4d5e6f",
    "eval_sets": [{"dataset_id": "ds_7e8f9a0b1c2d3e4f5a6b7c8d", "skill": "counting"}],
    "created_at": "2026-11-30T09:12:44Z",
}


class PoolOut(BaseModel):
    # read from RowWith(pool, **pool_counts(...)): the row and its member counts
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [POOL_EXAMPLE]})
    id: str
    object: Literal["pool"] = "pool"
    name: str
    base_model: str
    model_type: str
    # Typed as PoolConfig in the OpenAPI only: a config stored by an earlier release must still be
    # readable even where today's PoolConfig would refuse it.
    config: dict[str, Any] = Field(description="the full config, defaults filled in",
                                   json_schema_extra={"allOf": [{"$ref": "#/components/schemas/PoolConfig"}]})
    size: int = Field(description="active members")
    pruned: int
    datasets: list[DatasetCounts]
    rounds_completed: int
    current_checkpoint_id: str | None
    eval_sets: list[EvalSetOut]
    created_at: UtcDatetime


class RoundJob(_ReadsJobRow):
    status: str
    stage: str | None
    progress: Progress
    attempts: int
    error: JobError | None


class RoundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "round_1a2b3c4d5e6f7a8b9c0d1e2f", "object": "round", "pool_id": "pool_9c0d1e2f3a4b5c6d7e8f9a0b",
        "number": 1, "status": "running",
        "params": {"dataset_ids": ["ds_4f1c2e9a7b3d5f60a1b2c3d4"], "budget": 0.25, "method": "adapt-inf",
                   "candidates": "pool", "train": True, "prune": True, "seed": 0},
        "result": None, "job_id": "job_0a1b2c3d4e5f6a7b8c9d0e1f",
        "job": {"status": "running", "stage": "features", "progress": {"done": 3, "total": 8}, "attempts": 1,
                "error": None},
        "created_at": "2026-11-30T09:20:02Z", "finished_at": None,
    }]})
    id: str
    object: Literal["round"] = "round"
    pool_id: str
    number: int
    status: Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
    params: RoundParamsOut
    result: RoundResultOut | None
    job_id: str | None
    job: RoundJob | None
    created_at: UtcDatetime
    finished_at: UtcDatetime | None


class TrainMetricsOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # stored JSON: members a later release adds stay visible
    steps: int | None = None
    final_loss: float | None = Field(None, description="the last step's batch loss")
    mean_loss: float | None = Field(None, description="mean batch loss over all steps")
    loss_first: float | None = None
    loss_last: float | None = None
    seconds: float | None = Field(None, description="wall time of training (null for checkpoints of older releases)")
    samples: int | None = Field(None, description="samples trained on")
    fraction: float | None = Field(None, description="the warm-up's share of round 1's data (warm-up only)")


class SkillEvalOut(BaseModel):
    accuracy: float | None = Field(description="exact-match accuracy over the skill's short-answer samples")
    loss: float | None = Field(description="mean response NLL")
    n: int


class CheckpointMetricsOut(BaseModel):
    train: TrainMetricsOut | None = Field(description="the training run that made it")
    eval: dict[str, SkillEvalOut] | None = Field(description="its scores per skill; null when the pool has no evaluation sets")


class CheckpointEvalOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset_id: str
    skill: str
    loss: float | None = Field(None, description="mean response NLL")
    accuracy: float | None = Field(None, description="exact-match accuracy on samples with a short answer")
    n: int | None = Field(None, description="samples scored")
    n_scored: int | None = Field(None, description="samples with a short answer (accuracy's denominator)")


class CheckpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "ckpt_5a6b7c8d9e0f1a2b3c4d5e6f", "object": "checkpoint", "pool_id": "pool_9c0d1e2f3a4b5c6d7e8f9a0b",
        "round_id": "round_1a2b3c4d5e6f7a8b9c0d1e2f", "round_number": 1, "kind": "round", "format": "peft-lora-tar-gz",
        "sha256": "3f5e0c1d9b7a2e4f6a8c0e2d4b6f8a0c1e3d5b7f9a1c3e5d7b9f1a3c5e7d9b1f", "size_bytes": 2359811,
        "metrics": {"train": {"steps": 120, "final_loss": 1.12, "mean_loss": 1.48, "loss_first": 2.31, "loss_last": 1.12,
                              "seconds": 412.5, "samples": 480},
                    "eval": {"counting": {"accuracy": 0.64, "loss": 0.91, "n": 200}}},
        "eval": [{"dataset_id": "ds_7e8f9a0b1c2d3e4f5a6b7c8d", "skill": "counting", "loss": 0.91, "accuracy": 0.64,
                  "n": 200, "n_scored": 200}],
        "content_url": "/v1/checkpoints/ckpt_5a6b7c8d9e0f1a2b3c4d5e6f/content", "created_at": "2026-11-30T09:41:17Z",
    }]})
    id: str
    object: Literal["checkpoint"] = "checkpoint"
    pool_id: str
    round_id: str | None
    round_number: int | None
    kind: Literal["warmup", "round"]
    format: str
    sha256: str
    size_bytes: int
    metrics: CheckpointMetricsOut | None = Field(description="how it trained, and how it scored per skill")
    eval: list[CheckpointEvalOut] = Field(description="its scores on each of the pool's evaluation sets")
    content_url: str
    created_at: UtcDatetime

    @model_validator(mode="wrap")
    @classmethod
    def _from_row(cls, value: Any, handler: ModelWrapValidatorHandler[CheckpointOut]) -> CheckpointOut:
        """A Checkpoint row (its round and evaluation results loaded with it) → the API's view."""
        if isinstance(value, (dict, BaseModel)):
            return handler(value)
        evals = [{"dataset_id": e.dataset_id, "skill": e.skill, **(e.metrics or {})} for e in value.evals]
        return handler(RowWith(
            value, object="checkpoint", sha256=value.blob, eval=evals,
            round_number=value.round.number if value.round is not None else None,
            format="peft-lora-tar-gz",  # adapter_config.json + adapter_model.safetensors at the root
            metrics=read_checkpoint_metrics(value.metrics, ((e["skill"], e) for e in evals)),
            content_url=f"/v1/checkpoints/{value.id}/content"))
