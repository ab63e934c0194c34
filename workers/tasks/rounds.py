"""Round tasks: ``adaptinf.round`` (queue select) and one task per stage, each a thin wrapper.

The parent task only moves its job from queued to running at stage prepare and sends the
prepare job; it holds no lease (the reaper leaves a running job without a lease alone). Every
stage is a child job with its own lease and attempts (JobTask); `workers.rounds.advance` chains
them. A failed or cancelled child ends the round through `service.lifecycle`.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import Task

from service.broker import task_name
from service.config import get_settings
from service.db.session import get_sessionmaker
from workers.celery_app import app
from workers.jobs import TRANSIENT_ERRORS, JobContext, job_task
from workers.rounds.advance import QUEUES, kind_of, send, start_round
from workers.rounds.features_stage import run_shard
from workers.rounds.finalize import run_finalize
from workers.rounds.prepare_stage import run_prepare
from workers.rounds.runner import run_stage
from workers.rounds.select_stage import run_select
from workers.rounds.train_stage import run_train, run_warmup

log = logging.getLogger(__name__)


@app.task(bind=True, name=task_name("round"), queue="select", acks_late=True, reject_on_worker_lost=True,
          ignore_result=True, max_retries=5)
def round_job(self: Task, job_id: str) -> dict[str, Any]:
    """Start the round of parent job `job_id`: running at stage prepare, the prepare job sent."""
    settings = get_settings()
    try:
        with get_sessionmaker(settings.resolved_database_url)() as session:
            outgoing = start_round(session, settings, job_id)
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=2.0 * 2**self.request.retries) from exc
    send(settings, outgoing)
    return {"job_id": job_id, "started": bool(outgoing)}


@job_task(app, kind=kind_of("prepare"), queue=QUEUES["prepare"])
def round_prepare(ctx: JobContext) -> dict[str, Any]:
    """Freeze the candidates, plan the feature shards."""
    return run_stage(ctx, "prepare", run_prepare)


@job_task(app, kind=kind_of("warmup"), queue=QUEUES["warmup"])
def round_warmup(ctx: JobContext) -> dict[str, Any]:
    """Train the warm-up adapter of a pool's first round."""
    return run_stage(ctx, "warmup", run_warmup)


@job_task(app, kind=kind_of("features"), queue=QUEUES["features"])
def round_features(ctx: JobContext) -> dict[str, Any]:
    """Features and scores of one shard."""
    return run_stage(ctx, "features", run_shard)


@job_task(app, kind=kind_of("select"), queue=QUEUES["select"])
def round_select(ctx: JobContext) -> dict[str, Any]:
    """Cluster, choose experts, select; decide what to prune."""
    return run_stage(ctx, "select", run_select)


@job_task(app, kind=kind_of("train"), queue=QUEUES["train"])
def round_train(ctx: JobContext) -> dict[str, Any]:
    """Continue the adapter on the selection; evaluate it."""
    return run_stage(ctx, "train", run_train)


@job_task(app, kind=kind_of("finalize"), queue=QUEUES["finalize"])
def round_finalize(ctx: JobContext) -> dict[str, Any]:
    """Apply the round to the pool in one transaction."""
    return run_stage(ctx, "finalize", run_finalize)


STAGE_TASKS = {kind_of("prepare"): round_prepare, kind_of("warmup"): round_warmup, kind_of("features"): round_features,
               kind_of("select"): round_select, kind_of("train"): round_train, kind_of("finalize"): round_finalize}
