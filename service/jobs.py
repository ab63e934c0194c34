"""Job records, shared by the API and the workers: create a job, log its events.

Its state transitions (cancel, lease, end, reap) live in `service.lifecycle`; its JSON form is
`service.schemas.JobOut`.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.statuses import QUEUED
from service.db.models import Job, JobEvent

log = logging.getLogger(__name__)


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
