"""SQL leases on job rows: who runs a job, for how long, and how it ends.

A job runs only while its worker holds the lease in SQL: `acquire_lease` is one conditional
UPDATE, so two workers given the same job id never both run it. Every later write of the job is
conditional on still owning the lease (`update_if_held`), so a worker that lost it (paused too
long, reaped) cannot overwrite its successor. Clocks: leases use the workers' UTC wall clock, so
machines must be NTP-synchronised to well under `lease_seconds`.
"""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.statuses import ACTIVE, TERMINAL
from service.db.models import Job
from service.jobs import add_event

#: kind -> fn(session, job) run in the transaction that ends a job as failed or cancelled
#: (e.g. ingest marks its dataset failed), from the task and from the reaper alike.
FAILURE_HOOKS: dict[str, Callable[[Session, Job], None]] = {}


class JobCancelled(Exception):
    """Raised by `JobContext.check_cancelled` once a cancel was requested."""


class LeaseLost(Exception):
    """This worker no longer holds the job's lease: stop without writing anything."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def register_failure_hook(kind: str) -> Callable[[Callable[[Session, Job], None]], Callable[[Session, Job], None]]:
    def decorate(fn: Callable[[Session, Job], None]) -> Callable[[Session, Job], None]:
        FAILURE_HOOKS[kind] = fn
        return fn

    return decorate


def acquire_lease(session: Session, job_id: str, owner: str, lease_seconds: float, now: datetime | None = None) -> Job | None:
    """Take the job (queued, or running with an expired lease) for `owner`; None if not ours.

    One conditional UPDATE: the database serialises concurrent acquirers on the row, and the
    loser's WHERE no longer matches, so exactly one wins. Commits.
    """
    now = now or utcnow()
    stmt = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.attempts < Job.max_attempts,
            (Job.status == "queued") | ((Job.status == "running") & (Job.lease_expires_at < now)),
        )
        .values(
            status="running",
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    won = session.execute(stmt).rowcount == 1
    if won:
        job = session.get(Job, job_id, populate_existing=True)
        add_event(session, job_id, f"started (attempt {job.attempts} of {job.max_attempts})", data={"owner": owner})
    session.commit()
    return job if won else None


def update_if_held(session: Session, job_id: str, owner: str, values: dict[str, Any]) -> bool:
    """Write `values` only while `owner` holds the live lease; False when it was lost. No commit."""
    return session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE))
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount == 1


def lease_values(lease_seconds: float) -> dict[str, Any]:
    """A lease renewed from now: its new expiry and the heartbeat time."""
    now = utcnow()
    return {"lease_expires_at": now + timedelta(seconds=lease_seconds), "heartbeat_at": now}


def renew_lease(
    session: Session, job_id: str, owner: str, lease_seconds: float, progress: dict[str, Any] | None = None
) -> tuple[bool, bool]:
    """Extend the lease (and flush `progress`, job column values); returns (still held, cancel
    requested). Commits."""
    values = {**(progress or {}), **lease_values(lease_seconds)}
    held = update_if_held(session, job_id, owner, values)
    cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
    session.commit()
    return held, cancel


def finish_job(
    session: Session,
    job_id: str,
    owner: str,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """End the job as `status` and release the lease, if `owner` still holds it. Commits."""
    if status not in TERMINAL + ("queued",):
        raise ValueError(f"status must be one of {TERMINAL + ('queued',)}, got {status!r}")
    values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires_at": None}
    if status != "queued":
        values.update(result=result, error=error, finished_at=utcnow())
    done = update_if_held(session, job_id, owner, values)
    if done:
        message = {"queued": "released for a retry", "succeeded": "succeeded"}.get(status, status)
        level = "error" if status == "failed" else "info"
        add_event(session, job_id, message, level=level, data={"error": error} if error else None)
        if status in ("failed", "cancelled"):
            run_failure_hook(session, job_id)
    session.commit()
    return done


def run_failure_hook(session: Session, job_id: str) -> None:
    job = session.get(Job, job_id, populate_existing=True)
    hook = FAILURE_HOOKS.get(job.kind) if job is not None else None
    if hook is not None:
        hook(session, job)
