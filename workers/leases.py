"""SQL leases on job rows, the worker's side: who runs a job, and keeping its lease alive.

A job runs only while its worker holds the lease in SQL (`service.lifecycle.acquire_lease` takes
it in one conditional UPDATE, so two workers given the same job id never both run it). Every later
write of the job is conditional on still owning the lease (`update_if_held`), so a worker that lost
it (paused too long, reaped) cannot overwrite its successor. Clocks: leases use the workers' UTC
wall clock, so machines must be NTP-synchronised to well under `lease_seconds`.
"""
from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job
from service.lifecycle import update_if_held


class JobCancelled(Exception):
    """Raised by `JobContext.check_cancelled` once a cancel was requested."""


class LeaseLost(Exception):
    """This worker no longer holds the job's lease: stop without writing anything."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
