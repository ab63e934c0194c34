"""Every job state transition, and the dataset or round that follows the job.

    queued → running → (cancelling) → succeeded | failed | cancelled;  running → queued (retry)

Who moves a job: the API (`request_cancel`), the worker's task base (`acquire_lease`, `finish_job`),
the reaper (`reap_expired_job`, `give_up_unclaimed`) and a round's stage machine (`start_round_job`,
`finish_round_job`). When a job ends failed or cancelled, `follow` brings its dataset (kind
ingest) or round (kinds round and round.<stage>) along in the same transaction, dispatching on the
kind explicitly. A worker's writes are fenced: they apply only while it holds the live lease
(`update_if_held`), so a worker that lost its lease cannot overwrite its successor.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from core.progress import end_running, utcnow
from core.statuses import (
    ACTIVE, CANCELLED, CANCELLING, DATASET_FAILED, DATASET_PENDING, DATASET_READY, FAILED, QUEUED, RUNNING,
    SUCCEEDED, TERMINAL,
)
from service.db.models import Dataset, Job, Round
from service.jobs import add_event, stage_events

ROUND = "round"
ROUND_STAGE_PREFIX = "round."  # a round's stage jobs are kinds round.prepare, round.features ...


class JobStateError(Exception):
    """The job is in a state that does not allow the requested transition."""


# --- the API ------------------------------------------------------------------------------------

def request_cancel(session: Session, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker ends it cancelled)."""
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
    """End a job that holds no lease as cancelled; its dataset or round follows."""
    job.status, job.cancel_requested, job.finished_at = CANCELLED, True, utcnow()
    job.lease_owner = job.lease_expires_at = None
    job.error = {"code": "cancelled", "message": "the job was cancelled"}
    add_event(session, job.id, "job cancelled", level="warning")
    session.flush()
    follow(session, job)
    session.flush()
    return job


# --- the worker's task base ---------------------------------------------------------------------

def update_if_held(session: Session, job_id: str, owner: str, values: dict[str, Any]) -> bool:
    """Write `values` only while `owner` holds the live lease; False when it was lost. No commit."""
    return session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE))
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount == 1


def acquire_lease(session: Session, job_id: str, owner: str, lease_seconds: float, now: datetime | None = None) -> Job | None:
    """queued (or running with an expired lease) → running, held by `owner`; None if not ours.

    One conditional UPDATE: the database serialises concurrent acquirers on the row, and the
    loser's WHERE no longer matches, so exactly one wins. Commits.
    """
    now = now or utcnow()
    stmt = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.attempts < Job.max_attempts,
            (Job.status == QUEUED) | ((Job.status == RUNNING) & (Job.lease_expires_at < now)),
        )
        .values(
            status=RUNNING,
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


def finish_job(
    session: Session, job_id: str, owner: str, status: str, *,
    result: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
) -> bool:
    """End the job as `status` (or release it, `queued`, for a retry) if `owner` still holds the
    lease; a failed or cancelled job's dataset or round follows in the same transaction. Commits."""
    if status not in TERMINAL + (QUEUED,):
        raise ValueError(f"status must be one of {TERMINAL + (QUEUED,)}, got {status!r}")
    values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires_at": None}
    if status != QUEUED:
        values.update(result=result, error=error, finished_at=utcnow())
    done = update_if_held(session, job_id, owner, values)
    if done:
        message = {QUEUED: "released for a retry", SUCCEEDED: "succeeded"}.get(status, status)
        level = "error" if status == FAILED else "info"
        add_event(session, job_id, message, level=level, data={"error": error} if error else None)
        if status in (FAILED, CANCELLED):
            follow(session, session.get(Job, job_id, populate_existing=True))
    session.commit()
    return done


# --- the reaper ---------------------------------------------------------------------------------

def _claim(session: Session, job: Row, now: datetime, **values: object) -> bool:
    """Apply `values` if the job is still as the reaper read it: same status and attempts, and for
    an active job the same owner with its lease still expired (a late heartbeat wins)."""
    conditions = [Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts]
    if job.status in ACTIVE:
        conditions += [Job.lease_owner == job.lease_owner, Job.lease_expires_at < now]
    stmt = update(Job).where(*conditions).values(**values).execution_options(synchronize_session=False)
    return session.execute(stmt).rowcount == 1


def reap_expired_job(session: Session, job: Row, now: datetime, lease_seconds: float) -> str | None:
    """An active job whose lease expired (its worker died): cancelled if a cancel was asked,
    queued again while attempts < max_attempts, else failed (lease_expired). Returns the new
    status, None when someone else acted first. No commit: the caller commits, then re-sends."""
    released = {"lease_owner": None, "lease_expires_at": None}
    owner = {"owner": job.lease_owner}
    if job.status == CANCELLING or job.cancel_requested:
        error = {"code": "cancelled", "message": "cancelled on request (its worker was lost)"}
        if not _claim(session, job, now, status=CANCELLED, finished_at=now, error=error, **released):
            return None
        add_event(session, job.id, "cancelled: worker lost while cancelling", data=owner)
        follow(session, session.get(Job, job.id, populate_existing=True))
        return CANCELLED
    if job.attempts < job.max_attempts:
        if not _claim(session, job, now, status=QUEUED, heartbeat_at=now, **released):
            return None
        message = f"worker lost (lease expired); re-queued after attempt {job.attempts} of {job.max_attempts}"
        add_event(session, job.id, message, level="warning", data=owner)
        return QUEUED
    message = (f"worker lost {job.attempts} times (lease of {lease_seconds:g}s not renewed); "
               f"giving up after max_attempts={job.max_attempts}")
    error = {"code": "lease_expired", "message": message}
    if not _claim(session, job, now, status=FAILED, finished_at=now, error=error, **released):
        return None
    add_event(session, job.id, message, level="error", data=owner)
    follow(session, session.get(Job, job.id, populate_existing=True))
    return FAILED


def give_up_unclaimed(session: Session, job: Row, now: datetime) -> bool:
    """A queued job that no worker took and whose attempts are spent: failed (max_attempts). No commit."""
    message = f"gave up after {job.attempts} attempts (max_attempts={job.max_attempts})"
    if not _claim(session, job, now, status=FAILED, finished_at=now, error={"code": "max_attempts", "message": message}):
        return False
    add_event(session, job.id, message, level="error")
    follow(session, session.get(Job, job.id, populate_existing=True))
    return True


# --- a round's parent job (it holds no lease: its stages are child jobs) -----------------------

def lock_job(session: Session, job_id: str) -> Job | None:
    """Lock the job row for the rest of the transaction and return it, fresh."""
    session.execute(
        update(Job).where(Job.id == job_id).values(stage=Job.stage).execution_options(synchronize_session=False)
    )
    return session.get(Job, job_id, populate_existing=True)


def start_round_job(session: Session, parent_id: str, stage: str) -> Job | None:
    """queued → running at `stage`, and its round running; None (and no change) for a duplicate
    delivery of a job already running or ended. No commit."""
    started = session.execute(
        update(Job)
        .where(Job.id == parent_id, Job.kind == ROUND, Job.status == QUEUED, Job.cancel_requested.is_(False))
        .values(status=RUNNING, stage=stage, started_at=utcnow(), progress_done=0, progress_total=0)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    parent = session.get(Job, parent_id, populate_existing=True)
    if parent is None:
        raise LookupError(f"round job {parent_id} does not exist")
    if not started:
        _round_follows_parent(session, parent)  # e.g. cancelled while queued, its round still open
        return None
    session.get(Round, parent.params["round_id"]).status = RUNNING
    return parent


def finish_round_job(session: Session, parent: Job, status: str, result: dict[str, Any] | None = None,
                     error: dict[str, Any] | None = None) -> None:
    """End a round's parent job and its round as `status`; queued stage jobs are cancelled,
    running ones are asked to stop (they also see the parent ended at their next check)."""
    now = utcnow()
    parent.status, parent.finished_at, parent.error = status, now, error
    parent.lease_owner, parent.lease_expires_at = None, None
    if result is not None:
        parent.result = result
    rnd = session.get(Round, parent.params["round_id"])
    if rnd is not None and rnd.status not in TERMINAL:
        rnd.status, rnd.finished_at = status, now
        if result is not None:
            rnd.result = result
    if status == SUCCEEDED:
        parent.stages, ended = end_running(parent.stages, now)
        stage_events(session, parent.id, ended, None)
    else:
        _stop_children(session, parent.id, now, status)
    level = "error" if status == FAILED else "info"
    add_event(session, parent.id, f"round {status}", level=level, data={"error": error} if error else None)


def _stop_children(session: Session, parent_id: str, now: datetime, status: str) -> None:
    stop = {"code": "cancelled", "message": f"round ended {status}"}
    session.execute(
        update(Job).where(Job.parent_id == parent_id, Job.status == QUEUED)
        .values(status=CANCELLED, cancel_requested=True, finished_at=now, error=stop)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job).where(Job.parent_id == parent_id, Job.status.in_(ACTIVE))
        .values(cancel_requested=True).execution_options(synchronize_session=False)
    )


# --- what follows a job that ended failed or cancelled ------------------------------------------

def follow(session: Session, job: Job | None) -> None:
    """Bring the job's dataset or round along, by the job's kind (other kinds own nothing)."""
    if job is None:
        return
    if job.kind == "ingest":
        _dataset_follows(session, job)
    elif job.kind == ROUND:
        _round_follows_parent(session, job)
    elif job.kind.startswith(ROUND_STAGE_PREFIX):
        _round_follows_stage(session, job)


def _dataset_follows(session: Session, job: Job) -> None:
    """A failed or cancelled ingest leaves its dataset failed (unless it became ready)."""
    error = job.error or {"code": "ingest_failed", "message": "the ingest job did not finish"}
    detail = f"ingest job {job.id} {job.status}: {error.get('message', '')}"
    mark_dataset_failed(session, (job.params or {}).get("dataset_id"), {"code": error["code"], "detail": detail},
                        only_pending=True)


def _round_follows_parent(session: Session, parent: Job) -> None:
    """The round takes its parent job's terminal status (a parent cancelled while queued, or
    ended by the reaper)."""
    rnd = session.get(Round, parent.params["round_id"]) if "round_id" in (parent.params or {}) else None
    if rnd is None:
        rnd = session.scalar(select(Round).where(Round.job_id == parent.id))
    if rnd is not None and parent.status in TERMINAL and rnd.status not in TERMINAL:
        rnd.status, rnd.finished_at = parent.status, parent.finished_at or utcnow()


def _round_follows_stage(session: Session, child: Job) -> None:
    """A failed stage job fails its round, a cancelled one cancels it. Lock order child → parent,
    as in every stage's commit."""
    if child.parent_id is None:
        return
    parent = lock_job(session, child.parent_id)
    if parent is None or parent.status in TERMINAL:
        return
    if child.kind != ROUND_STAGE_PREFIX + (parent.stage or ""):
        # a stale duplicate of a stage the round has left: its end says nothing about the round
        add_event(session, parent.id, f"{child.kind} job {child.id} ended {child.status} after its stage; ignored",
                  level="warning")
        return
    if child.status == CANCELLED or parent.cancel_requested:
        finish_round_job(session, parent, CANCELLED,
                         error={"code": "cancelled", "message": f"cancelled during {child.kind}"})
        return
    err = child.error or {"code": "internal_error", "message": "stage failed"}
    message = f"{child.kind} failed after {child.attempts} attempt(s): {err.get('message', '')}"
    finish_round_job(session, parent, FAILED, error={"code": err.get("code", "internal_error"), "message": message,
                                                     "job_id": child.id})


# --- a dataset's own transitions (its ingest job is still running) ------------------------------

def mark_dataset_ready(dataset: Dataset, num_samples: int, num_images: int, skill_counts: dict[str, int]) -> None:
    """pending → ready, in the transaction that writes its samples."""
    dataset.status, dataset.error = DATASET_READY, None
    dataset.num_samples, dataset.num_images, dataset.skill_counts = num_samples, num_images, skill_counts
    dataset.updated_at = utcnow()


def mark_dataset_failed(session: Session, dataset_id: str | None, error: dict[str, Any], *,
                        only_pending: bool = False) -> None:
    """→ failed with `error`, unless ready (or, with only_pending, already failed with its own error)."""
    dataset = session.get(Dataset, dataset_id) if dataset_id else None
    if dataset is None or dataset.status == DATASET_READY:
        return
    if only_pending and dataset.status != DATASET_PENDING:
        return
    dataset.status, dataset.error, dataset.updated_at = DATASET_FAILED, error, utcnow()
