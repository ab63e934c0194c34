"""Blob garbage collection: remove blobs nothing in SQL refers to any more.

Blobs are content-addressed and shared (two datasets with the same image hold one blob), so
deleting a dataset or a failed round leaves its blobs behind; `adaptinf gc` reclaims them.

Safety rests on two rules:
- The reference set is conservative: the blob columns (datasets, samples' images, feature
  shards, checkpoints) and every 64-hex string anywhere in the JSON of jobs, rounds and job
  events (where round stages keep their plan and decision blobs). Anything that looks like a
  reference keeps its blob.
- A grace period: a blob is a candidate only when its file is older than `grace` (writers
  refresh the mtime of a blob they reuse, see `BlobStore`), and its mtime is checked again right
  before unlinking. A writer that stores a blob and commits the row naming it within the grace
  period is never raced; the default of a day is far longer than any transaction.

Candidates are listed before the references are read, so a reference committed while the
collector runs is seen.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Checkpoint, Dataset, FeatureShard, Job, JobEvent, Round, Sample
from core.blobs import BlobNotFound, BlobStore

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BATCH = 10_000


@dataclass
class GcReport:
    """What one pass found: unreferenced blobs older than the grace period, and stale temp files."""

    scanned: int = 0
    referenced: int = 0
    unreferenced: list[str] = field(default_factory=list)
    unreferenced_bytes: int = 0
    stale_tmp: list[str] = field(default_factory=list)
    deleted: int = 0


def _json_refs(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if _HEX64.match(value):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _json_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_refs(v)


def referenced_blobs(session: Session) -> set[str]:
    """Every sha256 the database may still need (see the module docstring)."""
    refs: set[str] = set()
    for column in (Dataset.file_blob, Dataset.archive_blob, FeatureShard.blob, Checkpoint.blob):
        refs.update(v for v in session.scalars(select(column)) if v)
    for image_refs in session.scalars(select(Sample.image_refs).execution_options(yield_per=_BATCH)):
        refs.update(image_refs or ())
    for columns in ((Job.params, Job.result), (Round.params, Round.result), (JobEvent.data,)):
        for row in session.execute(select(*columns).execution_options(yield_per=_BATCH)):
            for value in row:
                refs.update(_json_refs(value))
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
