"""Response shapes of the HTTP API (they document the OpenAPI schema; domain code builds dicts)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


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
    error: dict[str, Any] | None
    created_at: datetime
    job_id: str | None


class SampleOut(BaseModel):
    id: int
    object: Literal["dataset.sample"] = "dataset.sample"
    key: str
    record: dict[str, Any]
    messages: list[Any]
    image_names: list[Any]
