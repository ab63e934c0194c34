"""Datasets after upload: declare a skill, delete (refused while a pool, a round or its ingest uses it).

No web framework here: the API maps the `Conflict`s to 409 problems (`DatasetInUse` adds `pool_ids`).
"""
from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.statuses import DATASET_READY, TERMINAL, UNFINISHED
from service.db.models import Dataset, Job, Pool, Round, Sample, utcnow
from service.domain_errors import Conflict
from service.pool_removal import pools_using


class DatasetInUse(Conflict):
    """A pool holds a trace of the dataset, or an unfinished round names it."""

    def __init__(self, detail: str, pool_ids: list[str]) -> None:
        super().__init__(detail, code="in_use")
        self.pool_ids = pool_ids


def set_skill(session: Session, dataset: Dataset, skill: str | None) -> None:
    """Declare (or clear, None) a ready dataset's skill: samples whose record names none take it."""
    if dataset.status != DATASET_READY:
        raise Conflict(f"dataset {dataset.id} is {dataset.status}; its skill can be set once it is ready",
                       code="dataset_not_ready")
    # a record's own `skill` wins: only samples whose record has none (or null) follow the dataset
    session.execute(
        update(Sample).where(Sample.dataset_id == dataset.id, Sample.record["skill"].as_string().is_(None))
        .values(skill=skill).execution_options(synchronize_session=False)
    )
    counts = session.execute(
        select(Sample.skill, func.count()).where(Sample.dataset_id == dataset.id, Sample.skill.is_not(None))
        .group_by(Sample.skill)
    ).all()
    dataset.skill, dataset.skill_counts = skill, {k: int(n) for k, n in sorted(counts)}
    dataset.updated_at = utcnow()


def _unfinished_round_naming(session: Session, owner_id: str, dataset_id: str) -> Round | None:
    """A queued or running round that will read this dataset (its ids live in the round's JSON params)."""
    rounds = session.scalars(
        select(Round)
        .join(Pool, Pool.id == Round.pool_id)
        .where(Pool.owner_id == owner_id, Round.status.in_(UNFINISHED))
    )
    return next((r for r in rounds if dataset_id in (r.params or {}).get("dataset_ids", ())), None)


def delete_dataset(session: Session, dataset: Dataset) -> None:
    """Delete the dataset and its samples (not committed); blobs are content-addressed and may be
    shared with other datasets, so they are left to `adaptinf gc`."""
    dataset_id = dataset.id
    if pool_ids := pools_using(session, dataset_id):
        routes = ", ".join(f"DELETE /v1/pools/{p}/datasets/{dataset_id}" for p in pool_ids)
        raise DatasetInUse(f"dataset {dataset_id} is used by pool{'s' if len(pool_ids) > 1 else ''} "
                           f"{', '.join(pool_ids)}; remove it from each first: {routes}", pool_ids)
    if (rnd := _unfinished_round_naming(session, dataset.owner_id, dataset_id)) is not None:
        raise DatasetInUse(f"dataset {dataset_id} is named by round {rnd.id} of pool {rnd.pool_id}, which is "
                           f"{rnd.status}; wait for it or cancel its job {rnd.job_id}, then remove the dataset from "
                           f"the pool if it still uses it (DELETE /v1/pools/{rnd.pool_id}/datasets/{dataset_id})",
                           [rnd.pool_id])
    job = session.get(Job, dataset.job_id) if dataset.job_id else None
    if job is not None and job.status not in TERMINAL:
        raise Conflict(f"dataset {dataset_id} is being ingested by job {job.id} ({job.status}); cancel it or wait",
                       code="ingest_in_progress")
    session.execute(delete(Sample).where(Sample.dataset_id == dataset_id))
    session.delete(dataset)
