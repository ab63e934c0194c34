"""Stages warmup and train (queue train): LoRA training, the adapter saved as a tar.gz blob.

Neither inserts a checkpoints row: the blob's sha and the training stats go to the parent's
state, and finalize inserts the rows with the pool's other changes in one transaction, so a
cancelled or failed round leaves no checkpoint behind.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import select

from service.db.models import PoolEvalSet, Selection
from workers.engine.evaluation import EvalSet, evaluate
from workers.engine.training import train_lora
from workers.engine.warmup import warmup_subset
from workers.rounds.advance import Outgoing, claim_stage, enter_stage
from workers.rounds.checkpoints import store_adapter
from workers.rounds.features_stage import enter_features
from workers.rounds.models_cache import put_model, take_model
from workers.rounds.plan import load_plan
from workers.rounds.runner import StageRun
from workers.rounds.samples import load_dataset_samples, load_engine_samples


def _train(
    run: StageRun, stage: str, sample_ids: list[int], adapter_sha: str | None
) -> tuple[Any, dict[str, Any], Any, dict[str, Any] | None]:
    """Continue adapter `adapter_sha` (None: a fresh LoRA) on `sample_ids`; store it as a blob.

    Returns (model, training stats, adapter blob, base evaluation). Training from a fresh LoRA
    (B = 0: the base model itself) first scores the untouched model on the pool's evaluation
    sets: the base accuracies that forward transfer is measured against (§7); None otherwise.
    """
    with run.ctx.session_factory() as session:
        samples = load_engine_samples(session, sample_ids, run.blobs)
    run.watch.check(force=True)
    loaded = take_model(run.settings, run.blobs, run.spec, adapter_sha, run.cfg.lora)
    base = None
    if adapter_sha is None:
        run.ctx.stage("evaluate-base")
        base = evaluate_pool(run, loaded)
        run.ctx.stage(stage)
    stats = train_lora(loaded, samples, run.cfg.training, on_step=run.watch.on_step)
    blob = store_adapter(loaded, run.blobs, run.settings.work_dir)
    # the next stage in this process (features, evaluation) reuses the trained model as is
    put_model(run.spec, blob.sha256, loaded)
    return loaded, asdict(stats), blob, base


def run_warmup(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    """§2 step 0: train a fresh adapter on a seeded `warmup_fraction` of the candidates."""
    ref, seed = run.ref, int(run.ref.params.get("seed", 0))
    run.ctx.stage("warmup")
    plan = load_plan(run.blobs, ref.state["candidates_blob"])
    # the same seeded subset `train_warmup_adapter` takes; chosen on ids so only it is loaded
    chosen = [int(i) for i in warmup_subset(plan.candidates, run.cfg.warmup_fraction, seed)]
    loaded, stats, blob, base = _train(run, "warmup", chosen, None)
    run.ctx.stage("evaluate")
    updates = {
        "adapter_sha": blob.sha256,
        "base_eval": base,
        "warmup_checkpoint": {"blob": blob.sha256, "size_bytes": blob.size,
                              "metrics": {**stats, "samples": len(chosen), "fraction": run.cfg.warmup_fraction},
                              "eval_datasets": evaluate_pool(run, loaded)},
    }
    with run.ctx.session_factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "warmup")
        out = enter_features(session, parent, ref, run.settings, updates)
    return out, {"samples": len(chosen), "blob": blob.sha256, **stats}


def evaluate_pool(run: StageRun, loaded: Any) -> dict[str, dict[str, Any]]:
    """Per eval dataset: {dataset_id: {"skill", "loss", "accuracy", "n", "n_scored"}}."""
    out: dict[str, dict[str, Any]] = {}
    with run.ctx.session_factory() as session:
        sets = session.execute(
            select(PoolEvalSet.dataset_id, PoolEvalSet.skill).where(PoolEvalSet.pool_id == run.ref.pool_id)
            .order_by(PoolEvalSet.dataset_id)
        ).all()
        for dataset_id, skill in sets:
            samples = load_dataset_samples(session, dataset_id, run.blobs)
            if not samples:
                continue
            run.watch.check()
            metrics = evaluate(loaded, [EvalSet(dataset_id, skill, samples)])[skill]
            out[dataset_id] = {"skill": skill, **metrics}
    return out


def pool_by_skill(per_dataset: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per skill: loss averaged over samples, accuracy over the samples that have one."""
    skills: dict[str, dict[str, Any]] = {}
    for m in per_dataset.values():
        s = skills.setdefault(m["skill"], {"loss_sum": 0.0, "n": 0, "hits": 0.0, "n_scored": 0})
        s["loss_sum"] += m["loss"] * m["n"]
        s["n"] += m["n"]
        if m.get("accuracy") is not None:
            s["hits"] += m["accuracy"] * m["n_scored"]
            s["n_scored"] += m["n_scored"]
    return {
        skill: {"loss": s["loss_sum"] / s["n"], "accuracy": s["hits"] / s["n_scored"] if s["n_scored"] else None,
                "n": s["n"]}
        for skill, s in skills.items()
    }


def run_train(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    """§2 steps 7 and 9: continue the round's adapter on its selection, evaluate it."""
    ref = run.ref
    run.ctx.stage("train")
    with run.ctx.session_factory() as session:
        ids = [int(i) for i in session.scalars(
            select(Selection.sample_id).where(Selection.round_id == ref.round_id).order_by(Selection.sample_id)
        )]
    loaded, stats, blob, base = _train(run, "train", ids, ref.state.get("adapter_sha"))
    run.ctx.stage("evaluate")
    per_dataset = evaluate_pool(run, loaded)
    updates = {
        **({"base_eval": base} if base is not None else {}),
        "checkpoint": {"blob": blob.sha256, "size_bytes": blob.size, "metrics": {**stats, "samples": len(ids)},
                       "eval_datasets": per_dataset},
    }
    with run.ctx.session_factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "train")
        out = enter_stage(session, parent, ref, run.settings, "finalize", updates)
    return out, {"samples": len(ids), "blob": blob.sha256, **stats}
