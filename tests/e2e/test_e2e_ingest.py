"""Ingest end to end on the production stack: HTTP API -> Redis -> `adaptinf worker` processes ->
PostgreSQL + blob store; and a worker SIGKILLed mid-ingest, finished by another after its lease
expires."""
from __future__ import annotations

import hashlib
from pathlib import Path

import datagen
import pytest
from e2e_procs import wait_for
from PIL import Image
from sqlalchemy import func, select

from service.config import Settings
from service.db.models import Dataset, Job, JobEvent, Sample
from service.db.session import get_sessionmaker

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def e2e_settings(e2e_pg_url: str, e2e_redis_url: str, tmp_path: Path) -> Settings:
    # Short lease, heartbeat and reaper period: a lost worker is noticed within ~4 s.
    return Settings(
        data_dir=tmp_path / "data", database_url=e2e_pg_url, broker_url=e2e_redis_url,
        lease_seconds=3, heartbeat_seconds=1, reaper_interval_seconds=1, max_attempts=3,
    )


@pytest.fixture
def api(e2e_settings: Settings):
    from fastapi.testclient import TestClient

    from service.main import create_app

    with TestClient(create_app(e2e_settings)) as client:
        yield client


@pytest.fixture
def headers(e2e_settings: Settings) -> dict[str, str]:
    from service.auth import create_api_key, create_owner
    from service.db.session import session_scope

    with session_scope(e2e_settings.resolved_database_url) as session:
        _, key = create_api_key(session, create_owner(session, "e2e"))
    return {"Authorization": f"Bearer {key}"}


def upload(api, headers: dict[str, str], dataset: Path, archive: Path) -> dict:  # noqa: ANN001
    with dataset.open("rb") as f, archive.open("rb") as a:
        r = api.post("/v1/datasets", headers=headers, files={"file": (dataset.name, f), "images": (archive.name, a)})
    assert r.status_code == 202, r.text
    return r.json()


def wait_ready(api, headers: dict[str, str], dataset_id: str, timeout: float) -> dict:  # noqa: ANN001
    def ready() -> dict | None:
        body = api.get(f"/v1/datasets/{dataset_id}", headers=headers).json()
        assert body["status"] != "failed", body
        return body if body["status"] == "ready" else None

    return wait_for(ready, timeout, f"dataset {dataset_id} ready", interval=0.25)


def wait_job_done(api, headers: dict[str, str], job_id: str, timeout: float) -> dict:  # noqa: ANN001
    """The dataset turns ready in the task's own transaction; the job is marked succeeded just after."""

    def done() -> dict | None:
        body = api.get(f"/v1/jobs/{job_id}", headers=headers).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout, f"job {job_id} finished", interval=0.1)


def test_ingest_end_to_end(e2e_settings: Settings, api, headers: dict[str, str], start_worker, tmp_path: Path) -> None:
    records, images = datagen.build_records(24, multi_image=True, text_only=True)
    dataset = datagen.write_records(tmp_path / "dataset.json", records)
    archive = datagen.write_archive(tmp_path, images, "tar.gz")
    worker = start_worker(e2e_settings)
    created = upload(api, headers, dataset, archive)
    worker.wait_ready()

    body = wait_ready(api, headers, created["id"], timeout=60)
    assert (body["num_samples"], body["num_images"]) == (24, len(images))
    wait_job_done(api, headers, created["job_id"], timeout=30)
    factory = get_sessionmaker(e2e_settings.resolved_database_url)
    blobs = e2e_settings.blob_store()
    with factory() as s:
        rows = s.scalars(select(Sample).where(Sample.dataset_id == created["id"]).order_by(Sample.position)).all()
        job = s.get(Job, created["job_id"])
    assert [r.key for r in rows] == [rec["id"] for rec in records]
    assert [r.position for r in rows] == list(range(24))
    for row, rec in zip(rows, records):
        names = [rec["image"]] if isinstance(rec.get("image"), str) else rec.get("image", [])
        assert row.image_names == names
        assert row.image_refs == [hashlib.sha256(images[n]).hexdigest() for n in names]
        assert row.messages[-1] == {"role": "assistant", "content": rec["conversations"][-1]["value"]}
        assert all(blobs.verify(sha) for sha in row.image_refs)
    stored = [Image.open(blobs.path(hashlib.sha256(data).hexdigest())) for data in images.values()]
    assert {im.format for im in stored} == {"JPEG", "PNG"} and {im.mode for im in stored} >= {"RGB", "L", "RGBA"}
    assert (job.status, job.attempts, job.stage, job.lease_owner) == ("succeeded", 1, "write", None)
    assert job.result["num_samples"] == 24 and (job.progress_done, job.progress_total) == (24, 24)
    assert not list(e2e_settings.work_dir.glob("ingest-*"))  # the worker's temp dir is gone


def test_worker_killed_mid_ingest_is_finished_by_another(
    e2e_settings: Settings, api, headers: dict[str, str], start_worker, tmp_path: Path
) -> None:
    # 900 photos: storing them takes several seconds, so the kill lands inside the images stage.
    n = 900
    dataset, archive = datagen.write_llava_dataset(tmp_path / "big", n, archive="tar")
    first = start_worker(e2e_settings)
    created = upload(api, headers, dataset, archive)
    factory = get_sessionmaker(e2e_settings.resolved_database_url)

    def job_state() -> Job:
        with factory() as s:
            return s.get(Job, created["job_id"])

    # Killed while storing images (a window of seconds): before the one write transaction.
    wait_for(lambda: job_state().stage == "images", 90, "the ingest to reach its images stage", 0.05)
    first.kill()
    lost = job_state()
    assert (lost.status, lost.attempts) == ("running", 1), "the job must still be mid-flight when killed"
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == created["id"])) == 0

    second = start_worker(e2e_settings)
    second.wait_ready()
    body = wait_ready(api, headers, created["id"], timeout=120)
    wait_job_done(api, headers, created["job_id"], timeout=30)

    assert body["num_samples"] == n
    with factory() as s:
        keys = s.scalars(select(Sample.key).where(Sample.dataset_id == created["id"])).all()
        job = s.get(Job, created["job_id"])
        events = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id)).all()
        dataset_row = s.get(Dataset, created["id"])
    assert len(keys) == n and len(set(keys)) == n  # every sample exactly once
    assert (job.status, job.attempts) == ("succeeded", 2)
    assert any("worker lost" in m for m in events)
    assert dataset_row.status == "ready" and dataset_row.num_images == n
    assert not list(e2e_settings.work_dir.glob("ingest-*"))  # the crashed attempt's temp dir was removed too
