"""Pools and rounds: create, look up (owner-scoped), count, serialise. No web framework here.

The API maps `DomainError` subclasses to problems: `InvalidReference` → 422 naming the field,
`Conflict` → 409. Rounds and checkpoints have no owner column; they are owned through their pool.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.statuses import UNFINISHED
from service.db.locks import sqlite_write_lock
from service.db.models import Checkpoint, Dataset, Job, Pool, PoolEvalSet, PoolMember, Round, Sample
from service.jobs import create_job, iso_utc, progress_to_dict
from service.pool_config import PoolConfig, RoundParams



class DomainError(Exception):
    def __init__(self, detail: str, *, code: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail, self.code, self.field = detail, code, field


class InvalidReference(DomainError):
    """A request names something that does not exist for this owner, or is not usable yet."""


class Conflict(DomainError):
    """The request is valid but clashes with the current state (e.g. a round already running)."""


# ---- look-ups ---------------------------------------------------------------------------------


def get_pool(session: Session, pool_id: str, owner_id: str, *, for_update: bool = False) -> Pool | None:
    """The caller's pool; `for_update` locks its row until the transaction ends, so the checks a
    caller then makes and the writes they allow are serialised against any other such caller."""
    if for_update:
        sqlite_write_lock(session, Pool, pool_id)  # SQLite ignores the FOR UPDATE below
    pool = session.get(Pool, pool_id, with_for_update=for_update or None, populate_existing=for_update)
    return pool if pool is not None and pool.owner_id == owner_id else None


def get_round(session: Session, round_id: str, owner_id: str) -> Round | None:
    stmt = select(Round).join(Pool, Pool.id == Round.pool_id).where(Round.id == round_id, Pool.owner_id == owner_id)
    return session.scalar(stmt)


def get_checkpoint(session: Session, checkpoint_id: str, owner_id: str) -> Checkpoint | None:
    stmt = (
        select(Checkpoint)
        .join(Pool, Pool.id == Checkpoint.pool_id)
        .where(Checkpoint.id == checkpoint_id, Pool.owner_id == owner_id)
    )
    return session.scalar(stmt)


def _usable_dataset(session: Session, dataset_id: str, owner_id: str, field: str) -> Dataset:
    ds = session.get(Dataset, dataset_id)
    if ds is None or ds.owner_id != owner_id:
        raise InvalidReference(f"{field}: no dataset with id {dataset_id!r}", code="unknown_dataset", field=field)
    if ds.status != "ready":
        hint = f"wait for its ingest job {ds.job_id}" if ds.status == "pending" else "upload it again"
        raise InvalidReference(
            f"{field}: dataset {dataset_id!r} is {ds.status}, not ready; {hint}", code="dataset_not_ready", field=field
        )
    return ds


# ---- pools ------------------------------------------------------------------------------------


def create_pool(
    session: Session,
    owner_id: str,
    *,
    name: str,
    base_model: str,
    model_type: str,
    config: PoolConfig,
    eval_sets: Sequence[tuple[str, str]] = (),
) -> Pool:
    """Add a pool and its evaluation sets (flushed, not committed)."""
    pool = Pool(owner_id=owner_id, name=name, base_model=base_model, model_type=model_type, config=config.to_json())
    session.add(pool)
    session.flush()
    for i, (dataset_id, skill) in enumerate(eval_sets):
        add_eval_set(session, pool, dataset_id, skill, field=f"body.eval_sets[{i}].dataset_id")
    return pool


def add_eval_set(session: Session, pool: Pool, dataset_id: str, skill: str, *, field: str = "body.dataset_id") -> PoolEvalSet:
    """Attach a ready, owned dataset to the pool as the evaluation set of `skill`."""
    _usable_dataset(session, dataset_id, pool.owner_id, field)
    if session.get(PoolEvalSet, (pool.id, dataset_id)) is not None:
        raise Conflict(f"dataset {dataset_id!r} is already an evaluation set of pool {pool.id}", code="eval_set_exists")
    row = PoolEvalSet(pool_id=pool.id, dataset_id=dataset_id, skill=skill)
    session.add(row)
    session.flush()
    return row


def pool_stats(session: Session, pool_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Member counts (total and per dataset) and evaluation sets of several pools, in two queries."""
    ids = list(pool_ids)
    stats: dict[str, dict[str, Any]] = {p: {"size": 0, "pruned": 0, "datasets": {}, "eval_sets": []} for p in ids}
    if not ids:
        return stats
    rows = session.execute(
        select(PoolMember.pool_id, Sample.dataset_id, PoolMember.status, func.count())
        .join(Sample, Sample.id == PoolMember.sample_id)
        .where(PoolMember.pool_id.in_(ids))
        .group_by(PoolMember.pool_id, Sample.dataset_id, PoolMember.status)
    )
    for pool_id, dataset_id, status, n in rows:
        s = stats[pool_id]
        per = s["datasets"].setdefault(dataset_id, {"dataset_id": dataset_id, "active": 0, "pruned": 0})
        key = "size" if status == "active" else "pruned"
        s[key] += n
        per["active" if status == "active" else "pruned"] += n
    for ev in session.scalars(
        select(PoolEvalSet).where(PoolEvalSet.pool_id.in_(ids)).order_by(PoolEvalSet.skill, PoolEvalSet.dataset_id)
    ):
        stats[ev.pool_id]["eval_sets"].append({"dataset_id": ev.dataset_id, "skill": ev.skill})
    return stats


def pool_to_dict(pool: Pool, stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": pool.id,
        "object": "pool",
        "name": pool.name,
        "base_model": pool.base_model,
        "model_type": pool.model_type,
        "config": pool.config,
        "size": stats["size"],
        "pruned": stats["pruned"],
        "datasets": sorted(stats["datasets"].values(), key=lambda d: d["dataset_id"]),
        "rounds_completed": pool.rounds_completed,
        "current_checkpoint_id": pool.current_checkpoint_id,
        "eval_sets": stats["eval_sets"],
        "created_at": iso_utc(pool.created_at),
    }


def latest_clusters(session: Session, pool: Pool) -> dict[str, Any]:
    """The clusters of the pool's latest succeeded round (empty before any)."""
    rnd = session.scalar(
        select(Round).where(Round.pool_id == pool.id, Round.status == "succeeded").order_by(Round.number.desc()).limit(1)
    )
    result = (rnd.result or {}) if rnd else {}
    return {
        "object": "pool.clusters",
        "pool_id": pool.id,
        "round_id": rnd.id if rnd else None,
        "round_number": rnd.number if rnd else None,
        "method": result.get("method"),
        "clusters": result.get("clusters") or [],
    }


# ---- rounds -----------------------------------------------------------------------------------


def create_round(session: Session, pool: Pool, params: RoundParams, *, max_attempts: int = 3) -> tuple[Round, Job]:
    """Add a queued round and its parent job (flushed, not committed); the caller commits, then enqueues.

    One writer per pool: refused while another round of the pool is queued or running. The pool
    row should be locked by the caller (PostgreSQL); on SQLite the unique (pool_id, number)
    constraint stops a concurrent twin at commit.
    """
    for i, dataset_id in enumerate(params.dataset_ids):
        _usable_dataset(session, dataset_id, pool.owner_id, f"body.dataset_ids[{i}]")
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


def jobs_by_id(session: Session, job_ids: Iterable[str | None]) -> dict[str, Job]:
    ids = [j for j in job_ids if j]
    return {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}


def round_to_dict(rnd: Round, job: Job | None) -> dict[str, Any]:
    return {
        "id": rnd.id,
        "object": "round",
        "pool_id": rnd.pool_id,
        "number": rnd.number,
        "status": rnd.status,
        "params": rnd.params,
        "result": rnd.result,
        "job_id": rnd.job_id,
        "job": None
        if job is None
        else {
            "status": job.status,
            "stage": job.stage,
            "progress": progress_to_dict(job),
            "attempts": job.attempts,
            "error": job.error,
        },
        "created_at": iso_utc(rnd.created_at),
        "finished_at": iso_utc(rnd.finished_at),
    }


def selection_ready(session: Session, rnd: Round) -> bool:
    """Whether the round's selection is final: the round succeeded, or its select stage did."""
    if rnd.status == "succeeded":
        return True
    if rnd.job_id is None:
        return False
    done = session.scalar(
        select(func.count()).where(Job.parent_id == rnd.job_id, Job.kind == "round.select", Job.status == "succeeded")
    )
    return bool(done)
