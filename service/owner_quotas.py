"""Per-owner caps on work in flight: rounds queued or running, and unfinished jobs. No web framework here.

A round or an upload first locks the owner (`lock_owner`), then counts and inserts in the same
transaction, so two concurrent requests of one owner cannot both pass a cap with one place left.
The API answers `QuotaExceeded` with a 429: the request is fine and will succeed once some of the
owner's own work has finished, which is what 429 (and a client's back-off) means.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.statuses import UNFINISHED
from service.config import Settings
from service.db.locks import lock_row
from service.db.models import Job, Owner, Pool, Round


class QuotaExceeded(Exception):
    """The owner has as much work in flight as the operator allows."""

    def __init__(self, detail: str, *, limit: str, setting: str, value: int) -> None:
        super().__init__(detail)
        self.detail, self.limit, self.setting, self.value = detail, limit, setting, value


def lock_owner(session: Session, owner_id: str) -> None:
    """Hold the owner's row until the transaction ends, serialising this owner's quota checks."""
    lock_row(session, Owner, owner_id)


def active_rounds(session: Session, owner_id: str) -> int:
    stmt = (select(func.count()).select_from(Round).join(Pool, Pool.id == Round.pool_id)
            .where(Pool.owner_id == owner_id, Round.status.in_(UNFINISHED)))
    return int(session.scalar(stmt) or 0)


def unfinished_jobs(session: Session, owner_id: str) -> int:
    """Ingest and round jobs not yet ended; a round's stages and shards are its own job's, not counted."""
    stmt = (select(func.count()).select_from(Job)
            .where(Job.owner_id == owner_id, Job.parent_id.is_(None), Job.status.in_(UNFINISHED)))
    return int(session.scalar(stmt) or 0)


def _check_jobs(session: Session, owner_id: str, settings: Settings) -> None:
    cap = settings.max_queued_jobs_per_owner
    if (n := unfinished_jobs(session, owner_id)) >= cap:
        raise QuotaExceeded(
            f"you have {n} unfinished jobs, the most this server allows per owner "
            f"(ADAPTINF_MAX_QUEUED_JOBS_PER_OWNER={cap}); wait for some to finish or cancel one",
            limit="max_queued_jobs_per_owner", setting="ADAPTINF_MAX_QUEUED_JOBS_PER_OWNER", value=cap)


def check_new_round(session: Session, owner_id: str, settings: Settings) -> None:
    """Lock the owner, then raise QuotaExceeded if one more round (and its job) is over a cap."""
    lock_owner(session, owner_id)
    cap = settings.max_active_rounds_per_owner
    if (n := active_rounds(session, owner_id)) >= cap:
        raise QuotaExceeded(
            f"you have {n} rounds queued or running, the most this server allows per owner "
            f"(ADAPTINF_MAX_ACTIVE_ROUNDS_PER_OWNER={cap}); wait for one to finish or cancel its job",
            limit="max_active_rounds_per_owner", setting="ADAPTINF_MAX_ACTIVE_ROUNDS_PER_OWNER", value=cap)
    _check_jobs(session, owner_id, settings)


def check_new_ingest(session: Session, owner_id: str, settings: Settings, *, lock: bool = True) -> None:
    """Lock the owner (unless `lock` is False: a first check, no lock held after it), then raise
    QuotaExceeded if one more ingest job is over the cap."""
    if lock:
        lock_owner(session, owner_id)
    _check_jobs(session, owner_id, settings)
