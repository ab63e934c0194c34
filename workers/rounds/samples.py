"""SQL sample rows → `EngineSample`s whose images are the blob store's files."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.samples import EngineSample, Message
from service.db.models import Sample
from core.blobs import BlobStore

# IN-lists stay well under the bind-parameter limits of SQLite (32766) and PostgreSQL (65535).
ID_CHUNK = 5000


def engine_sample(row: Sample, blobs: BlobStore) -> EngineSample:
    """One sample row as the engine consumes it; a missing image blob fails loudly here."""
    images = tuple(blobs.materialize(sha) for sha in row.image_refs)
    for sha, path in zip(row.image_refs, images):
        if not path.is_file():
            raise FileNotFoundError(f"sample {row.id}: image blob {sha} is missing from the blob store")
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
