"""Job records, shared by the API and the workers: create a job, log its events, serialise it.

Its state transitions (cancel, lease, end, reap) live in `service.lifecycle`.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.progress import iso, overall
from core.statuses import QUEUED, TERMINAL
from service.db.models import Job, JobEvent

log = logging.getLogger(__name__)


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


def stage_events(session: Session, job_id: str, ended: dict[str, Any] | None, started: str | None,
                 **data: Any) -> None:
    """The stage.end event of the stage that ended (with its seconds) and the stage.start one."""
    if ended is not None:
        seconds = ended.get("seconds")
        add_event(session, job_id, f"stage {ended['name']} done" + (f" in {seconds:.1f}s" if seconds is not None else ""),
                  data={"type": "stage.end", "stage": ended["name"], "seconds": seconds})
    if started is not None:
        add_event(session, job_id, f"stage {started}", data={"type": "stage.start", "stage": started, **data})


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
