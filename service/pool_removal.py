"""Taking things out of a pool: one dataset (training data or evaluation set), or the whole pool.

No web framework here; the API maps `DomainError`s to problems as for pools and rounds.

Removing a dataset from a pool takes every trace of it out of the pool, in one transaction, so
that afterwards nothing of the pool refers to its samples and the dataset itself can be deleted:
- its samples' memberships, active and pruned (later rounds never select or train on them; a
  round that names the dataset again adds them as new samples, earlier pruning forgotten);
- the rows of the pool's earlier rounds about them: selections (the selection downloads of those
  rounds no longer list them) and scores;
- its evaluation-set link and the evaluation results of the pool's checkpoints on it.
What stays: the checkpoints trained on it (weights cannot un-learn; delete the pool to drop them),
the rounds' `params` and `result` summaries (what was submitted and counted then), and the
feature-shard, round and index-version blobs of earlier rounds, until the pool is deleted.

Both are refused (409) while a round of the pool is queued, running or cancelling: that round
froze the pool's members as its candidates and its last stage writes members and evaluations;
and while a stage job of an ended round still runs (a failed shard ends its round before its
sibling shards stop), since deleting its row would orphan what it still writes.
"""
from __future__ import annotations

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from core.statuses import UNFINISHED
from service.db.models import (
    Checkpoint, Dataset, EvalResult, Job, Pool, PoolEvalSet, PoolMember, Round, Sample, Score, Selection,
)
from service.domain_errors import Conflict, DomainError


class NotInPool(DomainError):
    """The pool holds no trace of the dataset (or the dataset is not the caller's): a 404."""


def refuse_while_round_active(session: Session, pool: Pool, action: str) -> None:
    """Conflict when a round of the pool is queued, running or cancelling."""
    active = session.execute(
        select(Round.id, Round.number, Round.status, Round.job_id)
        .where(Round.pool_id == pool.id, Round.status.in_(UNFINISHED)).limit(1)
    ).first()
    if active is not None:
        raise Conflict(
            f"cannot {action} while round {active.id} (number {active.number}) of pool {pool.id} is "
            f"{active.status}; wait for it or cancel its job {active.job_id} (POST /v1/jobs/{active.job_id}/cancel)",
            code="round_in_progress",
        )
    # A failed round ends before its other stage jobs do (a failed shard only asks its running
    # siblings to stop): their rows, and the blobs they still write, must outlive them.
    stage = session.execute(
        select(Job.id, Job.status, Job.parent_id)
        .where(Job.parent_id.in_(select(Round.job_id).where(Round.pool_id == pool.id)), Job.status.in_(UNFINISHED))
        .limit(1)
    ).first()
    if stage is not None:
        raise Conflict(
            f"cannot {action} while job {stage.id}, a stage of round job {stage.parent_id} of pool {pool.id}, "
            f"is still {stage.status}; it stops when its worker next checks (seconds), or when its lease "
            f"expires if its worker died; try again then",
            code="round_in_progress",
        )


def _samples_of(dataset_id: str):  # noqa: ANN202 - a scalar subquery
    return select(Sample.id).where(Sample.dataset_id == dataset_id).scalar_subquery()


def _pool_rounds(pool_id: str):  # noqa: ANN202
    return select(Round.id).where(Round.pool_id == pool_id).scalar_subquery()


def _pool_checkpoints(pool_id: str):  # noqa: ANN202
    return select(Checkpoint.id).where(Checkpoint.pool_id == pool_id).scalar_subquery()


def _statements(pool_id: str, dataset_id: str, *, training: bool, evaluation: bool) -> list:
    """The DELETE statements of a removal, by what it removes."""
    out = []
    if training:
        samples, rounds = _samples_of(dataset_id), _pool_rounds(pool_id)
        out += [
            delete(PoolMember).where(PoolMember.pool_id == pool_id, PoolMember.sample_id.in_(samples)),
            delete(Selection).where(Selection.round_id.in_(rounds), Selection.sample_id.in_(samples)),
            delete(Score).where(Score.round_id.in_(rounds), Score.sample_id.in_(samples)),
        ]
    if evaluation:
        out += [
            delete(PoolEvalSet).where(PoolEvalSet.pool_id == pool_id, PoolEvalSet.dataset_id == dataset_id),
            delete(EvalResult).where(EvalResult.checkpoint_id.in_(_pool_checkpoints(pool_id)),
                                     EvalResult.dataset_id == dataset_id),
        ]
    return out


def _uses(session: Session, pool_id: str, dataset_id: str, *, training: bool, evaluation: bool) -> bool:
    """Whether any row a removal would delete exists."""
    samples, rounds = _samples_of(dataset_id), _pool_rounds(pool_id)
    checks = []
    if training:
        checks += [
            exists().where(PoolMember.pool_id == pool_id, PoolMember.sample_id.in_(samples)),
            exists().where(Selection.round_id.in_(rounds), Selection.sample_id.in_(samples)),
            exists().where(Score.round_id.in_(rounds), Score.sample_id.in_(samples)),
        ]
    if evaluation:
        checks += [
            exists().where(PoolEvalSet.pool_id == pool_id, PoolEvalSet.dataset_id == dataset_id),
            exists().where(EvalResult.checkpoint_id.in_(_pool_checkpoints(pool_id)), EvalResult.dataset_id == dataset_id),
        ]
    return any(session.scalar(select(check)) for check in checks)


def remove_dataset(session: Session, pool: Pool, dataset_id: str, *, evaluation_only: bool = False) -> None:
    """Take a dataset out of the pool (see the module docstring); flushed, not committed.

    `evaluation_only` removes only its evaluation-set link and results (DELETE .../eval-sets/{id}).
    Raises NotInPool when there is nothing to remove, Conflict while a round is unfinished.
    """
    owned = session.scalar(select(Dataset.id).where(Dataset.id == dataset_id, Dataset.owner_id == pool.owner_id))
    what = "an evaluation set" if evaluation_only else "in"
    if owned is None or not _uses(session, pool.id, dataset_id, training=not evaluation_only, evaluation=True):
        raise NotInPool(f"dataset {dataset_id!r} is not {what} pool {pool.id}", code="not_in_pool")
    refuse_while_round_active(session, pool, f"remove dataset {dataset_id} from the pool")
    for statement in _statements(pool.id, dataset_id, training=not evaluation_only, evaluation=True):
        session.execute(statement.execution_options(synchronize_session=False))
    session.flush()


def delete_pool(session: Session, pool: Pool) -> None:
    """Delete the pool and everything that is only its; flushed, not committed.

    Its round jobs (and their stage jobs and events, by the jobs' cascade) go too. The pool's rows
    (rounds, round_blobs, selections, scores, feature shards, index versions, checkpoints and
    their evaluations, members, evaluation-set links) go by the schema's ON DELETE CASCADE from
    pools and rounds, and with them every typed reference to the pool's blobs: `adaptinf gc` may
    then reclaim those no other pool shares.
    """
    refuse_while_round_active(session, pool, f"delete pool {pool.id}")
    job_ids = [j for j in session.scalars(select(Round.job_id).where(Round.pool_id == pool.id)) if j]
    if job_ids:
        session.execute(delete(Job).where(Job.id.in_(job_ids)).execution_options(synchronize_session=False))
    session.execute(delete(Pool).where(Pool.id == pool.id).execution_options(synchronize_session=False))
    session.expunge(pool)
    session.flush()


def pools_using(session: Session, dataset_id: str) -> list[str]:
    """Ids of the pools holding a trace of the dataset that `remove_dataset` would delete, sorted."""
    samples = _samples_of(dataset_id)
    queries = [
        select(PoolMember.pool_id).where(PoolMember.sample_id.in_(samples)),
        select(PoolEvalSet.pool_id).where(PoolEvalSet.dataset_id == dataset_id),
        select(Checkpoint.pool_id).join(EvalResult, EvalResult.checkpoint_id == Checkpoint.id)
        .where(EvalResult.dataset_id == dataset_id),
        select(Round.pool_id).join(Selection, Selection.round_id == Round.id).where(Selection.sample_id.in_(samples)),
        select(Round.pool_id).join(Score, Score.round_id == Round.id).where(Score.sample_id.in_(samples)),
    ]
    return sorted({p for q in queries for p in session.scalars(q.distinct())})
