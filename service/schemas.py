"""Response shapes of the HTTP API (they document the OpenAPI schema; domain code builds dicts)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field

from core.skills import clean_skill

T = TypeVar("T")

# A skill name in a request body, stripped; the 100-character rule and its message are
# clean_skill's, max_length only guards against abuse.
SkillName = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(clean_skill)]


class ListOut(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = Field(description="Whether a next page exists: pass the last item's id as `after`.")


class Problem(BaseModel):
    """RFC 9457 problem details; extension members (code, errors, line, field ...) may follow."""

    model_config = {"extra": "allow"}
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str | None = None


class ApiWarning(BaseModel):
    """Something a creating request was accepted with but that its sender may not have meant."""

    code: str = Field(description="stable snake_case code, e.g. images_dropped")
    message: str = Field(description="what was accepted, what it means, and what to do if it was not meant")


class Progress(BaseModel):
    done: int
    total: int


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: str
    object: Literal["job"] = "job"
    kind: str
    queue: str
    parent_id: str | None
    status: Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
    stage: str | None
    progress: Progress
    attempts: int
    max_attempts: int
    cancel_requested: bool
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobEventOut(BaseModel):
    id: int
    object: Literal["job.event"] = "job.event"
    job_id: str
    level: str
    message: str
    data: dict[str, Any] | None
    created_at: datetime


class DatasetOut(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    name: str
    status: Literal["pending", "ready", "failed"]
    num_samples: int
    num_images: int
    file_name: str
    archive_name: str | None
    skill: str | None = Field(description="the skill declared for every sample (a record's own `skill` wins)")
    skills: dict[str, int] | None = Field(description="samples per skill, once ingested; samples without a skill are not counted")
    error: dict[str, Any] | None
    created_at: datetime
    job_id: str | None


class DatasetCreatedOut(DatasetOut):
    warnings: list[ApiWarning] = Field(description="what the upload was accepted with but you may not have meant")


class SampleOut(BaseModel):
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

    object: Literal["pool.metrics"] = "pool.metrics"
    pool_id: str
    skills: list[str] = Field(description="the matrix columns: the skills of the pool's evaluation sets")
    rounds: list[MetricsRoundOut]
    accuracy: list[list[float | None]] = Field(description="a[t][skill]: one row per evaluated round, columns as `skills`")
    base: MetricsBaseOut | None = Field(description="the untrained model's accuracy, for forward transfer")
    reference_pool_id: str | None
    per_skill: list[SkillMetricsOut]
    summary: MetricsSummaryOut
