"""The API's resources as pydantic models: the server's own response models (service/schemas.py,
which imports no torch, FastAPI or SQLAlchemy). Each resource keeps top-level fields it does not
know (`extra="allow"`), so a newer server's additions pass through to `--json`; the nested models
and allowed values are the server's, so a client parses what a server of its own release sends.
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


class Pool(schemas.PoolOut, _Created):
    model_config = _OPEN


class RoundJob(schemas.RoundJob):
    model_config = _OPEN
    progress: Progress


class Round(schemas.RoundOut, _Created):
    model_config = _OPEN
    job: RoundJob | None


class Checkpoint(schemas.CheckpointOut):
    model_config = _OPEN


class Clusters(schemas.ClustersOut):
    """GET /v1/pools/{id}/clusters: the clusters of the latest succeeded round."""

    model_config = _OPEN


class PoolMetrics(schemas.PoolMetricsOut):
    model_config = _OPEN
