"""A pool's lifelong metrics (DESIGN §7): the accuracy matrix over its rounds, each skill's arrival,
and the summary of `core.lifelong_metrics`. No web framework here.

Rows are the pool's evaluated round checkpoints in round order; columns are the skills of its
evaluation sets. A skill *arrives* in the first succeeded round whose new datasets hold a sample
of it (`datasets.skill_counts`); its arrival row is the first evaluated round at or after that
one. Skills that no training data declared are "unseen": they keep their column and are left
out of every summary metric.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.skill_scores import pool_by_skill
from service.db.models import Checkpoint, Dataset, EvalResult, Pool, PoolEvalSet, Round

SUMMARY_METRICS = ("avg_acc", "forgetting", "backward_transfer", "forward_transfer", "mft", "mfn", "maa",
                   "relative_gain")


def _round_evals(session: Session, pool_id: str) -> list[dict[str, Any]]:
    """One entry per evaluated round checkpoint, in round order: round_id, number, checkpoint_id, skills."""
    rows = session.execute(
        select(Checkpoint.id, Round.id, Round.number, EvalResult.skill, EvalResult.metrics)
        .join(EvalResult, EvalResult.checkpoint_id == Checkpoint.id)
        .join(Round, Round.id == Checkpoint.round_id)
        .where(Checkpoint.pool_id == pool_id, Checkpoint.kind == "round")
    ).all()
    grouped: dict[str, dict[str, Any]] = {}
    for ckpt_id, round_id, number, skill, metrics in rows:
        g = grouped.setdefault(ckpt_id, {"round_id": round_id, "number": number, "checkpoint_id": ckpt_id, "results": []})
        g["results"].append((skill, metrics or {}))
    entries = [{**{k: g[k] for k in ("round_id", "number", "checkpoint_id")}, "skills": pool_by_skill(g["results"])}
               for g in grouped.values()]
    return sorted(entries, key=lambda e: e["number"])


def _history(session: Session, pool_id: str) -> tuple[dict[str, int], dict[str, dict[str, float | None]] | None]:
    """(skill → number of the round it arrived in, the base model's accuracy and loss per skill or None).

    Each round records the base model's scores on the evaluation sets no earlier round scored it
    on (`base_eval_datasets`); they are pooled per skill like a round's scores. Only the pool's
    current evaluation sets count: one removed from the pool leaves no trace in its metrics.
    """
    current = set(session.scalars(select(PoolEvalSet.dataset_id).where(PoolEvalSet.pool_id == pool_id)))
    rounds = session.execute(
        select(Round.number, Round.params, Round.result)
        .where(Round.pool_id == pool_id, Round.status == "succeeded").order_by(Round.number)
    ).all()
    dataset_ids = {d for _, params, _ in rounds for d in (params or {}).get("dataset_ids", ())}
    counts = dict(session.execute(select(Dataset.id, Dataset.skill_counts).where(Dataset.id.in_(dataset_ids))).all())
    arrival: dict[str, int] = {}
    base: dict[str, dict[str, Any]] = {}
    for number, params, result in rounds:
        for dataset_id in (params or {}).get("dataset_ids", ()):
            for skill in counts.get(dataset_id) or {}:
                arrival.setdefault(skill, number)
        for dataset_id, m in ((result or {}).get("base_eval_datasets") or {}).items():
            if dataset_id in current:
                base.setdefault(dataset_id, m)
    return arrival, pool_by_skill((m["skill"], m) for m in base.values()) if base else None


def pool_metrics(session: Session, pool: Pool, reference: Pool | None = None) -> dict[str, Any]:
    """The accuracy matrix a[t][skill], each skill's arrival and trajectory, and the §7 summary.

    Forward transfer is measured against the base model's scores (the adapter switched off);
    relative gain against `reference`'s last evaluated round.
    """
    from core.lifelong_metrics import (  # numpy only; kept out of import time
        backward_transfer_per_skill, forgetting_per_skill, forward_transfer_per_skill, summarize_lifelong,
    )

    rounds = _round_evals(session, pool.id)
    arrived_in, base = _history(session, pool.id)
    eval_skills = session.scalars(select(PoolEvalSet.skill).where(PoolEvalSet.pool_id == pool.id))
    skills = sorted(set(eval_skills) | {s for r in rounds for s in r["skills"]})

    def row(entry_skills: dict[str, Any] | None, key: str) -> list[float | None]:
        return [((entry_skills or {}).get(s) or {}).get(key) for s in skills]

    matrix = [row(r["skills"], "accuracy") for r in rounds]
    numbers = [r["number"] for r in rounds]
    # arrival row: the first evaluated round at or after the arrival round; -1 when there is none
    arrival_rows = [next((i for i, n in enumerate(numbers) if n >= arrived_in[s]), -1) if s in arrived_in else -1
                    for s in skills]
    base_row = row(base, "accuracy") if base else None
    ref_rounds = _round_evals(session, reference.id) if reference is not None else []
    ref_row = row(ref_rounds[-1]["skills"], "accuracy") if ref_rounds else None

    summary: dict[str, Any] = dict.fromkeys(SUMMARY_METRICS) | {"skills_arrived": 0}
    per_skill = {s: {"forgetting": None, "backward_transfer": None, "forward_transfer": None} for s in skills}
    if matrix and skills:
        nan = float("nan")

        def arr(values: list[float | None]) -> list[float]:
            return [nan if v is None else float(v) for v in values]

        acc = [arr(r) for r in matrix]
        base_arr = arr(base_row) if base_row else None
        summary = summarize_lifelong(acc, arrival_rows, base=base_arr,
                                     reference=arr(ref_row) if ref_row else None).to_dict()
        columns = {
            "forgetting": forgetting_per_skill(acc, arrival_rows),
            "backward_transfer": backward_transfer_per_skill(acc, arrival_rows),
            "forward_transfer": forward_transfer_per_skill(acc, arrival_rows, base_arr) if base_arr else None,
        }
        for j, s in enumerate(skills):
            for name, values in columns.items():
                v = None if values is None else float(values[j])
                per_skill[s][name] = None if v is None or v != v else v
    # a skill that arrived in a round with no evaluation after it yet is neither arrived nor unseen
    summary["skills_unseen"] = sum(s not in arrived_in for s in skills)
    return {
        "object": "pool.metrics",
        "pool_id": pool.id,
        "skills": skills,
        "rounds": [
            {"round_id": r["round_id"], "number": r["number"], "checkpoint_id": r["checkpoint_id"],
             "accuracy": dict(zip(skills, row(r["skills"], "accuracy"))), "loss": dict(zip(skills, row(r["skills"], "loss")))}
            for r in rounds
        ],
        "accuracy": matrix,
        "base": None if base is None else {"accuracy": dict(zip(skills, base_row)),
                                           "loss": dict(zip(skills, row(base, "loss")))},
        "reference_pool_id": reference.id if reference is not None else None,
        "per_skill": [
            {
                "skill": s,
                "status": "unseen" if s not in arrived_in else "arrived" if arrival_rows[j] >= 0 else "not_evaluated",
                "arrival_round": arrived_in.get(s),
                "trajectory": [m[j] for m in matrix],
                "final": matrix[-1][j] if matrix else None,
                **per_skill[s],
            }
            for j, s in enumerate(skills)
        ],
        "summary": summary,
    }
