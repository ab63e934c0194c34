"""Job domain functions, shared by the API and the workers: create, log events, cancel, serialise.

Status machine: queued → running → (cancelling) → succeeded | failed | cancelled.
No web framework here; the API maps `JobStateError` to a 409.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.progress import iso, overall
from core.statuses import CANCELLED, CANCELLING, QUEUED, TERMINAL
from service.db.models import Dataset, Job, JobEvent, Round, utcnow

log = logging.getLogger(__name__)


class JobStateError(Exception):
    """The job is in a state that does not allow the requested transition."""


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC, so say so."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def create_job(
    session: Session,
    owner_id: str,
    kind: str,
    queue: str,
    params: dict[str, Any],
    *,
    max_attempts: int = 3,
    parent_id: str | None = None,
) -> Job:
    """Add a queued job (flushed, not committed); enqueue it only after the caller commits."""
    job = Job(
        owner_id=owner_id,
        kind=kind,
        queue=queue,
        params=params,
        status=QUEUED,
        max_attempts=max_attempts,
        parent_id=parent_id,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, f"{kind} job created", data={"queue": queue})
    return job


def add_event(
    session: Session, job_id: str, message: str, level: str = "info", data: dict[str, Any] | None = None
) -> JobEvent:
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"level must be debug, info, warning or error, got {level!r}")
    event = JobEvent(job_id=job_id, message=message, level=level, data=data)
    session.add(event)
    session.flush()
    return event


def note_unsent(session: Session, job_id: str) -> None:
    """Record on a committed job that the broker did not take its message (the reaper re-sends it).

    Best effort: the request that committed the job has succeeded, so a failure to write this
    note (a full disk, a locked database) is logged and the request still answers 2xx.
    """
    try:
        add_event(session, job_id, "broker unreachable; the job will be re-sent", level="warning")
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        log.warning("job %s: could not record that its message is unsent", job_id, exc_info=True)


def request_cancel(session: Session, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker calls `finish_cancel`)."""
    if job.status in TERMINAL:
        raise JobStateError(f"job {job.id} is already {job.status}")
    if job.parent_id is not None:
        # A stage or shard cancelled alone would leave its round waiting forever; the round's own
        # job stops every stage and leaves the pool as it was.
        raise JobStateError(f"job {job.id} is a stage of job {job.parent_id}; cancel {job.parent_id} instead")
    if job.status == CANCELLING:
        return job  # asked already; asking twice is not an error
    job.cancel_requested = True
    if job.status == QUEUED:
        add_event(session, job.id, "cancelled before it started")
        finish_cancel(session, job)
    else:
        job.status = CANCELLING
        add_event(session, job.id, "cancel requested; waiting for the worker to stop")
    session.flush()
    return job


def finish_cancel(session: Session, job: Job) -> Job:
    """Mark the job cancelled and undo what it stood for (an ingest leaves its dataset failed)."""
    job.status = CANCELLED
    job.cancel_requested = True
    job.finished_at = utcnow()
    job.lease_owner = None
    job.lease_expires_at = None
    job.error = {"code": "cancelled", "message": "the job was cancelled"}
    add_event(session, job.id, "job cancelled", level="warning")
    if job.kind == "ingest":
        dataset = session.get(Dataset, job.params.get("dataset_id"))
        if dataset is not None and dataset.status == "pending":
            dataset.status = "failed"
            dataset.error = {"code": "cancelled", "detail": f"ingest job {job.id} was cancelled"}
    elif job.kind == "round":
        # A round cancelled before its first stage touched nothing of the pool; without this the
        # round would stay "queued" and block the pool's next round if its message were lost.
        rnd = session.scalar(select(Round).where(Round.job_id == job.id))
        if rnd is not None and rnd.status in ("queued", "running"):
            rnd.status = CANCELLED
            rnd.finished_at = job.finished_at
    session.flush()
    return job


def iso_utc(dt: datetime | None) -> str | None:
    dt = as_utc(dt)
    return iso(dt) if dt else None


def progress_to_dict(job: Job) -> dict[str, Any]:
    """The job's progress in its current stage: {done, total, unit, rate, eta_seconds}."""
    return {"done": job.progress_done, "total": job.progress_total, "unit": job.progress_unit,
            "rate": job.progress_rate, "eta_seconds": job.progress_eta}


def stage_fraction(job: Job) -> float | None:
    """How much of the current stage is done: the worker's own fraction (finer than done/total,
    e.g. samples while shards are counted), else done/total."""
    if job.progress_fraction is not None:
        return job.progress_fraction
    return job.progress_done / job.progress_total if job.progress_total else None


def overall_to_dict(job: Job, now: datetime | None = None) -> dict[str, Any] | None:
    """Progress across the job's planned stages with an ETA (an estimate: core.progress.overall)."""
    now = now or datetime.now(timezone.utc)
    if job.status in TERMINAL:  # the ETA of an ended job is 0 or meaningless; its fractions stay
        out = overall(job.stages, job.kind, stage_fraction(job), None, now)
        return out and {**out, "eta_seconds": 0.0 if job.status == "succeeded" else None}
    # a stage that reports its own fraction (select) reports in phases: its ETA is the phase's
    return overall(job.stages, job.kind, stage_fraction(job), job.progress_eta, now,
                   phased=job.progress_fraction is not None)


def job_to_dict(job: Job) -> dict[str, Any]:
    """The public JSON form of a job (GET /v1/jobs/{id})."""
    return {
        "id": job.id,
        "object": "job",
        "kind": job.kind,
        "queue": job.queue,
        "parent_id": job.parent_id,
        "status": job.status,
        "stage": job.stage,
        "progress": progress_to_dict(job),
        "overall": overall_to_dict(job),
        "metrics": job.metrics,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "params": job.params,
        "result": job.result,
        "error": job.error,
        "created_at": iso_utc(job.created_at),
        "started_at": iso_utc(job.started_at),
        "finished_at": iso_utc(job.finished_at),
    }


def event_to_dict(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "job.event",
        "job_id": event.job_id,
        "level": event.level,
        "message": event.message,
        "data": event.data,
        "created_at": iso_utc(event.created_at),
    }
