"""Task ``adaptinf.ingest`` (queue ingest): validate a stored upload (or a dataset by reference)
and write its samples. The API only ran cheap checks: this is where each image is decoded, once.
A dataset by reference (job params {"reference": true}) has as its file blob a manifest
{uri, images_uri, format}; the source is read where it names, after the prefix check again.

All or nothing: images go to the content-addressed blob store first (idempotent by sha256), then
every Sample row and the dataset's ``ready`` status are committed in one transaction. A crashed
attempt therefore leaves no rows, and a retry after success finds the dataset ready and stops.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.bulk import bulk_insert
from service.db.models import Dataset, Sample
from service.ingest import IngestError, IngestLimits, ValidatedDataset, limits_for, validate_upload
from service.ingest.formats import content_hash
from service.ingest.sources import fetch_source, parse_prefixes, resolve_allowed, source_stamp
from service.lifecycle import mark_dataset_failed, mark_dataset_ready
from core.blobs import BlobStore
from workers.celery_app import app
from workers.jobs import JobContext, job_task

log = logging.getLogger(__name__)

WRITE_BATCH = 2000  # sample rows per bulk insert: a few MB of JSON
CANCEL_CHECK_EVERY = 64  # images between cancel checks: cheap, and a cancel lands within a second


class StoredUploadError(Exception):
    """The upload's blobs are missing or no longer match their sha256."""

    code = "upload_corrupt"


@job_task(app, kind="ingest", queue="ingest")
def ingest(ctx: JobContext) -> dict[str, Any]:
    """Ingest the dataset named by the job's params {"dataset_id"}."""
    blobs = ctx.settings.blob_store()
    return ingest_dataset(ctx.session_factory, blobs, ctx.settings, ctx.params["dataset_id"], ctx,
                          by_reference=bool(ctx.params.get("reference")))


def ingest_dataset(
    session_factory: sessionmaker[Session], blobs: BlobStore, settings: Settings, dataset_id: str, ctx: JobContext,
    *, by_reference: bool = False,
) -> dict[str, Any]:
    """Validate the stored upload (or the source its reference names), store its images, write
    every sample; return the counts."""
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
        limits = limits_for(settings.max_upload_bytes, settings.max_record_bytes)
        try:
            if by_reference:
                records, archive, fmt = _fetch_reference(blobs, file_blob, settings, limits, workdir)
            else:
                records, fmt = blobs.materialize(file_blob), None
                archive = blobs.materialize(archive_blob) if archive_blob else None
            stamp = [source_stamp(p) for p in (records, archive) if p is not None]
            # Samples are not kept: the write pass reads them again (memory: one record, not the file).
            validated = validate_upload(records, archive, workdir, limits, image_mode="keep", fmt=fmt,
                                        keep_samples=False)
            ctx.check_cancelled()
            _store_images(validated, blobs, ctx)
            ctx.check_cancelled()
            rows = workdir / "rows.jsonl"
            skill_counts = _spool_rows(dataset_id, validated, skill, rows)
            if stamp != [source_stamp(p) for p in (records, archive) if p is not None]:
                raise IngestError("source_changed", "the dataset's source changed while it was being ingested; "
                                  "ingest it again once it stays put")
        except IngestError as exc:
            _mark_failed(session_factory, dataset_id, exc.to_dict())
            raise
        ctx.stage("write", total=validated.num_samples, unit="samples")
        written = _write_samples(session_factory, dataset_id, validated, rows, skill_counts, ctx)
        ctx.progress(validated.num_samples, validated.num_samples)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"dataset_id": dataset_id, "num_samples": validated.num_samples, "num_images": validated.num_images,
            "written": written}


def _fetch_reference(blobs: BlobStore, manifest_blob: str, settings: Settings, limits: IngestLimits,
                     workdir: Path) -> tuple[Path, Path | None, str | None]:
    """(records, images archive, format) of a dataset by reference, read where the manifest says.
    The prefix check runs again here: the setting, or a link on the way, may have changed since."""
    with blobs.open(manifest_blob) as f:
        manifest = json.loads(f.read())
    prefixes = parse_prefixes(settings.ingest_allowed_prefixes)
    ref = resolve_allowed(manifest["uri"], prefixes, "uri")
    records = fetch_source(ref, workdir / "source", "uri", limits, settings.s3_endpoint_url)
    archive = None
    if manifest.get("images_uri"):
        images = resolve_allowed(manifest["images_uri"], prefixes, "images_uri")
        archive = fetch_source(images, workdir / "images-source", "images_uri", limits, settings.s3_endpoint_url)
    return records, archive, manifest.get("format")


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


def _spool_rows(dataset_id: str, validated: ValidatedDataset, skill: str | None, path: Path) -> dict[str, int]:
    """Read the samples again and write their rows to `path` (JSON Lines); the skill counts.

    Spooled, not kept: memory holds one record, and the transaction that inserts them stays short
    (it only reads the spool). A record's own skill wins over the dataset's."""
    counts: Counter[str] = Counter()
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for position, s in enumerate(validated.reader.samples()):
            try:
                images = validated.images_of(s)
            except KeyError:  # an image the first read did not see: the source was rewritten
                raise IngestError("source_changed", f"{s.describe()}: the dataset's source changed while it was "
                                  "being ingested; ingest it again once it stays put") from None
            sample_skill = s.skill or skill
            counts.update([sample_skill] if sample_skill else [])
            row = {
                "dataset_id": dataset_id,
                "position": position,
                "key": s.key,
                "content_hash": content_hash(s, [img.sha256 for img in images]),
                "record": s.record,
                "messages": [{"role": m.role, "content": m.content} for m in s.messages],
                "image_refs": [img.sha256 for img in images],
                "image_names": list(s.image_names),
                "skill": sample_skill,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    if n != validated.num_samples:
        raise IngestError("source_changed", "the dataset's source changed while it was being ingested; ingest it "
                          "again once it stays put")
    return dict(sorted(counts.items()))


def _spooled(path: Path) -> Iterator[list[dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        while batch := [json.loads(line) for line in islice(f, WRITE_BATCH)]:
            yield batch


def _write_samples(
    session_factory: sessionmaker[Session], dataset_id: str, validated: ValidatedDataset, rows: Path,
    skill_counts: dict[str, int], ctx: JobContext,
) -> bool:
    """One transaction: every sample row (from the spool, a batch at a time) and the dataset's
    ready status. False if already ready."""
    with session_factory() as session, session.begin():
        # The row lock serialises two attempts racing here (PostgreSQL; SQLite has one writer).
        dataset = session.scalars(select(Dataset).where(Dataset.id == dataset_id).with_for_update()).one_or_none()
        if dataset is None:
            raise LookupError(f"dataset {dataset_id} was deleted during ingest")
        if dataset.status == "ready":
            return False
        ctx.fence(session)  # a worker that lost its lease must not commit
        session.execute(delete(Sample).where(Sample.dataset_id == dataset_id))  # nothing, unless hand-edited
        for batch in _spooled(rows):
            bulk_insert(session, Sample, batch)
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
