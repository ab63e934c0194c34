"""A pool's FAISS index versions (pool config `pool_index`): find one, check it, ask for a rebuild.

No web framework here. A version is a blob whose sha256 SQL recorded; a download checks it first
and never serves bytes that fail it. A damaged version is rebuilt from its round's feature shards
by an `index.rebuild` job on the select queue (workers/tasks/index.py), one per version at a time:
`index_versions.rebuild_job_id` names the latest, and a request made while it is unfinished joins
it instead of queueing another.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.blobs import BlobNotFound, BlobStore
from core.statuses import FAILED, UNFINISHED
from service.db.locks import lock_row
from service.db.models import IndexVersion, Job, Pool, Round
from service.jobs import create_job
from service.domain_errors import DomainError

REBUILD_KIND = "index.rebuild"
REBUILD_QUEUE = "select"  # the pool's single writer queue (DESIGN §3: index writes)
#: The code a rebuild fails with when the round's shards cannot give the version back (a shard or
#: the pruning decision is damaged too, or the rows differ); the engine's IndexRowsMismatch uses it.
SOURCE_DAMAGED = "index_source_damaged"


class NoIndex(DomainError):
    """The pool keeps no index, or none for the round asked for: a 404."""


@dataclass(frozen=True)
class Located:
    """An index version with the number of its round."""

    version: IndexVersion
    round_number: int


def find_version(session: Session, pool: Pool, round_number: int | None = None) -> Located:
    """The pool's index version of round `round_number` (None: the latest); NoIndex when none."""
    stmt = (select(IndexVersion, Round.number).join(Round, Round.id == IndexVersion.round_id)
            .where(IndexVersion.pool_id == pool.id))
    if round_number is not None:
        stmt = stmt.where(Round.number == round_number)
    row = session.execute(stmt.order_by(Round.number.desc()).limit(1)).first()
    if row is not None:
        return Located(row[0], int(row[1]))
    if not (pool.config or {}).get("pool_index"):
        raise NoIndex(f"pool {pool.id} keeps no FAISS index: its config has pool_index false (the default). Create "
                      f"a pool with {{\"config\": {{\"pool_index\": true}}}}; each of its rounds then stores an index "
                      f"of the pool's samples", code="no_index")
    if round_number is not None:
        raise NoIndex(f"pool {pool.id} has no index version of round {round_number} (only succeeded rounds store "
                      f"one; GET /v1/pools/{pool.id}/index without ?round gives the latest)", code="no_index")
    raise NoIndex(f"pool {pool.id} has no index version yet: the first succeeded round stores one",
                  code="no_index")


def damage(blobs: BlobStore, version: IndexVersion) -> str | None:
    """None when the version's blob is whole; else "missing" or "corrupt"."""
    try:
        if blobs.size(version.blob) == version.size_bytes and version.blob == version.sha256 \
                and blobs.verify(version.blob):
            return None
    except BlobNotFound:
        return "missing"
    return "corrupt" if blobs.exists(version.blob) else "missing"


def last_rebuild(session: Session, version: IndexVersion) -> Job | None:
    return session.get(Job, version.rebuild_job_id) if version.rebuild_job_id else None


def is_unrecoverable(job: Job | None) -> bool:
    """Whether the version's latest rebuild found its source damaged too (asking again cannot help)."""
    return job is not None and job.status == FAILED and (job.error or {}).get("code") == SOURCE_DAMAGED


def request_rebuild(session: Session, version: IndexVersion, owner_id: str, *, max_attempts: int = 3) -> tuple[Job, bool]:
    """The version's unfinished rebuild job, or a new one (flushed, not committed): (job, created).

    The version's row is locked first, so two requests racing here queue one job; the caller
    commits, then sends a created job to the broker.
    """
    lock_row(session, IndexVersion, version.id)
    session.refresh(version)
    job = last_rebuild(session, version)
    if job is not None and job.status in UNFINISHED:
        return job, False
    job = create_job(session, owner_id, REBUILD_KIND, REBUILD_QUEUE, {"index_version_id": version.id},
                     max_attempts=max_attempts)
    version.rebuild_job_id = job.id
    session.flush()
    return job, True
