"""Stage finalize (queue select): the only stage that changes the pool, in ONE transaction.

Inserts the round's checkpoints (warm-up and trained) with their eval results and the index
version when the select stage stored one (`pool_index`; a blob, named by index_versions.blob), adds the new samples as members (joined_round, cluster), marks pruned members with
round and reason, points the pool at the new checkpoint, counts the round, and ends the round
and its parent job succeeded. Cancelled or failed rounds never get here, so they leave the pool
exactly as it was.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.checkpoint_metrics import checkpoint_metrics
from core.skill_scores import pool_by_skill
from core.statuses import SUCCEEDED
from core.text import json_safe
from service.db.bulk import bulk_insert
from service.db.models import Checkpoint, EvalResult, IndexVersion, Pool, PoolMember, Round
from service.lifecycle import finish_round_job
from workers.rounds.advance import Outgoing, RoundRef, claim_stage
from workers.rounds.plan import CandidatePlan
from workers.rounds.plan_blob import load_plan
from workers.rounds.runner import StageRun
from workers.rounds.select_stage import ShardBlobError


class PoolChanged(Exception):
    """The pool's members changed since the round froze its candidates."""

    code = "pool_changed"


def load_decision(run: StageRun) -> dict[str, Any]:
    sha = run.ref.state["decision_blob"]
    if not run.blobs.verify(sha):
        raise ShardBlobError(f"selection decision blob {sha} is missing or corrupt")
    with run.blobs.open(sha) as f:
        return json.loads(f.read())


def _add_checkpoint(session: Session, ref: RoundRef, kind: str, record: dict[str, Any]) -> str:
    """A checkpoint row recorded by warmup/train, with its evaluation results; returns its id."""
    evals = record.get("eval_datasets") or {}
    metrics = checkpoint_metrics(record["metrics"], ((m["skill"], m) for m in evals.values()))
    ckpt = Checkpoint(pool_id=ref.pool_id, round_id=ref.round_id, kind=kind, blob=record["blob"],
                      size_bytes=record["size_bytes"], metrics=json_safe(metrics))
    session.add(ckpt)
    session.flush()
    for dataset_id, m in evals.items():
        metrics = json_safe({"loss": m["loss"], "accuracy": m["accuracy"], "n": m["n"], "n_scored": m.get("n_scored")})
        session.add(EvalResult(checkpoint_id=ckpt.id, dataset_id=dataset_id, skill=m["skill"], metrics=metrics))
    return ckpt.id


def _update_members(session: Session, ref: RoundRef, plan: CandidatePlan, decision: dict[str, Any]) -> None:
    active = set(session.scalars(
        select(PoolMember.sample_id).where(PoolMember.pool_id == ref.pool_id, PoolMember.status == "active")
    ))
    if active != set(plan.members):
        raise PoolChanged(f"pool {ref.pool_id} has {len(active)} active members, the round planned with {len(plan.members)}")
    cluster = dict(zip(plan.candidates, decision["assign"]))
    pruned = {p["sample_id"]: p for p in decision["pruned"]}
    if plan.new:
        bulk_insert(session, PoolMember, [
            {"pool_id": ref.pool_id, "sample_id": sid, "joined_round": ref.number, "cluster": int(cluster[sid]),
             "status": "pruned" if sid in pruned else "active",
             "pruned_round": ref.number if sid in pruned else None,
             "reason": pruned[sid]["reason"] if sid in pruned else None}
            for sid in plan.new
        ])
    # ORM bulk UPDATE by primary key (executemany): the latest cluster of every kept member that
    # was a candidate (a `candidates: "new"` round clusters only the new samples; the others keep theirs)
    kept = [{"pool_id": ref.pool_id, "sample_id": sid, "cluster": int(cluster[sid])}
            for sid in plan.members if sid not in pruned and sid in cluster]
    if kept:
        session.execute(update(PoolMember), kept)
    gone = [{"pool_id": ref.pool_id, "sample_id": sid, "cluster": int(cluster[sid]), "status": "pruned",
             "pruned_round": ref.number, "reason": pruned[sid]["reason"]}
            for sid in plan.members if sid in pruned]
    if gone:
        session.execute(update(PoolMember), gone)


def round_result(ref: RoundRef, params: dict[str, Any], pool_size: int, checkpoint_id: str | None) -> dict[str, Any]:
    """rounds.result (contract §3)."""
    s = ref.state
    train = (s.get("checkpoint") or {}).get("metrics")
    return json_safe({
        "candidates": s["candidates"], "new_samples": s["new_samples"], "duplicates": s["duplicates"],
        "previously_pruned": s.get("previously_pruned", 0),
        "budget": s["budget"], "method": params.get("method", "adapt-inf"), "warmup": bool(s.get("warmup")),
        "clusters": s["clusters"], "selected": s["selected"], "pruned": s["pruned"], "pool_size": pool_size,
        "train": {k: train[k] for k in ("steps", "loss_first", "loss_last", "mean_loss")} if train else None,
        "checkpoint_id": checkpoint_id,
        # the checkpoint training continued from, and those skipped as damaged (none: an empty list)
        "continued_from_checkpoint_id": s.get("adapter_checkpoint_id"),
        "damaged_checkpoints": s.get("damaged_checkpoints") or [],
        "eval": pool_by_skill((m["skill"], m) for m in ((s.get("checkpoint") or {}).get("eval_datasets") or {}).values()),
        # the base model's scores on the evaluation sets no earlier round scored it on (§7)
        "base_eval_datasets": s.get("base_eval_datasets") or {},
    })


def run_finalize(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    ref = run.ref
    run.ctx.stage("finalize")
    plan = load_plan(run.blobs, ref.state["candidates_blob"])
    decision = load_decision(run)
    if len(decision["assign"]) != len(plan.candidates):
        raise ShardBlobError("the selection decision does not cover the frozen candidates")
    with run.ctx.session_factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "finalize")
        # re-read the parent's state under its lock: it is the one every earlier stage committed
        ref = replace(ref, state=dict(parent.result or {}))
        session.execute(update(Pool).where(Pool.id == ref.pool_id).values(rounds_completed=Pool.rounds_completed + 1)
                        .execution_options(synchronize_session=False))  # also locks the pool row
        pool = session.get(Pool, ref.pool_id, populate_existing=True)
        if ref.state.get("warmup_checkpoint"):
            _add_checkpoint(session, ref, "warmup", ref.state["warmup_checkpoint"])
        trained = ref.state.get("checkpoint")
        checkpoint_id = _add_checkpoint(session, ref, "round", trained) if trained else None
        index = ref.state.get("index")
        if index:
            session.add(IndexVersion(pool_id=ref.pool_id, round_id=ref.round_id, blob=index["blob"],
                                     sha256=index["sha256"], size_bytes=index["size_bytes"], ntotal=index["ntotal"],
                                     kind=index["kind"], dim=index.get("dim")))
        _update_members(session, ref, plan, decision)
        if checkpoint_id is not None:
            pool.current_checkpoint_id = checkpoint_id
        session.flush()
        pool_size = session.scalar(select(func.count()).select_from(PoolMember)
                                   .where(PoolMember.pool_id == ref.pool_id, PoolMember.status == "active"))
        result = round_result(ref, ref.params, int(pool_size), checkpoint_id)
        parent.progress_done, parent.progress_total = 1, 1
        finish_round_job(session, parent, SUCCEEDED, result={**result, "candidates_blob": ref.state["candidates_blob"]})
        session.get(Round, ref.round_id).result = result
    return [], {"pool_size": result["pool_size"], "checkpoint_id": checkpoint_id}
