"""Job records: creation and events (transitions: test_lifecycle.py; JSON form: test_schemas.py)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from service.auth import create_owner
from service.db.models import Job, JobEvent
from service.db.session import session_scope
from service.jobs import add_event, create_job


@pytest.fixture
def owner_id(database_url):
    with session_scope(database_url) as session:
        return create_owner(session, "dora").id


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
