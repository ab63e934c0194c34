"""Checkpoints: look one up (owned through its pool), list a page with what the API shows."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from service.db.models import Checkpoint, Pool


def with_round_and_evals(stmt):  # noqa: ANN001, ANN201 - a Select of Checkpoint
    """Load each checkpoint's round and evaluation results with it (two queries for a page)."""
    return stmt.options(selectinload(Checkpoint.round), selectinload(Checkpoint.evals))


def get_checkpoint(session: Session, checkpoint_id: str, owner_id: str) -> Checkpoint | None:
    stmt = (
        with_round_and_evals(select(Checkpoint))
        .join(Pool, Pool.id == Checkpoint.pool_id)
        .where(Checkpoint.id == checkpoint_id, Pool.owner_id == owner_id)
    )
    return session.scalar(stmt)


