"""Stages warmup and train (queue train): LoRA training, the adapter saved as a tar.gz blob.

Neither inserts a checkpoints row: the blob's sha and the training stats go to the parent's
state (and round_blobs names the blob, for the garbage collector), and finalize inserts the rows
with the pool's other changes in one transaction, so a cancelled or failed round leaves no
checkpoint behind.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy import select

from core.skill_scores import pool_by_skill
from core.text import json_safe
from service.db.models import PoolEvalSet, Round, Selection
from service.round_blobs import record_round_blobs
from workers.engine.evaluation import EvalSet, evaluate
from workers.engine.training import train_lora
from workers.engine.warmup import warmup_subset
from workers.rounds.advance import Outgoing, claim_stage, enter_stage
from workers.rounds.checkpoints import store_adapter
from workers.rounds.features_stage import enter_features
from workers.rounds.models_cache import put_model, take_model
from workers.rounds.plan_blob import load_plan
from workers.rounds.runner import StageRun
from workers.rounds.samples import load_dataset_samples, load_engine_samples

OnSet = Callable[[int, int], None]


def _train(run: StageRun, sample_ids: list[int], adapter_sha: str | None) -> tuple[Any, dict[str, Any], Any]:
    """Continue adapter `adapter_sha` (None: a fresh LoRA) on `sample_ids`; store it as a blob."""
    with run.ctx.session_factory() as session:
        samples = load_engine_samples(session, sample_ids, run.blobs)
    run.watch.check(force=True)
    loaded = take_model(run.settings, run.blobs, run.spec, adapter_sha, run.cfg.lora)
    stats = train_lora(loaded, samples, run.cfg.training, on_step=run.watch.on_step)
    blob = store_adapter(loaded, run.blobs, run.settings.work_dir)
    # the next stage in this process (features, evaluation) reuses the trained model as is
    put_model(run.spec, blob.sha256, loaded)
    return loaded, asdict(stats), blob


def run_warmup(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    """§2 step 0: train a fresh adapter on a seeded `warmup_fraction` of the candidates."""
    ref, seed = run.ref, int(run.ref.params.get("seed", 0))
    run.ctx.stage("warmup", unit="steps")
    plan = load_plan(run.blobs, ref.state["candidates_blob"])
    # the same seeded subset `train_warmup_adapter` takes; chosen on ids so only it is loaded
    chosen = [int(i) for i in warmup_subset(plan.candidates, run.cfg.warmup_fraction, seed)]
    loaded, stats, blob = _train(run, chosen, None)
    # the warm-up's evaluation counts as part of the round's warmup stage: its progress stays on this job
    run.ctx.stage("evaluate", unit="eval sets")
    scores = evaluate_pool(run, loaded, on_set=lambda k, n: run.ctx.progress(k, n))
    eval_event(run, "warmup", scores)
    updates = {
        "adapter_sha": blob.sha256,
        "warmup_checkpoint": {"blob": blob.sha256, "size_bytes": blob.size,
                              "metrics": {**stats, "samples": len(chosen), "fraction": run.cfg.warmup_fraction},
                              "eval_datasets": scores},
    }
    with run.ctx.session_factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "warmup")
        record_round_blobs(session, ref.round_id, warmup_adapter=blob.sha256)
        out = enter_features(session, parent, ref, run.settings, updates)
    return out, {"samples": len(chosen), "blob": blob.sha256, **stats}


def pool_eval_sets(run: StageRun, skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(dataset id, skill) of the pool's evaluation sets not in `skip`."""
    with run.ctx.session_factory() as session:
        sets = session.execute(
            select(PoolEvalSet.dataset_id, PoolEvalSet.skill).where(PoolEvalSet.pool_id == run.ref.pool_id)
            .order_by(PoolEvalSet.dataset_id)
        ).all()
    return [(d, skill) for d, skill in sets if d not in skip]


def evaluate_pool(run: StageRun, loaded: Any, skip: frozenset[str] = frozenset(),
                  on_set: OnSet | None = None) -> dict[str, dict[str, Any]]:
    """Per eval dataset not in `skip`: {dataset_id: {"skill", "loss", "accuracy", "n", "n_scored"}}.
    `on_set(done, total)` runs after each set."""
    out: dict[str, dict[str, Any]] = {}
    sets = pool_eval_sets(run, skip)
    with run.ctx.session_factory() as session:
        for k, (dataset_id, skill) in enumerate(sets, 1):
            samples = load_dataset_samples(session, dataset_id, run.blobs)
            if samples:
                run.watch.check()
                metrics = evaluate(loaded, [EvalSet(dataset_id, skill, samples)],
                                   token_budget=run.cfg.training.max_length)[skill]
                out[dataset_id] = {"skill": skill, **metrics}
            if on_set is not None:
                on_set(k, len(sets))
    return out


def base_scored(run: StageRun) -> frozenset[str]:
    """The evaluation sets an earlier succeeded round of the pool scored the base model on."""
    with run.ctx.session_factory() as session:
        results = session.scalars(select(Round.result).where(Round.pool_id == run.ref.pool_id,
                                                             Round.status == "succeeded"))
        return frozenset(d for r in results for d in (r or {}).get("base_eval_datasets") or {})


def evaluate_base(run: StageRun, loaded: Any, on_set: OnSet | None = None) -> dict[str, dict[str, Any]]:
    """The base model's scores (§7: forward transfer's reference) on the pool's evaluation sets
    that no earlier round scored it on, as `evaluate_pool` gives them.

    The base model is the loaded one with its adapter switched off (a fresh LoRA has B = 0, so
    this is exactly the model the first round started from). Each set is scored once per pool:
    the base never changes, and a set added later gets its score in the next trained round.
    """
    with loaded.model.disable_adapter():
        return evaluate_pool(run, loaded, skip=base_scored(run), on_set=on_set)


def eval_event(run: StageRun, checkpoint: str, per_dataset: dict[str, dict[str, Any]]) -> None:
    """An "eval" event on the round's job: accuracy and loss per skill of `checkpoint`
    (warmup, round, or base: the model with its adapter off)."""
    skills = json_safe(pool_by_skill((m["skill"], m) for m in per_dataset.values()))
    if not skills:
        return
    shown = ", ".join(f"{skill} accuracy {'-' if m['accuracy'] is None else format(m['accuracy'], '.3f')}"
                      for skill, m in skills.items())
    run.watch.event(f"{checkpoint} evaluation: {shown}", type="eval", checkpoint=checkpoint, skills=skills)


def run_train(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    """§2 steps 7 and 9: continue the round's adapter on its selection, evaluate it."""
    ref = run.ref
    run.ctx.stage("train", unit="steps")
    with run.ctx.session_factory() as session:
        ids = [int(i) for i in session.scalars(
            select(Selection.sample_id).where(Selection.round_id == ref.round_id).order_by(Selection.sample_id)
        )]
    loaded, stats, blob = _train(run, ids, ref.state.get("adapter_sha"))
    run.ctx.stage("evaluate", unit="eval sets")
    # the round's "eval" stage: the trained adapter on every set, the base on the sets not scored yet
    total = len(pool_eval_sets(run)) + len(pool_eval_sets(run, skip=base_scored(run)))
    done = 0

    def on_set(_k: int, _n: int) -> None:
        nonlocal done
        done += 1
        run.watch.report(done, total, unit="eval sets")

    if total:
        run.watch.stage("eval", total=total, unit="eval sets")
    per_dataset = evaluate_pool(run, loaded, on_set=on_set)
    eval_event(run, "round", per_dataset)
    base = evaluate_base(run, loaded, on_set=on_set)
    eval_event(run, "base", base)
    updates = {
        "base_eval_datasets": base,
        "checkpoint": {"blob": blob.sha256, "size_bytes": blob.size, "metrics": {**stats, "samples": len(ids)},
                       "eval_datasets": per_dataset},
    }
    with run.ctx.session_factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "train")
        record_round_blobs(session, ref.round_id, adapter=blob.sha256)
        out = enter_stage(session, parent, ref, run.settings, "finalize", updates)
    return out, {"samples": len(ids), "blob": blob.sha256, **stats}
