"""The ingest task (workers/tasks/ingest.py) called in-process on SQLite: rows in short chunks,
idempotent on a second run, and a worker-side validation failure fails dataset and job alike."""
from __future__ import annotations

from pathlib import Path

import datagen
import pytest
from jobs_dbs import database_from, migrated_template
from sqlalchemy import func, select

from service.config import Settings
from service.db.models import Dataset, Job, Owner, Sample
from service.db.session import get_sessionmaker
from workers import jobs
from workers.tasks.ingest import ingest


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory):
    with migrated_template("sqlite", tmp_path_factory.mktemp("tmpl")) as t:
        yield t


@pytest.fixture
def settings(template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with database_from("sqlite", template, tmp_path) as url:
        s = Settings(data_dir=tmp_path / "data", database_url=url, heartbeat_seconds=0.2)
        monkeypatch.setattr(jobs, "get_settings", lambda: s)
        yield s


def stored_dataset(settings: Settings, dataset: Path, archive: Path | None, skill: str | None = None) -> tuple[str, str]:
    """Blobs + Dataset(pending) + Job(ingest) as the API leaves them; returns (dataset id, job id)."""
    blobs = settings.blob_store()
    file_ref = blobs.put_file(dataset)
    archive_ref = blobs.put_file(archive) if archive else None
    with get_sessionmaker(settings.resolved_database_url)() as s:
        owner = s.scalar(select(Owner)) or Owner(name="o")
        s.add(owner)
        s.flush()
        ds = Dataset(owner_id=owner.id, name="d", file_blob=file_ref.sha256, file_name=dataset.name,
                     archive_blob=archive_ref.sha256 if archive_ref else None, archive_name=archive and archive.name,
                     skill=skill)
        s.add(ds)
        s.flush()
        job = Job(owner_id=owner.id, kind="ingest", queue="ingest", params={"dataset_id": ds.id})
        s.add(job)
        s.commit()
        return ds.id, job.id


def new_ingest_job(settings: Settings, dataset_id: str) -> str:
    with get_sessionmaker(settings.resolved_database_url)() as s:
        ds = s.get(Dataset, dataset_id)
        job = Job(owner_id=ds.owner_id, kind="ingest", queue="ingest", params={"dataset_id": dataset_id})
        s.add(job)
        s.commit()
        return job.id


def test_ingest_writes_all_samples_and_a_rerun_writes_nothing(settings: Settings, tmp_path: Path) -> None:
    dataset, archive = datagen.write_llava_dataset(tmp_path / "ds", 10, multi_image=True, text_only=True)
    dataset_id, job_id = stored_dataset(settings, dataset, archive)
    assert ingest(job_id)["status"] == "succeeded"
    again = new_ingest_job(settings, dataset_id)  # e.g. a retried job after a lost final status
    assert ingest(again)["status"] == "succeeded"

    factory = get_sessionmaker(settings.resolved_database_url)
    with factory() as s:
        ds = s.get(Dataset, dataset_id)
        n_rows = s.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset_id))
        first, second = s.get(Job, job_id), s.get(Job, again)
    records, images = datagen.build_records(10, multi_image=True, text_only=True)
    assert (ds.status, ds.num_samples, ds.num_images, n_rows) == ("ready", 10, len(images), 10)
    assert first.result["written"] is True and second.result["written"] is False
    assert second.result["num_samples"] == 10
    assert not list(settings.work_dir.glob("ingest-*"))
    # its own stages, all done, in the job's overall progress; the last stage counted samples
    from service.schemas import JobOut

    shown = JobOut.model_validate(first).model_dump(mode="json")
    assert [(st["name"], st["status"]) for st in shown["overall"]["stages"]] == [
        ("parse", "done"), ("images", "done"), ("write", "done")]
    assert shown["overall"]["fraction"] == 1.0 and shown["overall"]["eta_seconds"] == 0.0
    assert (shown["progress"]["done"], shown["progress"]["total"], shown["progress"]["unit"]) == (10, 10, "samples")


def test_a_records_skill_wins_over_the_datasets(settings: Settings, tmp_path: Path) -> None:
    records, _ = datagen.build_records(4, with_images=False)
    records[1]["skill"], records[3]["skill"] = "ocr", " ocr "
    dataset = datagen.write_records(tmp_path / "ds.json", records)
    dataset_id, job_id = stored_dataset(settings, dataset, None, skill="vqa")
    assert ingest(job_id)["status"] == "succeeded"
    with get_sessionmaker(settings.resolved_database_url)() as s:
        skills = s.scalars(select(Sample.skill).where(Sample.dataset_id == dataset_id).order_by(Sample.position)).all()
        ds = s.get(Dataset, dataset_id)
    assert skills == ["vqa", "ocr", "vqa", "ocr"]
    assert (ds.skill, ds.skill_counts) == ("vqa", {"ocr": 2, "vqa": 2})


def test_validation_failure_in_the_worker_fails_dataset_and_job(settings: Settings, tmp_path: Path) -> None:
    records, images = datagen.build_records(4)
    records[2]["image"] = "images/not-there.png"  # the API would have refused it; the worker must too
    dataset = datagen.write_records(tmp_path / "bad.json", records)
    archive = datagen.write_archive(tmp_path, images, "zip")
    dataset_id, job_id = stored_dataset(settings, dataset, archive)
    assert ingest(job_id)["status"] == "failed"
    with get_sessionmaker(settings.resolved_database_url)() as s:
        ds, job = s.get(Dataset, dataset_id), s.get(Job, job_id)
        n_rows = s.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset_id))
    assert job.error["code"] == "missing_image" and "not-there.png" in job.error["message"]
    assert ds.status == "failed" and ds.error["code"] == "missing_image" and ds.error["sample_id"] == "s0002"
    assert n_rows == 0


def test_corrupt_stored_upload_fails_with_upload_corrupt(settings: Settings, tmp_path: Path) -> None:
    dataset = datagen.write_records(tmp_path / "t.json", datagen.build_records(3, with_images=False)[0])
    dataset_id, job_id = stored_dataset(settings, dataset, None)
    blob = settings.blob_store().path(_file_blob(settings, dataset_id))
    blob.chmod(0o644)
    blob.write_bytes(b"[]")
    assert ingest(job_id)["status"] == "failed"
    with get_sessionmaker(settings.resolved_database_url)() as s:
        assert s.get(Job, job_id).error["code"] == "upload_corrupt"
        assert s.get(Dataset, dataset_id).status == "failed"


def _file_blob(settings: Settings, dataset_id: str) -> str:
    with get_sessionmaker(settings.resolved_database_url)() as s:
        return s.get(Dataset, dataset_id).file_blob


def test_worker_applies_the_configured_upload_limit(settings: Settings, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker validates with the limit the API used (ADAPTINF_MAX_UPLOAD_BYTES), not a default
    of its own: what one accepts the other accepts, and a lowered limit binds both."""
    dataset = datagen.write_records(tmp_path / "t.json", datagen.build_records(3, with_images=False)[0])
    dataset_id, job_id = stored_dataset(settings, dataset, None)
    small = settings.model_copy(update={"max_upload_bytes": 50})
    monkeypatch.setattr(jobs, "get_settings", lambda: small)
    assert ingest(job_id)["status"] == "failed"
    with get_sessionmaker(settings.resolved_database_url)() as s:
        error = s.get(Job, job_id).error
    assert error["code"] == "dataset_too_large" and "limit of 50" in error["message"]


@pytest.mark.parametrize("case", ["corrupt_image", "image_too_large"])
def test_image_content_errors_are_found_by_the_worker(settings: Settings, tmp_path: Path, case: str) -> None:
    """The upload only lists the archive; the worker decodes each image (once) and names the bad one."""
    records, images = datagen.build_records(3)
    bad = datagen.truncated_jpeg() if case == "corrupt_image" else datagen.png_header_only(20000, 20000)
    images[records[1]["image"]] = bad
    dataset = datagen.write_records(tmp_path / "d.json", records)
    dataset_id, job_id = stored_dataset(settings, dataset, datagen.write_zip(tmp_path, images))
    assert ingest(job_id)["status"] == "failed"
    with get_sessionmaker(settings.resolved_database_url)() as s:
        ds, job = s.get(Dataset, dataset_id), s.get(Job, job_id)
    assert job.error["code"] == case and ds.error["sample_id"] == "s0001"
    assert ds.error["member"] == records[1]["image"] and ds.error["line"] > 1


def test_an_archived_hf_dataset_folder_is_ingested_end_to_end(settings: Settings, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="datasets is a dev dependency")
    import tarfile

    records, _ = datagen.build_records(5)
    columns = {"id": [r["id"] for r in records], "conversations": [r["conversations"] for r in records],
               "image": [{"bytes": datagen.image_bytes(i), "path": f"{i}.png"} for i in range(5)]}
    datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "hf"))
    with tarfile.open(tmp_path / "hf.tar", "w") as tf:
        tf.add(tmp_path / "hf", arcname="hf")
    dataset_id, job_id = stored_dataset(settings, tmp_path / "hf.tar", None)
    assert ingest(job_id)["status"] == "succeeded"
    with get_sessionmaker(settings.resolved_database_url)() as s:
        ds = s.get(Dataset, dataset_id)
        rows = s.scalars(select(Sample).where(Sample.dataset_id == dataset_id).order_by(Sample.position)).all()
    assert (ds.status, ds.num_samples, ds.num_images) == ("ready", 5, 5)
    blobs = settings.blob_store()
    import hashlib

    for i, row in enumerate(rows):
        assert row.image_names == [f"{i}.png"] and row.record["image"] == f"{i}.png"
        assert row.image_refs == [hashlib.sha256(datagen.image_bytes(i)).hexdigest()] and blobs.verify(row.image_refs[0])


def _in_write_stage(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Track the stage each job is in (`progress` is called by the images stage too)."""
    current: dict[str, str] = {}
    stage = jobs.JobContext.stage

    def tracked(self, name, *a, **kw):  # noqa: ANN001
        current[self.job_id] = name
        return stage(self, name, *a, **kw)

    monkeypatch.setattr(jobs.JobContext, "stage", tracked)
    return current


def test_rows_are_committed_in_chunks_that_leave_sqlites_write_lock_free_between_them(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between two chunks another connection can write at once (the embedded default's other
    jobs renew their leases there), and the dataset still lists no sample."""
    import sqlite3

    from workers.tasks import ingest as task

    monkeypatch.setattr(task, "WRITE_BATCH", 3)
    monkeypatch.setattr(task, "COMMIT_BATCHES", 2)  # 6 rows per transaction: 20 rows, 4 transactions
    dataset, archive = datagen.write_llava_dataset(tmp_path / "ds", 20)
    dataset_id, job_id = stored_dataset(settings, dataset, archive)
    path = settings.resolved_database_url.removeprefix("sqlite:///")
    seen: list[tuple[int, int, str]] = []
    progress, stages = jobs.JobContext.progress, _in_write_stage(monkeypatch)

    def between_chunks(self, done, total=None, **kw):  # noqa: ANN001
        if stages.get(self.job_id) == "write" and done < 20:
            other = sqlite3.connect(path, timeout=0)  # no waiting: a held write lock fails at once
            try:
                other.execute("BEGIN IMMEDIATE")  # takes the write lock, or raises 'database is locked'
                rows = other.execute("SELECT count(*) FROM samples WHERE dataset_id = ?", (dataset_id,)).fetchone()[0]
                status = other.execute("SELECT status FROM datasets WHERE id = ?", (dataset_id,)).fetchone()[0]
                other.rollback()
            finally:
                other.close()
            seen.append((done, rows, status))
        return progress(self, done, total, **kw)

    monkeypatch.setattr(jobs.JobContext, "progress", between_chunks)
    assert ingest(job_id)["status"] == "succeeded"
    assert seen == [(6, 6, "pending"), (12, 12, "pending"), (18, 18, "pending")]
    with get_sessionmaker(settings.resolved_database_url)() as s:
        assert s.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset_id)) == 20
        assert s.get(Dataset, dataset_id).status == "ready"


def test_a_crash_between_chunks_leaves_no_visible_sample_and_the_retry_writes_each_row_once(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.api.routes.datasets import list_samples
    from service.api.pagination import PageParams
    from workers.tasks import ingest as task

    monkeypatch.setattr(task, "WRITE_BATCH", 4)
    monkeypatch.setattr(task, "COMMIT_BATCHES", 1)
    dataset, archive = datagen.write_llava_dataset(tmp_path / "ds", 10)
    dataset_id, job_id = stored_dataset(settings, dataset, archive)
    progress, stages = jobs.JobContext.progress, _in_write_stage(monkeypatch)

    def crash_after_the_second_chunk(self, done, total=None, **kw):  # noqa: ANN001
        if stages.get(self.job_id) == "write" and done == 8:
            raise SystemExit("killed")  # not an Exception: nothing marks the job or dataset failed
        return progress(self, done, total, **kw)

    monkeypatch.setattr(jobs.JobContext, "progress", crash_after_the_second_chunk)
    with pytest.raises(SystemExit):
        ingest(job_id)
    factory = get_sessionmaker(settings.resolved_database_url)
    with factory() as s:
        ds = s.get(Dataset, dataset_id)
        assert ds.status == "pending"
        assert s.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset_id)) == 8
        owner = s.get(Owner, ds.owner_id)
        assert list_samples(dataset_id, s, owner, PageParams(limit=100, after=None))["data"] == []

    monkeypatch.setattr(jobs.JobContext, "progress", progress)
    assert ingest(new_ingest_job(settings, dataset_id))["status"] == "succeeded"
    with factory() as s:
        positions = s.scalars(select(Sample.position).where(Sample.dataset_id == dataset_id)).all()
        assert sorted(positions) == list(range(10))
        owner = s.get(Owner, s.get(Dataset, dataset_id).owner_id)
        assert len(list_samples(dataset_id, s, owner, PageParams(limit=100, after=None))["data"]) == 10


def test_a_stored_blob_touched_during_ingest_is_not_a_changed_source(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blob reuse refreshes a stored blob's mtime (an identical upload, a cache hit): its content is
    verified by sha256, so only a by-reference source is compared before and after its copy."""
    import os

    from workers.tasks import ingest as task

    dataset, archive = datagen.write_llava_dataset(tmp_path / "ds", 4, multi_image=True, text_only=True)
    dataset_id, job_id = stored_dataset(settings, dataset, archive)
    blobs = settings.blob_store()
    store = task._store_images

    def touch_then_store(*args, **kw):
        with get_sessionmaker(settings.resolved_database_url)() as s:
            shas = [s.get(Dataset, dataset_id).file_blob, s.get(Dataset, dataset_id).archive_blob]
        for sha in shas:
            blobs.touch(sha)
            os.utime(blobs.materialize(sha), ns=(0, 10**18))  # whatever touch does, the mtime moves
        return store(*args, **kw)

    monkeypatch.setattr(task, "_store_images", touch_then_store)
    assert ingest(job_id)["status"] == "succeeded"
    with get_sessionmaker(settings.resolved_database_url)() as s:
        assert s.get(Dataset, dataset_id).status == "ready"
