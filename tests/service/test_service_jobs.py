"""Job domain functions: creation, events, the cancel transitions, serialisation."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.auth import create_owner
from service.db.models import Dataset, Job, JobEvent, Pool, Round, utcnow
from service.db.session import session_scope
from service.jobs import JobStateError, add_event, create_job, finish_cancel, job_to_dict, request_cancel


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


def test_cancel_queued_is_immediate_and_fails_its_dataset(database_url, owner_id):
    with session_scope(database_url) as session:
        ds = Dataset(owner_id=owner_id, name="d", file_blob="0" * 64, file_name="d.json")
        session.add(ds)
        session.flush()
        job = create_job(session, owner_id, "ingest", "ingest", {"dataset_id": ds.id})
        ds.job_id, job_id, ds_id = job.id, job.id, ds.id
    with session_scope(database_url) as session:
        job = request_cancel(session, session.get(Job, job_id))
        assert job.status == "cancelled" and job.cancel_requested and job.finished_at is not None
    with session_scope(database_url) as session:
        ds = session.get(Dataset, ds_id)
        assert ds.status == "failed" and ds.error["code"] == "cancelled"
        assert session.get(Job, job_id).error == {"code": "cancelled", "message": "the job was cancelled"}


def test_cancel_running_waits_for_the_worker(database_url, owner_id):
    job_id = _job(database_url, owner_id, status="running")
    with session_scope(database_url) as session:
        job = request_cancel(session, session.get(Job, job_id))
        assert (job.status, job.cancel_requested, job.finished_at) == ("cancelling", True, None)
        assert request_cancel(session, job).status == "cancelling"  # asking twice is fine
    with session_scope(database_url) as session:
        job = finish_cancel(session, session.get(Job, job_id))  # what the worker does when it stops
        assert job.status == "cancelled"


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_terminal_job_is_refused(database_url, owner_id, status):
    job_id = _job(database_url, owner_id, status=status)
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        with pytest.raises(JobStateError, match=f"already {status}"):
            request_cancel(session, job)
        events = session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id))
        assert events == 1  # only "created": nothing was logged for the refused cancel


def test_job_to_dict_reads_naive_sqlite_datetimes_as_utc(database_url, owner_id):
    job_id = _job(database_url, owner_id, status="succeeded")
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        job.finished_at = utcnow().replace(tzinfo=None)
        assert job_to_dict(job)["finished_at"].endswith("Z")


def test_cancel_queued_round_job_cancels_its_round(database_url, owner_id):
    with session_scope(database_url) as session:
        pool = Pool(owner_id=owner_id, name="p", base_model="tiny-llava", model_type="llava", config={})
        session.add(pool)
        session.flush()
        job = create_job(session, owner_id, "round", "select", {})
        rnd = Round(pool_id=pool.id, number=1, params={}, job_id=job.id)
        session.add(rnd)
        session.flush()
        job_id, round_id = job.id, rnd.id
    with session_scope(database_url) as session:
        request_cancel(session, session.get(Job, job_id))
    with session_scope(database_url) as session:
        rnd = session.get(Round, round_id)
        assert rnd.status == "cancelled" and rnd.finished_at is not None


def test_cancel_of_a_stage_job_is_refused_and_names_the_parent(database_url, owner_id):
    parent_id = _job(database_url, owner_id, status="running")
    with session_scope(database_url) as session:
        child = create_job(session, owner_id, "round.features", "gpu", {}, parent_id=parent_id)
        child_id = child.id
    with session_scope(database_url) as session:
        with pytest.raises(JobStateError, match=f"cancel {parent_id} instead"):
            request_cancel(session, session.get(Job, child_id))
        assert session.get(Job, child_id).status == "queued"
