"""Task ``adaptinf.ingest`` (queue ingest): validate a stored upload (or a dataset by reference)
and write its samples. The API only ran cheap checks: this is where each image is decoded, once.
A dataset by reference (job params {"reference": true}) has as its file blob a manifest
{uri, images_uri, format}; after the prefix check again, the source is copied into the job's
workdir (file:// through link-refusing descriptors, a rewrite during the copy is source_changed;
s3:// downloaded) and only the copy is read. A stored upload is content-addressed and verified
by sha256 instead: its file's mtime may change (blob reuse refreshes it) without its content.

All or nothing for users: images go to the content-addressed blob store first (idempotent by
sha256), then the Sample rows are committed a chunk at a time while the dataset stays ``pending``
(its samples are listed only once it is ready), and a last short transaction checks the row count
and marks it ``ready``. A crashed attempt leaves a pending dataset whose rows the retry deletes
first; a retry after success finds the dataset ready and stops.

Why chunks and not one transaction: on SQLite (the embedded default) a write transaction holds the
database's only write lock. One transaction of 300k rows took 23 s, during which every other job's
lease renewal waited behind it; a write longer than the lease cost a live round its lease. Each
chunk is a few hundred milliseconds, and other writers get the lock between chunks.
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
from service.ingest.sources import fetch_source, parse_prefixes, resolve_allowed
from core.statuses import DATASET_PENDING, DATASET_READY
from service.lifecycle import mark_dataset_failed, mark_dataset_ready
from core.blobs import BlobStore
from workers.celery_app import app
from workers.jobs import JobContext, job_task

log = logging.getLogger(__name__)

WRITE_BATCH = 2000  # sample rows per bulk insert: a few MB of JSON
COMMIT_BATCHES = 5  # bulk inserts per transaction: 10k rows, ~0.5-1 s of SQLite's write lock
CANCEL_CHECK_EVERY = 64  # images between cancel checks: cheap, and a cancel lands within a second


class IngestAborted(Exception):
    """The dataset stopped waiting for its rows (something failed it) while they were written."""

    code = "dataset_not_pending"


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
        if dataset.status == DATASET_READY:
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
            # Samples are not kept: the write pass reads them again (memory: one record, not the file).
            validated = validate_upload(records, archive, workdir, limits, image_mode="keep", fmt=fmt,
                                        keep_samples=False)
            ctx.check_cancelled()
            _store_images(validated, blobs, ctx)
            ctx.check_cancelled()
            rows = workdir / "rows.jsonl"
            skill_counts = _spool_rows(dataset_id, validated, skill, rows)
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
    """Every sample row (from the spool), `COMMIT_BATCHES` bulk inserts per transaction, then the
    dataset's ready status in a last short one. False if already ready."""
    if not _clear_partial_rows(session_factory, dataset_id, ctx):
        return False
    batches = _spooled(rows)
    written = 0
    while chunk := list(islice(batches, COMMIT_BATCHES)):
        with session_factory() as session, session.begin():
            # the job row first, then the dataset's, as the reaper and a cancel take them
            ctx.fence(session)  # a worker that lost its lease must not commit
            if _pending_dataset(session, dataset_id) is None:  # deleted or failed meanwhile: raises
                return False
            for batch in chunk:
                bulk_insert(session, Sample, batch)
        written += sum(len(b) for b in chunk)
        ctx.progress(written, validated.num_samples)
        ctx.check_cancelled()
    with session_factory() as session, session.begin():
        ctx.fence(session)
        dataset = _pending_dataset(session, dataset_id)
        if dataset is None:
            return False
        count = session.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset_id))
        if count != validated.num_samples:  # another attempt wrote too (it lost its lease to us)
            raise RuntimeError(f"dataset {dataset_id}: {count} sample rows written, expected {validated.num_samples}")
        mark_dataset_ready(dataset, validated.num_samples, validated.num_images, skill_counts)
    return True


def _pending_dataset(session: Session, dataset_id: str) -> Dataset | None:
    """The dataset, row-locked (PostgreSQL; SQLite has one writer), while it still waits for its
    rows; None once it is ready. LookupError if it was deleted, IngestAborted if it failed."""
    dataset = session.scalars(select(Dataset).where(Dataset.id == dataset_id).with_for_update()).one_or_none()
    if dataset is None:
        raise LookupError(f"dataset {dataset_id} was deleted during ingest")
    if dataset.status == DATASET_READY:
        return None
    if dataset.status != DATASET_PENDING:
        raise IngestAborted(f"dataset {dataset_id} became {dataset.status} during ingest")
    return dataset


def _clear_partial_rows(session_factory: sessionmaker[Session], dataset_id: str, ctx: JobContext) -> bool:
    """Delete the rows an earlier, crashed attempt committed, a chunk per transaction (a short
    write lock each, as for the inserts). False if the dataset is ready already."""
    while True:
        with session_factory() as session, session.begin():
            ctx.fence(session)
            if _pending_dataset(session, dataset_id) is None:
                return False
            ids = select(Sample.id).where(Sample.dataset_id == dataset_id).limit(WRITE_BATCH * COMMIT_BATCHES)
            if not session.execute(delete(Sample).where(Sample.id.in_(ids.scalar_subquery()))).rowcount:
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
