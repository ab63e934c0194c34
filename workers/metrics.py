"""The worker's Prometheus metrics: job (stage) durations, feature throughput and train loss.

They are facts only a worker sees, so the worker serves them itself (ADAPTINF_WORKER_METRICS_PORT,
scraped like any exporter); what SQL or the broker already knows (jobs by status, queue depth,
pool sizes) the API reports at scrape time, the same from every replica. A prefork worker's tasks
run in child processes: `adaptinf worker` then gives the worker a fresh PROMETHEUS_MULTIPROC_DIR,
and the parent's server adds up the children's files.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess

log = logging.getLogger(__name__)

# Round stages run from seconds (prepare, a small shard) to hours (train on a big selection).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, float("inf"))

JOB_SECONDS = Histogram("adaptinf_worker_job_duration_seconds", "Wall time of a job (a round stage, an ingest) "
                        "from its lease to its end.", ["kind", "status"], buckets=DURATION_BUCKETS)
FEATURE_SAMPLES = Counter("adaptinf_worker_feature_samples", "Samples whose features and scores were computed.")
FEATURE_RATE = Gauge("adaptinf_worker_feature_samples_per_second", "Samples per second of the last feature "
                     "shard, model loading included.", multiprocess_mode="mostrecent")
TRAIN_LOSS = Gauge("adaptinf_worker_train_loss", "Training loss at the last step of the last training, by stage "
                   "(round.warmup, round.train).", ["kind"], multiprocess_mode="mostrecent")
TRAIN_STEPS = Counter("adaptinf_worker_train_steps", "Optimiser steps taken.", ["kind"])


def observe_job(kind: str, status: str, seconds: float, result: dict[str, Any] | None) -> None:
    """Record one finished job; `result` is what the job's domain function returned."""
    JOB_SECONDS.labels(kind, status).observe(seconds)
    if status != "succeeded" or not result:
        return
    if kind == "round.features" and isinstance(result.get("rows"), int):
        FEATURE_SAMPLES.inc(result["rows"])
        if seconds > 0:
            FEATURE_RATE.set(result["rows"] / seconds)
    if kind in ("round.warmup", "round.train") and isinstance(result.get("steps"), int):
        TRAIN_STEPS.labels(kind).inc(result["steps"])
        if isinstance(result.get("loss_last"), float):
            TRAIN_LOSS.labels(kind).set(result["loss_last"])


def serve_metrics(port: int) -> tuple[Any, Any]:
    """Serve /metrics on `port` from this (the worker's main) process, adding up task processes.
    Returns prometheus_client's (server, thread)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        served = start_http_server(port, registry=registry)
    else:
        served = start_http_server(port)  # the default registry: this process runs the tasks (solo pool)
    log.info("worker metrics on :%d/metrics", port)
    return served


def process_ended(pid: int) -> None:
    """A task process exited: drop its live-gauge files (its counters stay in the totals)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
