"""Running one stage job: its view of the round, the parent's cancel flag and progress.

`run_stage` is what every stage task calls: it reads the round once, skips a stage the round has
left, runs the stage's domain function and sends the jobs it committed.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.progress import is_logged_step, start_stage, utcnow
from core.text import json_safe
from core.statuses import ACTIVE, TERMINAL
from service.config import Settings
from service.db.models import Job, Pool, Round
from service.jobs import add_event, stage_events
from service.lifecycle import lock_job
from core.blobs import BlobStore
from workers.jobs import JobContext
from workers.leases import JobCancelled
from workers.rounds.advance import Outgoing, RoundRef, StageDone, check_live, send, set_live_progress
from workers.rounds.config import RoundEngineConfig, engine_config, model_spec

log = logging.getLogger(__name__)


@dataclass
class StageRun:
    """Everything a stage's domain function gets."""

    ctx: JobContext
    ref: RoundRef
    cfg: RoundEngineConfig
    blobs: BlobStore
    watch: "ParentWatch"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def spec(self):  # noqa: ANN201 - workers.engine.models.ModelSpec
        return model_spec(self.ref.base_model, self.ref.model_type, self.settings)


def load_ref(session: Session, child_id: str) -> RoundRef:
    child = session.get(Job, child_id)
    parent = session.get(Job, child.parent_id) if child is not None and child.parent_id else None
    if parent is None:
        raise LookupError(f"job {child_id} has no parent round job")
    rnd = session.get(Round, parent.params["round_id"])
    pool = session.get(Pool, rnd.pool_id)
    return RoundRef(parent.id, rnd.id, pool.id, rnd.number, parent.owner_id, dict(rnd.params),
                    dict(parent.result or {}), pool.base_model, pool.model_type, dict(pool.config or {}),
                    pool.current_checkpoint_id)


class ParentWatch:
    """The child's view of its round: the parent's cancel flag, its progress and its events.

    Reads and writes at most once per `interval` seconds (forced on the last step).
    """

    def __init__(self, ctx: JobContext, parent_id: str, interval: float = 1.0) -> None:
        self.ctx, self.parent_id, self.interval = ctx, parent_id, interval
        self._last_check = self._last_report = 0.0

    def check(self, force: bool = False) -> None:
        """Raise JobCancelled once the round is being cancelled or has ended."""
        self.ctx.check_cancelled()
        now = time.monotonic()
        if not force and now - self._last_check < self.interval:
            return
        self._last_check = now
        with self.ctx.session_factory() as session:
            row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == self.parent_id)).one_or_none()
        if row is None or row.status in TERMINAL or row.cancel_requested or row.status != "running":
            raise JobCancelled(f"round job {self.parent_id}: cancel requested or ended")

    def due(self, force: bool = False) -> bool:
        """Whether the parent's progress is due a write (once per interval, or forced)."""
        now = time.monotonic()
        if not force and now - self._last_report < self.interval:
            return False
        self._last_report = now
        return True

    def report(self, done: int, total: int, *, unit: str | None = None, metrics: dict[str, Any] | None = None,
               fraction: float | None = None) -> None:
        """The round's (parent's) progress: the child's own (`JobContext.progress`, which measures
        rate and ETA), copied to the parent at most once per interval and on the last step."""
        self.ctx.progress(done, total, unit=unit, metrics=metrics, fraction=fraction)
        if self.due(force=done >= total):
            self.write_parent(self.ctx.live_values())

    def write_parent(self, values: dict[str, Any]) -> None:
        with self.ctx.session_factory() as session:
            session.execute(
                update(Job).where(Job.id == self.parent_id, Job.status.in_(ACTIVE))
                .values(**values).execution_options(synchronize_session=False)
            )
            session.commit()

    def event(self, message: str, level: str = "info", **data: Any) -> None:
        """An event on the round's job (the one users watch)."""
        with self.ctx.session_factory() as session:
            add_event(session, self.parent_id, message, level=level, data=data or None)
            session.commit()

    def stage(self, name: str, total: int = 0, unit: str | None = None) -> None:
        """Show `name` as the round's running stage in its overall progress and events (train's
        evaluation, "eval"); the stage machine's own `stage` column stays as it is."""
        with self.ctx.session_factory() as session, session.begin():
            parent = lock_job(session, self.parent_id)
            if parent is None or parent.status not in ACTIVE:
                return
            parent.stages, ended = start_stage(parent.stages, name, utcnow())
            set_live_progress(parent, 0, total, unit)
            stage_events(session, parent.id, ended, name)
        self._last_report = 0.0

    def on_step(self, info: Any) -> None:
        """train_lora's callback (a `TrainStep`): steps, loss and lr on the round, a train.step
        event every few steps (`core.progress.is_logged_step`), and the cancel check."""
        loss = json_safe(info.loss)
        metrics = {"step": info.step, "max_steps": info.total, "loss": loss, "lr": info.lr,
                   "epoch": round(info.epoch, 4)}
        self.report(info.step, info.total, unit="steps", metrics=metrics)
        if is_logged_step(info.step, info.total):
            shown = "nan" if loss is None else f"{loss:.4f}"
            self.event(f"{self.ctx.current_stage or 'train'} step {info.step}/{info.total} loss {shown}",
                       type="train.step", stage=self.ctx.current_stage, **metrics)
        self.check(force=info.step >= info.total)


def run_stage(ctx: JobContext, stage: str, fn: Callable[[StageRun], tuple[list[Outgoing], dict[str, Any]]]) -> dict[str, Any]:
    """Run one stage's domain function for child job `ctx`; send the jobs it created after its commit."""
    with ctx.session_factory() as session:
        ref = load_ref(session, ctx.job_id)
        parent = session.get(Job, ref.parent_id)
        try:
            check_live(parent, stage)
        except StageDone as exc:
            log.info("job %s: %s; nothing to do", ctx.job_id, exc)
            return {"skipped": str(exc)}
    run = StageRun(ctx, ref, engine_config(ref.pool_config), ctx.settings.blob_store(), ParentWatch(ctx, ref.parent_id))
    try:
        outgoing, result = fn(run)
    except StageDone as exc:
        log.info("job %s: %s; nothing to do", ctx.job_id, exc)
        return {"skipped": str(exc)}
    send(ctx.settings, outgoing)
    return result
