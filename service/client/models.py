"""The API's resources as pydantic models.

Where service/schemas.py has the response model (it imports no torch and no FastAPI) the client
reuses it; the pools, rounds and checkpoints models live next to their routes (service/api, which
imports FastAPI and SQLAlchemy), so they are mirrored here. Every model keeps fields it does not
know (`extra="allow"`): a newer server's additions pass through to `--json` instead of vanishing.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service import schemas

_OPEN = ConfigDict(extra="allow")


class _Created(BaseModel):
    """A resource a creating request returned: what it was accepted with but you may not have meant."""

    # only the creating response has them: dumped (--json) only when there are some
    warnings: list[schemas.ApiWarning] = Field(default_factory=list, exclude_if=lambda v: not v)

JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


class Problem(schemas.Problem):
    """RFC 9457 problem details (extension members kept)."""


class Progress(schemas.Progress):
    """Progress inside the current stage; unit, rate and ETA when the server reports them."""

    model_config = _OPEN


# Looser than the server's models on purpose: a stage status a newer server adds still parses.
class StageState(BaseModel):
    model_config = _OPEN
    name: str
    status: Literal["pending", "running", "done"] | str
    fraction: float = 0.0


class Overall(BaseModel):
    """Progress across all stages of a job."""

    model_config = _OPEN
    fraction: float = 0.0
    eta_seconds: float | None = None
    stages: list[StageState] = Field(default_factory=list)


class Job(schemas.JobOut):
    model_config = _OPEN
    progress: Progress
    overall: Overall | None = None
    metrics: dict[str, Any] | None = Field(None, description="latest live numbers: step, max_steps, loss, lr ...")

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to finish (to now while it runs); None before it starts."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(self.started_at.tzinfo)
        return max(0.0, (end - self.started_at).total_seconds())


class JobEvent(schemas.JobEventOut):
    model_config = _OPEN

    @property
    def type(self) -> str | None:
        """data.type ("stage.start", "stage.end", "train.step", "eval" ...), None for plain messages."""
        return (self.data or {}).get("type")


class Dataset(schemas.DatasetOut, _Created):
    model_config = _OPEN


class Sample(schemas.SampleOut):
    model_config = _OPEN


class EvalSet(BaseModel):
    model_config = _OPEN
    dataset_id: str
    skill: str


class DatasetCounts(BaseModel):
    model_config = _OPEN
    dataset_id: str
    active: int
    pruned: int


class Pool(_Created):
    model_config = _OPEN
    id: str
    object: Literal["pool"] = "pool"
    name: str
    base_model: str
    model_type: str
    config: dict[str, Any]
    size: int
    pruned: int = 0
    datasets: list[DatasetCounts] = Field(default_factory=list)
    rounds_completed: int
    current_checkpoint_id: str | None
    eval_sets: list[EvalSet] = Field(default_factory=list)
    created_at: datetime


class RoundJob(BaseModel):
    model_config = _OPEN
    status: str
    stage: str | None
    progress: Progress
    attempts: int
    error: dict[str, Any] | None


class Round(_Created):
    model_config = _OPEN
    id: str
    object: Literal["round"] = "round"
    pool_id: str
    number: int
    status: JobStatus
    params: dict[str, Any]
    result: dict[str, Any] | None
    job_id: str | None
    job: RoundJob | None
    created_at: datetime
    finished_at: datetime | None


class Checkpoint(BaseModel):
    model_config = _OPEN
    id: str
    object: Literal["checkpoint"] = "checkpoint"
    pool_id: str
    round_id: str | None
    round_number: int | None
    kind: str
    format: str
    sha256: str
    size_bytes: int
    metrics: dict[str, Any] | None = Field(None, description='{"train": {...}, "eval": {...}} when reported')
    eval: list[dict[str, Any]] = Field(default_factory=list)
    content_url: str
    created_at: datetime


class Clusters(BaseModel):
    """GET /v1/pools/{id}/clusters: the clusters of the latest succeeded round."""

    model_config = _OPEN
    object: str = "pool.clusters"
    pool_id: str
    round_id: str | None
    round_number: int | None
    method: str | None
    clusters: list[dict[str, Any]] = Field(default_factory=list)


class PoolMetrics(schemas.PoolMetricsOut):
    model_config = _OPEN
