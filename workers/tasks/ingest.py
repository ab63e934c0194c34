"""Task ``adaptinf.ingest`` (queue ingest): validate a stored upload and write its samples.

All or nothing: images go to the content-addressed blob store first (idempotent by sha256), then
every Sample row and the dataset's ``ready`` status are committed in one transaction. A crashed
attempt therefore leaves no rows, and a retry after success finds the dataset ready and stops.
"""
from __future__ import annotations

import logging
import shutil
from collections import Counter
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.bulk import bulk_insert
from service.db.models import Dataset, Sample
from service.ingest import IngestError, ValidatedDataset, limits_for, validate_upload
from service.lifecycle import mark_dataset_failed, mark_dataset_ready
from core.blobs import BlobStore
from workers.celery_app import app
from workers.jobs import JobContext, job_task

log = logging.getLogger(__name__)

CANCEL_CHECK_EVERY = 64  # images between cancel checks: cheap, and a cancel lands within a second


class StoredUploadError(Exception):
    """The upload's blobs are missing or no longer match their sha256."""

    code = "upload_corrupt"


@job_task(app, kind="ingest", queue="ingest")
def ingest(ctx: JobContext) -> dict[str, Any]:
    """Ingest the dataset named by the job's params {"dataset_id"}."""
    blobs = ctx.settings.blob_store()
    return ingest_dataset(ctx.session_factory, blobs, ctx.settings, ctx.params["dataset_id"], ctx)


def ingest_dataset(
    session_factory: sessionmaker[Session], blobs: BlobStore, settings: Settings, dataset_id: str, ctx: JobContext
) -> dict[str, Any]:
    """Validate the stored upload again, store its images, write every sample; return the counts."""
    with session_factory() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise LookupError(f"dataset {dataset_id} does not exist (deleted before ingest?)")
        if dataset.status == "ready":
            return _already_ingested(session, dataset)
        file_blob, archive_blob, skill = dataset.file_blob, dataset.archive_blob, dataset.skill

    ctx.plan(["parse", "images", "write"])
    ctx.stage("parse")
    for sha in filter(None, (file_blob, archive_blob)):
        if not blobs.verify(sha):
            raise StoredUploadError(f"stored upload blob {sha} is missing or corrupt; upload the dataset again")
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    # Leftovers of a crashed attempt on this dataset: no one else works on it while we hold the lease.
    for stale in settings.work_dir.glob(f"ingest-{dataset_id}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"ingest-{dataset_id}-", dir=settings.work_dir))
    try:
        try:
            archive = blobs.materialize(archive_blob) if archive_blob else None
            validated = validate_upload(
                blobs.materialize(file_blob), archive, workdir, limits_for(settings.max_upload_bytes, settings.max_record_bytes), image_mode="keep"
            )
        except IngestError as exc:
            _mark_failed(session_factory, dataset_id, exc.to_dict())
            raise
        ctx.check_cancelled()
        _store_images(validated, blobs, ctx)
        ctx.check_cancelled()
        ctx.stage("write", total=validated.num_samples, unit="samples")
        written = _write_samples(session_factory, dataset_id, validated, skill, ctx)
        ctx.progress(validated.num_samples, validated.num_samples)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"dataset_id": dataset_id, "num_samples": validated.num_samples, "num_images": validated.num_images,
            "written": written}


def _store_images(validated: ValidatedDataset, blobs: BlobStore, ctx: JobContext) -> None:
    images = list(validated.images.values())
    ctx.stage("images", total=len(images), unit="images")
    for k, image in enumerate(images, 1):
        ref = blobs.put_file(image.path, move=True)  # a same-sha blob is kept (dedup), or replaced if corrupt
        if ref.sha256 != image.sha256:
            raise StoredUploadError(f"image {image.name!r} changed while being stored")
        ctx.progress(k, len(images))
        if k % CANCEL_CHECK_EVERY == 0:
            ctx.check_cancelled()


def _sample_rows(dataset_id: str, validated: ValidatedDataset, skill: str | None) -> list[dict[str, Any]]:
    """One samples row per record; a record's own skill wins over the dataset's."""
    return [
        {
            "dataset_id": dataset_id,
            "position": position,
            "key": s.key,
            "content_hash": validated.content_hashes[s.key],
            "record": s.record,
            "messages": [{"role": m.role, "content": m.content} for m in s.messages],
            "image_refs": [img.sha256 for img in validated.images_of(s)],
            "image_names": list(s.image_names),
            "skill": s.skill or skill,
        }
        for position, s in enumerate(validated.samples)
    ]


def _write_samples(
    session_factory: sessionmaker[Session], dataset_id: str, validated: ValidatedDataset, skill: str | None,
    ctx: JobContext,
) -> bool:
    """One transaction: every sample row and the dataset's ready status. False if already ready."""
    rows = _sample_rows(dataset_id, validated, skill)  # built before the transaction: keep it short
    skill_counts = dict(sorted(Counter(r["skill"] for r in rows if r["skill"]).items()))
    with session_factory() as session, session.begin():
        # The row lock serialises two attempts racing here (PostgreSQL; SQLite has one writer).
        dataset = session.scalars(select(Dataset).where(Dataset.id == dataset_id).with_for_update()).one_or_none()
        if dataset is None:
            raise LookupError(f"dataset {dataset_id} was deleted during ingest")
        if dataset.status == "ready":
            return False
        ctx.fence(session)  # a worker that lost its lease must not commit
        session.execute(delete(Sample).where(Sample.dataset_id == dataset_id))  # nothing, unless hand-edited
        bulk_insert(session, Sample, rows)
        mark_dataset_ready(dataset, validated.num_samples, validated.num_images, skill_counts)
    return True


def _already_ingested(session: Session, dataset: Dataset) -> dict[str, Any]:
    count = session.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset.id))
    if count != dataset.num_samples:
        raise RuntimeError(f"dataset {dataset.id} is ready with {count} sample rows, expected {dataset.num_samples}")
    return {"dataset_id": dataset.id, "num_samples": dataset.num_samples, "num_images": dataset.num_images,
            "written": False}


def _mark_failed(session_factory: sessionmaker[Session], dataset_id: str, error: dict[str, Any]) -> None:
    with session_factory() as session, session.begin():
        mark_dataset_failed(session, dataset_id, error)
