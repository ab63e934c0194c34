"""Stage prepare (queue select): freeze the candidate set, plan the feature shards, pick the adapter.

The adapter is the pool's current checkpoint when its blob is whole (or can be re-published
from the adapter cache); a damaged one is skipped for the newest intact checkpoint, so a pool
recovers from a corrupt checkpoint without losing its rounds.

Touches no pool table: the candidate list goes to a blob whose sha the parent job records (and
round_blobs names, for the garbage collector), and the shard plan to feature_shards rows, all
committed with the move to the next stage.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from service.db.models import Checkpoint, FeatureShard, Pool, Round
from service.integrity import BlobDamaged, ensure_checkpoint_blob
from service.round_blobs import record_round_blobs
from workers.rounds.advance import Outgoing, claim_stage, enter_stage, next_stage
from workers.rounds.features_stage import enter_features
from workers.rounds.plan import plan_candidates, shard_rows
from workers.rounds.plan_blob import freeze_plan
from workers.rounds.runner import StageRun


class EmptyRound(Exception):
    """The round has nothing to work on."""

    code = "empty_round"


class CheckpointUnusable(Exception):
    """Every checkpoint the round could continue from is damaged, with no copy to restore it."""

    code = "checkpoint_corrupt"


def adapter_candidates(session: Session, pool_id: str) -> list[tuple[str, str]]:
    """(checkpoint id, blob sha) of the adapters a round may compute features with, best first.

    The pool's current checkpoint; then the checkpoints of its succeeded rounds, newest round
    first and its trained adapter before its warm-up (a pool whose rounds never trained has
    only warm-ups). Empty for a pool with none: the round warms one up.
    """
    out: list[tuple[str, str]] = []
    pool = session.get(Pool, pool_id)
    if pool.current_checkpoint_id is not None:
        ckpt = session.get(Checkpoint, pool.current_checkpoint_id)
        if ckpt is not None:
            out.append((ckpt.id, ckpt.blob))
    rows = session.execute(
        select(Checkpoint.id, Checkpoint.blob)
        .join(Round, Round.id == Checkpoint.round_id)
        .where(Checkpoint.pool_id == pool_id, Round.status == "succeeded")
        .order_by(Round.number.desc(), (Checkpoint.kind == "round").desc(), Checkpoint.created_at.desc())
    ).all()
    out += [(r.id, r.blob) for r in rows if r.id not in {c for c, _ in out}]
    return out


def _warn(run: StageRun, message: str, **data: Any) -> None:
    """A warning on the stage's job and on the round's, the one users watch."""
    run.ctx.event(message, level="warning", **data)
    run.watch.event(message, level="warning", **data)


def intact_adapter(run: StageRun, candidates: list[tuple[str, str]]) -> tuple[str | None, str | None, list[str]]:
    """(checkpoint id, blob sha, damaged checkpoint ids) of the first candidate whose blob is whole
    or could be re-published from the adapter cache; (None, None, []) when there are none.

    A damaged current checkpoint is skipped for the newest intact one (the event log says so);
    CheckpointUnusable when every candidate is damaged.
    """
    damaged: list[str] = []
    for checkpoint_id, sha in candidates:
        try:
            whole = ensure_checkpoint_blob(run.blobs, run.settings.work_dir, sha)
        except BlobDamaged as exc:
            damaged.append(checkpoint_id)
            _warn(run, f"checkpoint {checkpoint_id}: {exc}, and no adapter cache holds a copy",
                  checkpoint_id=checkpoint_id, blob=sha)
            continue
        if not whole:
            _warn(run, f"checkpoint {checkpoint_id}: its damaged blob was re-published from the adapter cache",
                  checkpoint_id=checkpoint_id, blob=sha)
        if damaged:
            _warn(run, f"this round continues from checkpoint {checkpoint_id}, the newest intact one",
                  checkpoint_id=checkpoint_id, damaged=damaged)
        return checkpoint_id, sha, damaged
    if damaged:
        raise CheckpointUnusable(
            f"pool {run.ref.pool_id}: the blobs of all its checkpoints ({', '.join(damaged)}) are missing or corrupt "
            f"and no adapter cache holds a copy, so no round can continue from them; create a new pool "
            f"from the same datasets to start over")
    return None, None, []


def run_prepare(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    ref, factory = run.ref, run.ctx.session_factory
    run.ctx.stage("prepare")
    with factory() as session:
        new_only = ref.params.get("candidates", "pool") == "new"  # rounds stored before the field: "pool"
        plan = plan_candidates(session, ref.pool_id, list(ref.params["dataset_ids"]), new_only)
        candidates = adapter_candidates(session, ref.pool_id)
    checkpoint_id, adapter_sha, damaged = intact_adapter(run, candidates)
    if not plan.candidates:
        why = "the datasets add no new sample" if new_only else "the pool is empty and the datasets add nothing new"
        raise EmptyRound(f"round {ref.number}: no candidates ({why})")
    sha = freeze_plan(plan, run.blobs, run.cfg.shard_size)
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
    if damaged:
        updates["damaged_checkpoints"] = damaged
    with factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "prepare")
        session.execute(insert(FeatureShard), shards)
        record_round_blobs(session, ref.round_id, candidates=sha)
        stage = next_stage("prepare", updates, ref.params)
        if stage == "features":
            out = enter_features(session, parent, ref, run.settings, updates)
        else:
            out = enter_stage(session, parent, ref, run.settings, stage, updates)
    run.ctx.event("candidates frozen", **{k: updates[k] for k in ("candidates", "new_samples", "duplicates", "shards")})
    return out, {k: v for k, v in updates.items() if k != "adapter_sha"}
