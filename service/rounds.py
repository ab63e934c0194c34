"""Rounds: create one (one writer per pool), look one up (owned through its pool), selection state."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.statuses import SUCCEEDED, UNFINISHED
from service.db.models import Job, Pool, Round
from service.domain_errors import Conflict, InvalidReference
from service.jobs import create_job
from service.pool_config import RoundParams
from service.pools import usable_dataset


def get_round(session: Session, round_id: str, owner_id: str) -> Round | None:
    stmt = select(Round).join(Pool, Pool.id == Round.pool_id).where(Round.id == round_id, Pool.owner_id == owner_id)
    return session.scalar(stmt)


def create_round(session: Session, pool: Pool, params: RoundParams, *, max_attempts: int = 3) -> tuple[Round, Job]:
    """Add a queued round and its parent job (flushed, not committed); the caller commits, then enqueues.

    One writer per pool: refused while another round of the pool is queued or running. The pool
    row should be locked by the caller (PostgreSQL); on SQLite the unique (pool_id, number)
    constraint stops a concurrent twin at commit.
    """
    for i, dataset_id in enumerate(params.dataset_ids):
        usable_dataset(session, dataset_id, pool.owner_id, f"body.dataset_ids[{i}]")
    if params.method == "score:ig" and pool.model_type != "llava":
        raise InvalidReference(
            "body.method: score:ig (image grounding) needs an image model; this pool is causal-lm",
            code="method_not_applicable", field="body.method",
        )
    # One statement, so one snapshot: on SQLite (no row lock) a twin request either sees this
    # round as active or computes the same number and loses on the unique (pool_id, number).
    rounds = session.execute(
        select(Round.id, Round.number, Round.status, Round.job_id).where(Round.pool_id == pool.id)
    ).all()
    active = next((r for r in rounds if r.status in UNFINISHED), None)
    if active is not None:
        raise Conflict(
            f"round {active.id} (number {active.number}) of pool {pool.id} is {active.status}; "
            f"one round at a time per pool: wait for it or cancel its job {active.job_id}",
            code="round_in_progress",
        )
    number = max((r.number for r in rounds), default=0) + 1
    rnd = Round(pool_id=pool.id, number=number, status="queued", params=params.model_dump(mode="json"))
    session.add(rnd)
    session.flush()
    job = create_job(session, pool.owner_id, "round", "select", {"round_id": rnd.id}, max_attempts=max_attempts)
    rnd.job_id = job.id
    session.flush()
    return rnd, job


def selection_ready(session: Session, rnd: Round) -> bool:
    """Whether the round's selection is final: the round succeeded, or its select stage did."""
    if rnd.status == SUCCEEDED:
        return True
    if rnd.job_id is None:
        return False
    done = session.scalar(
        select(func.count()).where(Job.parent_id == rnd.job_id, Job.kind == "round.select", Job.status == "succeeded")
    )
    return bool(done)
