"""The reaper: re-enqueues jobs whose worker died and jobs whose message was lost (the state
changes, and the dataset or round that follows, are `service.lifecycle`'s).

Safe to run in every worker at once: each change is a conditional UPDATE on the state the reaper
read, so of several reapers exactly one acts on a job, and only that one re-sends it.
"""
from __future__ import annotations

import logging
import random
import threading
from datetime import datetime, timedelta

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from core.statuses import ACTIVE, QUEUED
from service.broker import enqueue_job
from service.config import Settings
from service.db.session import get_sessionmaker
from service.db.models import Job
from service.jobs import add_event
from service.lifecycle import give_up_unclaimed, reap_expired_job
from workers.leases import utcnow

log = logging.getLogger(__name__)


def lost_message_grace(settings: Settings) -> float:
    """Seconds a queued job may wait unclaimed before its message is presumed lost and re-sent.

    A job merely waiting behind others gets one duplicate message per grace period at worst;
    duplicates cost one refused lease each.
    """
    return max(4 * settings.lease_seconds, 4 * settings.reaper_interval_seconds)


# Plain rows, not ORM objects: a rollback would expire objects and re-read the *current* state,
# and the conditional updates of the lifecycle must compare against the state this pass acted on.
_COLUMNS = (Job.id, Job.kind, Job.queue, Job.status, Job.attempts, Job.max_attempts, Job.lease_owner, Job.cancel_requested)


def _reap_one_expired(session: Session, settings: Settings, job: Row, now: datetime) -> bool:
    status = reap_expired_job(session, job, now, settings.lease_seconds)
    if status is None:
        return False
    session.commit()
    if status == QUEUED:
        enqueue_job(settings, job.id, job.kind, job.queue)  # after the commit, so the worker sees queued
    return True


def reap_expired(session: Session, settings: Settings, now: datetime | None = None) -> list[str]:
    """One pass; returns the ids of the jobs it re-queued, re-sent, failed or cancelled.

    Running jobs whose lease expired go back to queued and are re-sent while attempts <
    max_attempts, else fail with code lease_expired; an expired job that was being cancelled
    ends cancelled. Queued jobs unclaimed for `lost_message_grace` are re-sent (or failed with
    max_attempts once their attempts are spent). Commits each job's change on its own and
    enqueues only after that commit.
    """
    now = now or utcnow()
    touched: list[str] = []
    expired = session.execute(select(*_COLUMNS).where(Job.status.in_(ACTIVE), Job.lease_expires_at < now)).all()
    session.commit()  # end the read: each job below gets its own short write transaction
    for job in expired:
        if _reap_one_expired(session, settings, job, now):
            touched.append(job.id)
        session.rollback()

    cutoff = now - timedelta(seconds=lost_message_grace(settings))
    # heartbeat_at of a queued job is when it was last (re-)sent; the API leaves it unset.
    last_sent = func.coalesce(Job.heartbeat_at, Job.created_at)
    stale = session.execute(select(*_COLUMNS).where(Job.status == "queued", last_sent < cutoff)).all()
    session.commit()
    for job in stale:
        if _resend_one_stale(session, settings, job, now, last_sent < cutoff):
            touched.append(job.id)
        session.rollback()
    return touched


def _resend_one_stale(session: Session, settings: Settings, job: Row, now: datetime, still_stale: object) -> bool:
    if job.attempts >= job.max_attempts:
        if not give_up_unclaimed(session, job, now):
            return False
        session.commit()
        return True
    stmt = update(Job).where(Job.id == job.id, Job.status == "queued", still_stale).values(heartbeat_at=now)
    if session.execute(stmt.execution_options(synchronize_session=False)).rowcount != 1:
        return False  # picked up meanwhile, or another reaper re-sent it
    add_event(session, job.id, "not picked up in time; message re-sent", level="warning")
    session.commit()
    enqueue_job(settings, job.id, job.kind, job.queue)
    return True


class ReaperThread(threading.Thread):
    """Runs `reap_expired` every `reaper_interval_seconds` (with jitter) until stopped."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="adaptinf-reaper", daemon=True)
        self.settings = settings
        self._stop_event = threading.Event()

    def run(self) -> None:
        factory = get_sessionmaker(self.settings.resolved_database_url)
        interval = self.settings.reaper_interval_seconds
        # Jitter spreads the passes of many workers started together.
        while not self._stop_event.wait(interval * random.uniform(0.8, 1.2)):
            try:
                with factory() as session:
                    touched = reap_expired(session, self.settings)
                if touched:
                    log.warning("reaper: acted on jobs %s", ", ".join(touched))
            except Exception:  # noqa: BLE001 - a DB blip must not stop the reaper
                log.exception("reaper pass failed; next in %ss", interval)

    def stop(self) -> None:
        self._stop_event.set()


def main() -> int:
    """`python -m workers.reaper`: one pass with the environment's settings (what `adaptinf reap` runs)."""
    from service.config import get_settings
    from service.db.session import session_scope

    settings = get_settings()
    with session_scope(settings.resolved_database_url) as session:
        touched = reap_expired(session, settings)
    print("\n".join(touched) if touched else "nothing to reap", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
