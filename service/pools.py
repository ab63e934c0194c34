"""Pools: create, look up (owner-scoped), evaluation sets, member counts, latest clusters."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.statuses import DATASET_PENDING, DATASET_READY, SUCCEEDED
from service.db.locks import sqlite_write_lock
from service.db.models import Dataset, Pool, PoolEvalSet, PoolMember, Round, Sample
from service.domain_errors import Conflict, InvalidReference
from service.pool_config import PoolConfig


def get_pool(session: Session, pool_id: str, owner_id: str, *, for_update: bool = False) -> Pool | None:
    """The caller's pool; `for_update` locks its row until the transaction ends, so the checks a
    caller then makes and the writes they allow are serialised against any other such caller."""
    if for_update:
        sqlite_write_lock(session, Pool, pool_id)  # SQLite ignores the FOR UPDATE below
    pool = session.get(Pool, pool_id, with_for_update=for_update or None, populate_existing=for_update)
    return pool if pool is not None and pool.owner_id == owner_id else None


def usable_dataset(session: Session, dataset_id: str, owner_id: str, field: str) -> Dataset:
    """The owner's dataset, if ready; else InvalidReference naming `field`."""
    ds = session.get(Dataset, dataset_id)
    if ds is None or ds.owner_id != owner_id:
        raise InvalidReference(f"{field}: no dataset with id {dataset_id!r}", code="unknown_dataset", field=field)
    if ds.status != DATASET_READY:
        hint = f"wait for its ingest job {ds.job_id}" if ds.status == DATASET_PENDING else "upload it again"
        raise InvalidReference(
            f"{field}: dataset {dataset_id!r} is {ds.status}, not ready; {hint}", code="dataset_not_ready", field=field
        )
    return ds


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
    usable_dataset(session, dataset_id, pool.owner_id, field)
    if session.get(PoolEvalSet, (pool.id, dataset_id)) is not None:
        raise Conflict(f"dataset {dataset_id!r} is already an evaluation set of pool {pool.id}", code="eval_set_exists")
    row = PoolEvalSet(pool_id=pool.id, dataset_id=dataset_id, skill=skill)
    session.add(row)
    session.flush()
    return row


def pool_counts(session: Session, pool_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Member counts (total and per dataset) and evaluation sets of several pools, in two queries:
    per pool {size, pruned, datasets, eval_sets}, what `PoolOut` shows besides the row."""
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
    for s in stats.values():
        s["datasets"] = sorted(s["datasets"].values(), key=lambda d: d["dataset_id"])
    return stats


def latest_clusters(session: Session, pool: Pool) -> dict[str, Any]:
    """The clusters of the pool's latest succeeded round (empty before any)."""
    rnd = session.scalar(
        select(Round).where(Round.pool_id == pool.id, Round.status == SUCCEEDED).order_by(Round.number.desc()).limit(1)
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


