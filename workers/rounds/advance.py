"""The round's stage machine: child jobs chained by conditional updates on the parent job.

The parent job (kind "round") holds no lease while its children run, so the reaper never
touches it (it only looks at expired leases and unclaimed queued jobs); its `stage` column is
the machine's state. A stage commits its output and enters the next stage in ONE transaction:

1. fence the child's own lease (a worker that lost it cannot commit),
2. lock the parent row (an UPDATE: a row lock on PostgreSQL, the write lock on SQLite),
3. check the parent is still running, not cancelled, and still at this stage,
4. write the stage's rows, set the parent's next stage and create that stage's child job(s),

and only after the commit sends the new jobs to the broker. A duplicate delivery or a retry of
a stage that already committed finds the parent at a later stage (`StageDone`) and does
nothing, so no stage is created twice or skipped; a crash between commit and send leaves the
new jobs queued in SQL, where the reaper re-sends them. Starting and ending the round (and what a
failed or cancelled stage job does to it) are `service.lifecycle`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from core.progress import plan_stages, start_stage
from core.statuses import TERMINAL
from service.broker import enqueue_job
from service.config import Settings
from service.db.models import Job, Pool, PoolEvalSet, Round, utcnow
from service.jobs import add_event, create_job, stage_events
from service.lifecycle import ROUND_STAGE_PREFIX, lock_job, start_round_job
from workers.jobs import JobContext
from workers.leases import JobCancelled

STAGES = ("prepare", "warmup", "features", "select", "train", "finalize")
QUEUES = {"prepare": "select", "warmup": "train", "features": "gpu", "select": "select", "train": "train",
          "finalize": "select"}


def kind_of(stage: str) -> str:
    return ROUND_STAGE_PREFIX + stage


class StageDone(Exception):
    """An earlier delivery already completed this stage (or shard): nothing left to do."""


@dataclass(frozen=True)
class Outgoing:
    """A job created in a committed transaction, to send to the broker afterwards."""

    job_id: str
    kind: str
    queue: str


@dataclass(frozen=True)
class RoundRef:
    """What a stage task knows about its round, read once when the stage starts."""

    parent_id: str
    round_id: str
    pool_id: str
    number: int
    owner_id: str
    params: dict[str, Any]
    state: dict[str, Any]  # the parent job's result: what earlier stages recorded
    base_model: str
    model_type: str
    pool_config: dict[str, Any]
    current_checkpoint_id: str | None


def check_live(parent: Job | None, stage: str) -> Job:
    """Raise JobCancelled if the round was cancelled or already ended, StageDone if it moved on."""
    if parent is None or parent.status in TERMINAL:
        raise JobCancelled(f"round job {getattr(parent, 'id', None)} already ended")
    if parent.cancel_requested or parent.status != "running":
        raise JobCancelled(f"round job {parent.id}: cancel requested")
    if parent.stage != stage:
        raise StageDone(f"round job {parent.id} is at stage {parent.stage!r}, past {stage!r}")
    return parent


def claim_stage(session: Session, ctx: JobContext, parent_id: str, stage: str) -> Job:
    """Open a stage's commit: fence the child's lease, lock the parent, check it is at `stage`.

    Lock order child → parent, as in `service.lifecycle` when a stage job ends.
    """
    ctx.fence(session)
    return check_live(lock_job(session, parent_id), stage)


def next_stage(stage: str, state: dict[str, Any], params: dict[str, Any]) -> str | None:
    if stage == "prepare":
        return "warmup" if state.get("warmup") else "features"
    if stage == "select":
        return "train" if params.get("train", True) else "finalize"
    if stage == "finalize":
        return None
    return STAGES[STAGES.index(stage) + 1]


def round_stage_names(warmup: bool, train: bool, evaluate: bool) -> list[str]:
    """The stages a round is planned to go through, for its overall progress. "eval" is the
    train stage's evaluation, shown apart; a planned stage the round skips drops out."""
    return (["prepare"] + (["warmup"] if warmup else []) + ["features", "select"]
            + (["train"] + (["eval"] if evaluate else []) if train else []) + ["finalize"])


def set_live_progress(job: Job, done: int = 0, total: int = 0, unit: str | None = None,
                      metrics: dict[str, Any] | None = None) -> None:
    """Restart the job's live progress (a new stage)."""
    job.progress_done, job.progress_total, job.progress_unit = done, total, unit
    job.progress_rate = job.progress_eta = job.progress_fraction = None
    job.metrics = metrics


def enter_stage(
    session: Session, parent: Job, ref: RoundRef, settings: Settings, stage: str, updates: dict[str, Any],
    children: list[dict[str, Any]] | None = None, total: int = 0, unit: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> list[Outgoing]:
    """Record `updates` in the parent's state, move it to `stage`, create that stage's jobs.

    `children` are the params of each child job (default: one job, params {"round_id"});
    `total`, `unit` and `metrics` start the parent's live progress in the stage.
    """
    parent.result = {**(parent.result or {}), **updates}
    parent.stage = stage
    set_live_progress(parent, 0, total, unit, metrics)
    parent.stages, ended = start_stage(parent.stages, stage, utcnow())
    out = []
    for params in children or [{}]:
        job = create_job(session, ref.owner_id, kind_of(stage), QUEUES[stage], {"round_id": ref.round_id, **params},
                         max_attempts=settings.max_attempts, parent_id=parent.id)
        out.append(Outgoing(job.id, job.kind, job.queue))
    stage_events(session, parent.id, ended, stage, jobs=len(out))
    return out


def send(settings: Settings, outgoing: list[Outgoing]) -> None:
    """Send committed jobs; an unreachable broker is fine: the reaper re-sends queued jobs."""
    for o in outgoing:
        enqueue_job(settings, o.job_id, o.kind, o.queue)


def start_round(session: Session, settings: Settings, parent_id: str) -> list[Outgoing]:
    """The parent task: queued → running at stage prepare, with the prepare job. Commits.

    A duplicate delivery (already running or ended) creates nothing.
    """
    try:
        parent = start_round_job(session, parent_id, "prepare")
    except LookupError:
        session.rollback()
        raise
    if parent is None:
        session.commit()
        return []
    rnd = session.get(Round, parent.params["round_id"])
    pool = session.get(Pool, rnd.pool_id)
    ref = RoundRef(parent.id, rnd.id, pool.id, rnd.number, parent.owner_id, dict(rnd.params), {}, pool.base_model,
                   pool.model_type, dict(pool.config or {}), pool.current_checkpoint_id)
    add_event(session, parent.id, f"round {rnd.number} of pool {pool.id} started")
    # the plan of the overall progress: a pool without a current checkpoint may warm up (prepare
    # decides; a skipped stage drops out), and "eval" runs when the pool has evaluation sets
    has_evals = session.scalar(select(exists().where(PoolEvalSet.pool_id == pool.id)))
    parent.stages = plan_stages(round_stage_names(pool.current_checkpoint_id is None,
                                                  bool(rnd.params.get("train", True)), bool(has_evals)))
    out = enter_stage(session, parent, ref, settings, "prepare", {})
    session.commit()
    return out
