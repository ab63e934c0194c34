"""The worker's metrics after tiny stage jobs run through the JobTask base (in-process, SQLite), and
served over HTTP as a worker with ADAPTINF_WORKER_METRICS_PORT serves them."""
from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from jobs_dbs import database_from, migrated_template
from prometheus_client import REGISTRY

from service.broker import make_celery
from service.config import Settings
from service.db.models import Job, Owner
from service.db.session import get_sessionmaker
from workers import jobs
from workers.jobs import JobContext, job_task
from workers.metrics import FEATURE_RATE, serve_metrics


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with migrated_template("sqlite", tmp_path / "tmpl") as template, database_from("sqlite", template, tmp_path) as url:
        s = Settings(data_dir=tmp_path / "data", database_url=url, lease_seconds=5, heartbeat_seconds=0.05)
        monkeypatch.setattr(jobs, "get_settings", lambda: s)
        yield s


def _new_job(settings: Settings, kind: str) -> str:
    with get_sessionmaker(settings.resolved_database_url)() as s:
        owner = Owner(name=f"o-{kind}")
        s.add(owner)
        s.flush()
        job = Job(owner_id=owner.id, kind=kind, queue="gpu", params={})
        s.add(job)
        s.commit()
        return job.id


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_stage_jobs_record_duration_throughput_and_loss(settings: Settings) -> None:
    app = make_celery(settings)

    @job_task(app, kind="round.features", queue="gpu")
    def shard(ctx: JobContext) -> dict:
        return {"shard": 0, "rows": 6, "blob": "x", "last": True}

    @job_task(app, kind="round.train", queue="train")
    def train(ctx: JobContext) -> dict:
        return {"samples": 4, "blob": "y", "steps": 3, "loss_first": 2.5, "loss_last": 1.25, "mean_loss": 1.8}

    @job_task(app, kind="round.select", queue="select")
    def select(ctx: JobContext) -> dict:
        raise ValueError("no clusters")

    shards = _value("adaptinf_worker_job_duration_seconds_count", kind="round.features", status="succeeded")
    samples = _value("adaptinf_worker_feature_samples_total")
    steps = _value("adaptinf_worker_train_steps_total", kind="round.train")
    failed = _value("adaptinf_worker_job_duration_seconds_count", kind="round.select", status="failed")
    FEATURE_RATE.set(-1.0)  # a process-wide gauge: an earlier test's value must not pass the check below
    assert shard(_new_job(settings, "round.features"))["status"] == "succeeded"
    assert train(_new_job(settings, "round.train"))["status"] == "succeeded"
    assert select(_new_job(settings, "round.select"))["status"] == "failed"

    assert _value("adaptinf_worker_job_duration_seconds_count", kind="round.features", status="succeeded") == shards + 1
    assert _value("adaptinf_worker_job_duration_seconds_count", kind="round.select", status="failed") == failed + 1
    assert _value("adaptinf_worker_feature_samples_total") == samples + 6
    assert _value("adaptinf_worker_feature_samples_per_second") > 0
    assert _value("adaptinf_worker_train_loss", kind="round.train") == 1.25
    assert _value("adaptinf_worker_train_steps_total", kind="round.train") == steps + 3


def test_the_worker_serves_its_metrics_over_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, thread = serve_metrics(port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        thread.join(5)
    for name in ("adaptinf_worker_job_duration_seconds", "adaptinf_worker_feature_samples_total",
                 "adaptinf_worker_feature_samples_per_second", "adaptinf_worker_train_loss"):
        assert f"# TYPE {name} " in text
