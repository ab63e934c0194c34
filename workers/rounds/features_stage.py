"""Stage features (queue gpu): one child job per shard, fanned out over the GPU workers.

A shard job computes features and scores of its slice of the frozen candidate list with the
round's adapter, writes the shard blob (atomic, content-addressed), then in ONE transaction
marks its feature_shards row done and inserts its Score rows: a row already done means an
earlier delivery finished it, so every candidate is scored exactly once. The commit that leaves
no shard pending moves the round to select.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from core.progress import eta_seconds, parse_iso
from core.text import json_safe
from service.config import Settings
from service.db.models import FeatureShard, Job, Score, utcnow
from workers.engine.features import SCORE_NAMES, FeatureBatch, compute_features, write_shard
from core.statuses import ACTIVE
from workers.rounds.advance import Outgoing, RoundRef, StageDone, claim_stage, enter_stage, kind_of
from workers.rounds.models_cache import get_model
from workers.rounds.plan_blob import load_shard_ids
from workers.rounds.runner import StageRun
from workers.rounds.samples import load_engine_samples


class ShardMismatch(Exception):
    """A shard's features do not belong to the samples it was planned for."""

    code = "shard_mismatch"


def enter_features(session: Session, parent: Job, ref: RoundRef, settings: Settings, updates: dict[str, Any]) -> list[Outgoing]:
    """Move the round to features with one job per pending shard (progress: shards done; the
    samples done and per second in its metrics)."""
    shards = session.scalars(
        select(FeatureShard.shard).where(FeatureShard.round_id == ref.round_id, FeatureShard.status == "pending")
        .order_by(FeatureShard.shard)
    ).all()
    samples = int(updates.get("candidates", (parent.result or {}).get("candidates", 0)))
    return enter_stage(session, parent, ref, settings, "features", updates,
                       children=[{"shard": int(k)} for k in shards], total=len(shards), unit="shards",
                       metrics={"samples_done": 0, "samples_total": samples, "samples_per_second": None})


def features_progress(session: Session, ref: RoundRef, parent_id: str, own: tuple[int, int], now: datetime) -> dict[str, Any]:
    """The round's progress in features, as job column values: shards done of all, and in its
    metrics the samples done (done shards, plus what running shard jobs report; this job's own
    `own` = (shard, samples done) as it knows it) and samples per second since the stage started.

    Rates count from the stage's start, so they include the first model load: an estimate that
    errs on the slow side early in the stage.
    """
    shards_done, shards_total, rows_done = session.execute(
        select(func.count().filter(FeatureShard.status == "done"), func.count(),
               func.coalesce(func.sum(FeatureShard.rows).filter(FeatureShard.status == "done"), 0))
        .where(FeatureShard.round_id == ref.round_id)
    ).one()
    running = {int(params.get("shard", -1)): int(done) for params, done in session.execute(
        select(Job.params, Job.progress_done).where(Job.parent_id == parent_id, Job.kind == kind_of("features"),
                                                    Job.status.in_(ACTIVE)))}
    running[own[0]] = own[1]
    finished = set(session.scalars(select(FeatureShard.shard).where(
        FeatureShard.round_id == ref.round_id, FeatureShard.status == "done", FeatureShard.shard.in_(list(running)))))
    samples = int(rows_done) + sum(d for k, d in running.items() if k not in finished)
    stages = session.scalar(select(Job.stages).where(Job.id == parent_id)) or []
    started = next((parse_iso(s.get("started_at")) for s in stages if s["name"] == "features"), None)
    elapsed = (now - started).total_seconds() if started else 0.0
    total = int(ref.state.get("candidates") or 0)
    samples_rate = samples / elapsed if elapsed > 0 and samples else None
    return {
        "progress_done": int(shards_done), "progress_total": int(shards_total), "progress_unit": "shards",
        "progress_rate": round(shards_done / elapsed, 4) if elapsed > 0 and shards_done else None,
        "progress_eta": None if samples_rate is None else round(eta_seconds(samples, total, samples_rate), 1),
        "progress_fraction": min(1.0, samples / total) if total else None,
        "metrics": {"samples_done": samples, "samples_total": total,
                    "samples_per_second": None if samples_rate is None else round(samples_rate, 3)},
    }


def score_rows(round_id: str, batch: FeatureBatch) -> list[dict[str, Any]]:
    """Score rows of a shard; NaN/inf (ig of text-only samples, overflowed ppl) become NULL."""
    cols = {k: batch.scores[k].astype(np.float64).tolist() for k in SCORE_NAMES}
    return [
        {"round_id": round_id, "sample_id": int(sid), **{k: json_safe(cols[k][i]) for k in SCORE_NAMES}}
        for i, sid in enumerate(batch.ids.tolist())
    ]


def run_shard(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    ctx, ref, factory, k = run.ctx, run.ref, run.ctx.session_factory, int(run.ctx.params["shard"])
    with factory() as session:
        shard = session.get(FeatureShard, (ref.round_id, k))
        if shard is None:
            raise LookupError(f"round {ref.round_id} has no feature shard {k}")
        if shard.status == "done":
            raise StageDone(f"shard {k} is already done")
        planned = (shard.first_sample_id, shard.last_sample_id)
    run.watch.check(force=True)
    # only this shard's slice of the frozen plan (checked against its digest), not the whole plan
    ids = load_shard_ids(run.blobs, ref.state["candidates_blob"], k, run.cfg.shard_size)
    if None not in planned and (ids[0], ids[-1]) != planned:
        raise ShardMismatch(f"shard {k}: the frozen plan holds samples {ids[0]}..{ids[-1]}, the round planned "
                            f"{planned[0]}..{planned[1]}")
    ctx.stage("features", total=len(ids), unit="samples")
    with factory() as session:
        samples = load_engine_samples(session, ids, run.blobs)
    loaded = get_model(run.settings, run.blobs, run.spec, ref.state.get("adapter_sha"), run.cfg.lora)

    def on_batch(done: int, total: int) -> None:
        # Inside the shard: progress, and a cancel (the round's or this job's) is honoured within
        # about a second of the next batch ending rather than at the end of the shard.
        ctx.progress(done, total)
        if run.watch.due():
            with factory() as session:
                values = features_progress(session, ref, ref.parent_id, (k, done), utcnow())
            run.watch.write_parent(values)
        run.watch.check()

    batch = compute_features(loaded, samples, run.cfg.features, on_batch=on_batch)
    if batch.ids.tolist() != ids:
        raise ShardMismatch(f"shard {k}: features came back for other samples than planned")
    run.watch.check(force=True)
    meta = {"config": run.cfg.features.fingerprint(), "round_id": ref.round_id, "shard": k,
            "adapter_sha": ref.state.get("adapter_sha")}
    # A name per lease owner: a duplicate delivery on another worker never writes the same file.
    path = run.settings.work_dir / "shards" / f"{ref.round_id}-{k:05d}-{ctx.owner.replace(':', '-')}.npz"
    digest = write_shard(path, batch, meta=meta)
    blob = run.blobs.put_file(path, move=True)
    if blob.sha256 != digest:
        raise ShardMismatch(f"shard {k}: blob sha {blob.sha256} differs from the written {digest}")
    rows = score_rows(ref.round_id, batch)
    with factory() as session, session.begin():
        parent = claim_stage(session, ctx, ref.parent_id, "features")
        marked = session.execute(
            update(FeatureShard)
            .where(FeatureShard.round_id == ref.round_id, FeatureShard.shard == k, FeatureShard.status == "pending")
            .values(status="done", blob=blob.sha256, rows=len(ids), finished_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if marked != 1:
            raise StageDone(f"shard {k} was finished by another delivery")
        session.execute(insert(Score), rows)
        pending = session.scalar(select(func.count()).where(FeatureShard.round_id == ref.round_id,
                                                             FeatureShard.status == "pending"))
        for name, value in features_progress(session, ref, ref.parent_id, (k, len(ids)), utcnow()).items():
            setattr(parent, name, value)
        out = enter_stage(session, parent, ref, run.settings, "select", {}) if pending == 0 else []
    return out, {"shard": k, "rows": len(ids), "blob": blob.sha256, "last": pending == 0}
