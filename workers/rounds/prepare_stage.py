"""Stage prepare (queue select): freeze the candidate set, plan the feature shards.

Touches no pool table: the candidate list goes to a blob whose sha the parent job records, and
the shard plan to feature_shards rows, committed with the move to the next stage.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from service.db.models import Checkpoint, FeatureShard, Pool, Round
from workers.rounds.advance import Outgoing, claim_stage, enter_stage, next_stage
from workers.rounds.features_stage import enter_features
from workers.rounds.plan import freeze_plan, plan_candidates, shard_rows
from workers.rounds.runner import StageRun


class EmptyRound(Exception):
    """The round has nothing to work on."""

    code = "empty_round"


def current_adapter(session: Session, pool_id: str) -> tuple[str | None, str | None]:
    """(checkpoint id, blob sha) of the adapter features are computed with, or (None, None).

    The pool's current checkpoint; else the warm-up adapter of its latest succeeded round (a
    pool whose rounds never trained); else nothing yet and this round warms one up.
    """
    pool = session.get(Pool, pool_id)
    if pool.current_checkpoint_id is not None:
        ckpt = session.get(Checkpoint, pool.current_checkpoint_id)
        if ckpt is not None:
            return ckpt.id, ckpt.blob
    row = session.execute(
        select(Checkpoint.id, Checkpoint.blob)
        .join(Round, Round.id == Checkpoint.round_id)
        .where(Checkpoint.pool_id == pool_id, Checkpoint.kind == "warmup", Round.status == "succeeded")
        .order_by(Round.number.desc())
        .limit(1)
    ).first()
    return (row.id, row.blob) if row else (None, None)


def run_prepare(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    ref, factory = run.ref, run.ctx.session_factory
    run.ctx.stage("prepare")
    with factory() as session:
        new_only = ref.params.get("candidates", "pool") == "new"  # rounds stored before the field: "pool"
        plan = plan_candidates(session, ref.pool_id, list(ref.params["dataset_ids"]), new_only)
        checkpoint_id, adapter_sha = current_adapter(session, ref.pool_id)
    if not plan.candidates:
        why = "the datasets add no new sample" if new_only else "the pool is empty and the datasets add nothing new"
        raise EmptyRound(f"round {ref.number}: no candidates ({why})")
    sha = freeze_plan(plan, run.blobs)
    shards = shard_rows(ref.round_id, plan, run.cfg.shard_size)
    updates = {
        "candidates_blob": sha,
        "candidates": len(plan.candidates),
        "pool_members": len(plan.members),
        "new_samples": len(plan.new),
        "duplicates": len(plan.duplicates),
        "previously_pruned": len(plan.previously_pruned),
        "shards": len(shards),
        "adapter_checkpoint_id": checkpoint_id,
        "adapter_sha": adapter_sha,
        "warmup": adapter_sha is None,
    }
    with factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "prepare")
        session.execute(insert(FeatureShard), shards)
        stage = next_stage("prepare", updates, ref.params)
        if stage == "features":
            out = enter_features(session, parent, ref, run.settings, updates)
        else:
            out = enter_stage(session, parent, ref, run.settings, stage, updates)
    run.ctx.event("candidates frozen", **{k: updates[k] for k in ("candidates", "new_samples", "duplicates", "shards")})
    return out, {k: v for k, v in updates.items() if k != "adapter_sha"}
