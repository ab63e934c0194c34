"""Blob garbage collection: remove blobs nothing in SQL refers to any more.

Blobs are content-addressed and shared (two datasets with the same image hold one blob), so
deleting a dataset, a pool or a failed round's rows leaves blobs behind; `adaptinf gc` reclaims
them.

Safety rests on two rules:
- Every blob the service keeps is named by a typed column, and the reference set is all of them:
  datasets (records file, images archive), samples' image_refs, feature shards, checkpoints,
  index versions, and round_blobs (what a round's stages store: candidate plan, adapters before
  finalize, pruning decision, cluster view, index version). Nothing is guessed from JSON.
- A grace period: a blob is a candidate only when its file is older than `grace` (writers
  refresh the mtime of a blob they reuse, see `BlobStore`), and its mtime is checked again right
  before unlinking. A writer that stores a blob and commits the row naming it within the grace
  period is never raced; the default of a day is far longer than any transaction.

Candidates are listed before the references are read, so a reference committed while the
collector runs is seen.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.blobs import BlobNotFound, BlobStore
from core.statuses import DATASET_FAILED
from service.db.models import Checkpoint, Dataset, FeatureShard, IndexVersion, RoundBlob, Sample

_BATCH = 10_000

#: Every column that names one blob (NULL where a row has none).
BLOB_COLUMNS = (Dataset.file_blob, Dataset.archive_blob, FeatureShard.blob, Checkpoint.blob, IndexVersion.blob,
                RoundBlob.blob)


@dataclass
class GcReport:
    """What one pass found: unreferenced blobs older than the grace period, and stale temp files."""

    scanned: int = 0
    referenced: int = 0
    unreferenced: list[str] = field(default_factory=list)
    unreferenced_bytes: int = 0
    stale_tmp: list[str] = field(default_factory=list)
    deleted: int = 0


def referenced_blobs(session: Session) -> set[str]:
    """Every sha256 a typed column of the database names (see the module docstring)."""
    refs: set[str] = set()
    for column in BLOB_COLUMNS:
        refs.update(v for v in session.scalars(select(column).distinct()) if v)
    # A failed dataset's rows (an ingest cancelled or crashed mid-write commits some) are listed
    # nowhere and read by nothing; they only wait for the dataset's deletion, so they keep no image.
    live = select(Sample.image_refs).join(Dataset, Dataset.id == Sample.dataset_id).where(
        Dataset.status != DATASET_FAILED)
    for image_refs in session.scalars(live.execution_options(yield_per=_BATCH)):
        refs.update(image_refs or ())
    return refs


def collect(session: Session, blobs: BlobStore, *, grace_seconds: float, delete: bool) -> GcReport:
    """One pass. With `delete=False` only reports what a deleting pass would remove."""
    cutoff = time.time() - grace_seconds
    report = GcReport()
    listed = list(blobs.list_blobs())
    report.scanned = len(listed)
    refs = referenced_blobs(session)  # read after listing: a reference committed meanwhile counts
    report.referenced = sum(1 for info in listed if info.sha256 in refs)
    for info in listed:
        if info.mtime >= cutoff or info.sha256 in refs:
            continue
        try:
            now = blobs.stat(info.sha256)
        except BlobNotFound:
            continue
        if now.mtime >= cutoff:  # a writer reused it since the listing
            continue
        report.unreferenced.append(info.sha256)
        report.unreferenced_bytes += now.size
        if delete:
            blobs.delete(info.sha256)
            report.deleted += 1
    report.stale_tmp = blobs.sweep_tmp(cutoff, delete=delete)
    return report
