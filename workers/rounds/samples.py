"""SQL sample rows → `EngineSample`s whose images are the blob store's files."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import verified
from core.blobs import BlobNotFound, BlobStore
from core.samples import EngineSample, Message
from service.db.models import Sample

# IN-lists stay well under the bind-parameter limits of SQLite (32766) and PostgreSQL (65535).
ID_CHUNK = 5000


class SampleImageDamaged(Exception):
    """An image of a sample is missing from the blob store or no longer hashes to its name."""

    def __init__(self, row: Sample, sha256: str, *, missing: bool) -> None:
        self.code = "blob_missing" if missing else "blob_corrupt"
        what = "is missing from the blob store" if missing else "no longer matches its sha256"
        super().__init__(
            f"sample {row.id} of dataset {row.dataset_id}: its image blob {sha256} {what}. Upload that dataset "
            f"again (the same files): storing the same content replaces the damaged blob; then start a new round")


def _image(row: Sample, sha256: str, blobs: BlobStore) -> Path:
    """The image's local file, checked against its sha256 first. Without the check a damaged
    image is a silent error or a vague one (measured with PIL: a JPEG with one byte flipped
    decodes without complaint, into wrong pixels; such a PNG fails with an OSError that names
    neither the sample nor the blob). The hash is memoised per version of the file
    (core/verified.py): one hash per image and process, not one per stage."""
    try:
        path = blobs.materialize(sha256)
    except BlobNotFound as exc:  # an S3 object that fails its hash is a BlobCorrupt, a kind of BlobNotFound
        raise SampleImageDamaged(row, sha256, missing=not blobs.exists(sha256)) from exc
    if not verified.sha256_matches(path, sha256):
        raise SampleImageDamaged(row, sha256, missing=False)
    return path


def engine_sample(row: Sample, blobs: BlobStore) -> EngineSample:
    """One sample row as the engine consumes it; a missing or corrupt image blob fails loudly
    here, naming the sample, the blob and the way out."""
    images = tuple(_image(row, sha, blobs) for sha in row.image_refs)
    messages = tuple(Message(role=m["role"], content=m["content"]) for m in row.messages)
    return EngineSample(id=int(row.id), messages=messages, images=images)


def load_engine_samples(session: Session, ids: Sequence[int], blobs: BlobStore) -> list[EngineSample]:
    """The samples `ids`, in that order; raises LookupError naming any id without a row."""
    rows: dict[int, Sample] = {}
    for k in range(0, len(ids), ID_CHUNK):
        chunk = [int(i) for i in ids[k : k + ID_CHUNK]]
        rows.update((r.id, r) for r in session.scalars(select(Sample).where(Sample.id.in_(chunk))))
    missing = [int(i) for i in ids if int(i) not in rows]
    if missing:
        raise LookupError(f"samples {missing[:10]} no longer exist (dataset deleted during the round?)")
    return [engine_sample(rows[int(i)], blobs) for i in ids]


def load_dataset_samples(session: Session, dataset_id: str, blobs: BlobStore) -> list[EngineSample]:
    """Every sample of a dataset, in file order (evaluation sets)."""
    rows = session.scalars(select(Sample).where(Sample.dataset_id == dataset_id).order_by(Sample.position)).all()
    return [engine_sample(r, blobs) for r in rows]
