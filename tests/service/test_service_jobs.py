"""Job records: creation, events, serialisation (the transitions: test_lifecycle.py)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.auth import create_owner
from service.db.models import Job, JobEvent, utcnow
from service.db.session import session_scope
from service.jobs import add_event, create_job, job_to_dict


@pytest.fixture
def owner_id(database_url):
    with session_scope(database_url) as session:
        return create_owner(session, "dora").id


def _job(database_url, owner_id, status="queued", kind="round", params=None) -> str:
    with session_scope(database_url) as session:
        job = create_job(session, owner_id, kind, "select", params or {"x": 1})
        job.status = status
        return job.id


def test_create_job_and_events(database_url, owner_id):
    with session_scope(database_url) as session:
        job = create_job(session, owner_id, "round", "gpu", {"pool_id": "pool_1"}, max_attempts=5)
        add_event(session, job.id, "stage features", data={"shards": 4})
        with pytest.raises(ValueError, match="level"):
            add_event(session, job.id, "x", level="loud")
        job_id = job.id
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert (job.status, job.queue, job.max_attempts, job.attempts) == ("queued", "gpu", 5, 0)
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        assert [e.message for e in events] == ["round job created", "stage features"]
        assert events[1].data == {"shards": 4}
        d = job_to_dict(job)
        assert d["progress"] == {"done": 0, "total": 0, "unit": None, "rate": None, "eta_seconds": None}
        assert d["overall"] is None and d["metrics"] is None and d["error"] is None
        assert d["created_at"].endswith("Z") and d["finished_at"] is None
        assert set(d) >= {"id", "status", "stage", "attempts", "max_attempts", "result", "started_at"}


def test_job_to_dict_reads_naive_sqlite_datetimes_as_utc(database_url, owner_id):
    job_id = _job(database_url, owner_id, status="succeeded")
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        job.finished_at = utcnow().replace(tzinfo=None)
        assert job_to_dict(job)["finished_at"].endswith("Z")
