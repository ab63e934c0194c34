"""Every job transition of service/lifecycle.py, and the dataset or round that follows the job,
on SQLite and PostgreSQL (`database_url` runs each test on both)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from service.auth import create_owner
from service.db.models import Dataset, Job, JobEvent, Pool, Round, utcnow
from service.db.session import session_scope
from service.jobs import create_job
from service.lifecycle import (
    JobStateError, acquire_lease, finish_cancel, finish_job, finish_round_job, give_up_unclaimed,
    mark_dataset_failed, mark_dataset_ready, reap_expired_job, request_cancel, start_round_job,
)

LEASE = 30.0
_ROW = (Job.id, Job.kind, Job.queue, Job.status, Job.attempts, Job.max_attempts, Job.lease_owner, Job.cancel_requested)


@pytest.fixture
def owner_id(database_url):
    with session_scope(database_url) as session:
        return create_owner(session, "dora").id


def _job(url, owner_id, status="queued", kind="round", params=None, parent_id=None, max_attempts=3) -> str:
    with session_scope(url) as session:
        job = create_job(session, owner_id, kind, "select", params or {"x": 1}, max_attempts=max_attempts,
                         parent_id=parent_id)
        job.status = status
        return job.id


def _ingest(url, owner_id, max_attempts=3) -> tuple[str, str]:
    """An ingest job and its pending dataset: (job id, dataset id)."""
    with session_scope(url) as session:
        ds = Dataset(owner_id=owner_id, name="d", file_blob="0" * 64, file_name="d.json")
        session.add(ds)
        session.flush()
        job = create_job(session, owner_id, "ingest", "ingest", {"dataset_id": ds.id}, max_attempts=max_attempts)
        ds.job_id = job.id
        return job.id, ds.id


def _round(url, owner_id) -> tuple[str, str]:
    """A queued round and its parent job: (job id, round id)."""
    with session_scope(url) as session:
        pool = Pool(owner_id=owner_id, name="p", base_model="tiny-llava", model_type="llava", config={})
        session.add(pool)
        session.flush()
        rnd = Round(pool_id=pool.id, number=1, params={})
        session.add(rnd)
        session.flush()
        job = create_job(session, owner_id, "round", "select", {"round_id": rnd.id})
        rnd.job_id = job.id
        return job.id, rnd.id


def _get(url, model, key):
    with session_scope(url) as session:
        row = session.get(model, key)
        session.expunge(row)
        return row


def _events(url, job_id) -> list[str]:
    with session_scope(url) as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def _row(url, job_id):
    with session_scope(url) as session:
        return session.execute(select(*_ROW).where(Job.id == job_id)).one()


def _reap(url, job_id, now, lease=LEASE, row=None) -> str | None:
    """What the reaper does with the job as read (now, or `row` read earlier)."""
    with session_scope(url) as session:
        return reap_expired_job(session, row or _row(url, job_id), now, lease)


# --- the API's cancel ---------------------------------------------------------------------------

def test_cancel_queued_is_immediate_and_fails_its_dataset(database_url, owner_id):
    job_id, ds_id = _ingest(database_url, owner_id)
    with session_scope(database_url) as session:
        job = request_cancel(session, session.get(Job, job_id))
        assert job.status == "cancelled" and job.cancel_requested and job.finished_at is not None
    ds = _get(database_url, Dataset, ds_id)
    assert ds.status == "failed" and ds.error["code"] == "cancelled" and job_id in ds.error["detail"]
    assert _get(database_url, Job, job_id).error == {"code": "cancelled", "message": "the job was cancelled"}
    assert _events(database_url, job_id)[-2:] == ["cancelled before it started", "job cancelled"]


def test_cancel_running_waits_for_the_worker(database_url, owner_id):
    job_id = _job(database_url, owner_id, status="running")
    with session_scope(database_url) as session:
        job = request_cancel(session, session.get(Job, job_id))
        assert (job.status, job.cancel_requested, job.finished_at) == ("cancelling", True, None)
        assert request_cancel(session, job).status == "cancelling"  # asking twice is fine
    with session_scope(database_url) as session:
        job = finish_cancel(session, session.get(Job, job_id))
        assert (job.status, job.lease_owner) == ("cancelled", None)


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_terminal_job_is_refused(database_url, owner_id, status):
    job_id = _job(database_url, owner_id, status=status)
    with session_scope(database_url) as session:
        with pytest.raises(JobStateError, match=f"already {status}"):
            request_cancel(session, session.get(Job, job_id))
        events = session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id))
        assert events == 1  # only "created": nothing was logged for the refused cancel


def test_cancel_queued_round_job_cancels_its_round(database_url, owner_id):
    job_id, round_id = _round(database_url, owner_id)
    with session_scope(database_url) as session:
        request_cancel(session, session.get(Job, job_id))
    rnd = _get(database_url, Round, round_id)
    assert rnd.status == "cancelled" and rnd.finished_at is not None


def test_cancel_of_a_stage_job_is_refused_and_names_the_parent(database_url, owner_id):
    parent_id = _job(database_url, owner_id, status="running")
    child_id = _job(database_url, owner_id, kind="round.features", parent_id=parent_id)
    with session_scope(database_url) as session:
        with pytest.raises(JobStateError, match=f"cancel {parent_id} instead"):
            request_cancel(session, session.get(Job, child_id))
    assert _get(database_url, Job, child_id).status == "queued"


# --- the worker's lease: queued → running → succeeded | failed | cancelled | queued -------------

def test_queued_running_succeeded_leaves_the_dataset_to_the_task(database_url, owner_id):
    job_id, ds_id = _ingest(database_url, owner_id)
    with session_scope(database_url) as session:
        job = acquire_lease(session, job_id, "w1", LEASE)
        assert (job.status, job.attempts, job.lease_owner) == ("running", 1, "w1")
        assert acquire_lease(session, job_id, "w2", LEASE) is None  # a live lease is not shared
        assert finish_job(session, job_id, "w2", "succeeded") is False  # not the owner
        assert finish_job(session, job_id, "w1", "succeeded", result={"n": 2})
    job = _get(database_url, Job, job_id)
    assert (job.status, job.result, job.lease_owner, job.error) == ("succeeded", {"n": 2}, None, None)
    assert job.finished_at is not None and job.started_at is not None
    assert _get(database_url, Dataset, ds_id).status == "pending"  # the task itself marks it ready
    assert _events(database_url, job_id)[-2:] == ["started (attempt 1 of 3)", "succeeded"]


@pytest.mark.parametrize("status, code", [("failed", "bad_input"), ("cancelled", "cancelled")])
def test_a_failed_or_cancelled_ingest_fails_its_dataset(database_url, owner_id, status, code):
    job_id, ds_id = _ingest(database_url, owner_id)
    with session_scope(database_url) as session:
        acquire_lease(session, job_id, "w1", LEASE)
        assert finish_job(session, job_id, "w1", status, error={"code": code, "message": "line 3: no turn"})
    ds = _get(database_url, Dataset, ds_id)
    assert ds.status == "failed"
    assert ds.error == {"code": code, "detail": f"ingest job {job_id} {status}: line 3: no turn"}


def test_a_dataset_failed_by_its_task_keeps_its_own_error_and_ready_is_never_undone(database_url, owner_id):
    job_id, ds_id = _ingest(database_url, owner_id)
    precise = {"code": "invalid_record", "detail": "line 7: no assistant turn", "line": 7}
    with session_scope(database_url) as session:
        acquire_lease(session, job_id, "w1", LEASE)
        mark_dataset_failed(session, ds_id, precise)
    with session_scope(database_url) as session:
        finish_job(session, job_id, "w1", "failed", error={"code": "invalid_record", "message": "line 7"})
    assert _get(database_url, Dataset, ds_id).error == precise

    job_id, ds_id = _ingest(database_url, owner_id)
    with session_scope(database_url) as session:
        mark_dataset_ready(session.get(Dataset, ds_id), 5, 2, {"ocr": 5})
        mark_dataset_failed(session, ds_id, precise)
    ds = _get(database_url, Dataset, ds_id)
    assert (ds.status, ds.error, ds.num_samples, ds.num_images, ds.skill_counts) == ("ready", None, 5, 2, {"ocr": 5})


def test_cancel_requested_while_running_ends_cancelled_through_the_worker(database_url, owner_id):
    job_id, ds_id = _ingest(database_url, owner_id)
    with session_scope(database_url) as session:
        acquire_lease(session, job_id, "w1", LEASE)
    with session_scope(database_url) as session:
        request_cancel(session, session.get(Job, job_id))
    assert _get(database_url, Dataset, ds_id).status == "pending"  # the worker has not stopped yet
    with session_scope(database_url) as session:
        assert finish_job(session, job_id, "w1", "cancelled", error={"code": "cancelled", "message": "on request"})
    job, ds = _get(database_url, Job, job_id), _get(database_url, Dataset, ds_id)
    assert (job.status, job.cancel_requested) == ("cancelled", True)
    assert (ds.status, ds.error["code"]) == ("failed", "cancelled")


def test_release_for_a_retry_requeues_without_ending(database_url, owner_id):
    job_id, ds_id = _ingest(database_url, owner_id)
    with session_scope(database_url) as session:
        acquire_lease(session, job_id, "w1", LEASE)
        assert finish_job(session, job_id, "w1", "queued")
        with pytest.raises(ValueError, match="status must be one of"):
            finish_job(session, job_id, "w1", "running")
    job = _get(database_url, Job, job_id)
    assert (job.status, job.finished_at, job.lease_owner, job.attempts) == ("queued", None, None, 1)
    assert _get(database_url, Dataset, ds_id).status == "pending"


# --- the reaper ---------------------------------------------------------------------------------

def test_reaper_requeues_then_gives_up_at_max_attempts_and_the_dataset_follows(database_url, owner_id):
    job_id, ds_id = _ingest(database_url, owner_id, max_attempts=2)
    t = utcnow()
    with session_scope(database_url) as session:
        acquire_lease(session, job_id, "dead", LEASE, now=t)
    assert _reap(database_url, job_id, t + timedelta(seconds=LEASE - 1)) is None  # the lease is still live
    t += timedelta(seconds=LEASE + 1)
    read = _row(database_url, job_id)
    assert _reap(database_url, job_id, t, row=read) == "queued"
    assert _reap(database_url, job_id, t, row=read) is None  # a second reaper that read the same row
    job = _get(database_url, Job, job_id)
    assert (job.status, job.lease_owner, job.attempts) == ("queued", None, 1)
    assert _get(database_url, Dataset, ds_id).status == "pending"
    with session_scope(database_url) as session:
        acquire_lease(session, job_id, "dead-again", LEASE, now=t)
    t += timedelta(seconds=LEASE + 1)
    assert _reap(database_url, job_id, t, lease=12.5) == "failed"
    job, ds = _get(database_url, Job, job_id), _get(database_url, Dataset, ds_id)
    assert (job.status, job.error["code"]) == ("failed", "lease_expired")
    assert "worker lost 2 times (lease of 12.5s not renewed)" in job.error["message"]
    assert (ds.status, ds.error["code"]) == ("failed", "lease_expired")


def test_reaper_ends_a_cancelling_job_cancelled(database_url, owner_id):
    job_id, ds_id = _ingest(database_url, owner_id)
    t = utcnow()
    with session_scope(database_url) as session:
        acquire_lease(session, job_id, "dead", LEASE, now=t)
        request_cancel(session, session.get(Job, job_id))
    assert _reap(database_url, job_id, t + timedelta(seconds=LEASE + 1)) == "cancelled"
    assert _get(database_url, Job, job_id).error["code"] == "cancelled"
    assert _get(database_url, Dataset, ds_id).error["code"] == "cancelled"


def test_reaper_gives_up_an_unclaimed_job_whose_attempts_are_spent(database_url, owner_id):
    job_id, round_id = _round(database_url, owner_id)
    with session_scope(database_url) as session:
        session.get(Job, job_id).attempts = 3
    with session_scope(database_url) as session:
        row = session.execute(select(*_ROW).where(Job.id == job_id)).one()
        assert give_up_unclaimed(session, row, utcnow())
        assert not give_up_unclaimed(session, row, utcnow())  # no longer as read
    job, rnd = _get(database_url, Job, job_id), _get(database_url, Round, round_id)
    assert (job.status, job.error["code"]) == ("failed", "max_attempts")
    assert rnd.status == "failed" and rnd.finished_at is not None


# --- a round follows its parent job and its stage jobs -------------------------------------------

def _running_round(url, owner_id) -> tuple[str, str]:
    job_id, round_id = _round(url, owner_id)
    with session_scope(url) as session:
        assert start_round_job(session, job_id, "features") is not None
        assert start_round_job(session, job_id, "features") is None  # a duplicate delivery
    return job_id, round_id


def test_round_starts_with_its_job_and_succeeds_with_it(database_url, owner_id):
    job_id, round_id = _running_round(database_url, owner_id)
    assert _get(database_url, Round, round_id).status == "running"
    assert (_get(database_url, Job, job_id).status, _get(database_url, Job, job_id).stage) == ("running", "features")
    with session_scope(database_url) as session:
        finish_round_job(session, session.get(Job, job_id), "succeeded", result={"selected": 4})
    job, rnd = _get(database_url, Job, job_id), _get(database_url, Round, round_id)
    assert (job.status, job.result, rnd.status, rnd.result) == ("succeeded", {"selected": 4}, "succeeded", {"selected": 4})
    with pytest.raises(LookupError):
        with session_scope(database_url) as session:
            start_round_job(session, "job_missing", "prepare")


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_stage_job_that_ends_badly_ends_its_round_and_stops_its_siblings(database_url, owner_id, status):
    parent_id, round_id = _running_round(database_url, owner_id)
    shard = _job(database_url, owner_id, kind="round.features", parent_id=parent_id)
    sibling = _job(database_url, owner_id, kind="round.features", parent_id=parent_id)
    queued = _job(database_url, owner_id, kind="round.features", parent_id=parent_id)
    with session_scope(database_url) as session:
        acquire_lease(session, shard, "w1", LEASE)
        acquire_lease(session, sibling, "w2", LEASE)
        finish_job(session, shard, "w1", status, error={"code": "oom", "message": "out of memory"})
    parent, rnd = _get(database_url, Job, parent_id), _get(database_url, Round, round_id)
    assert parent.status == status and rnd.status == status and rnd.finished_at is not None
    if status == "failed":
        assert parent.error == {"code": "oom", "message": "round.features failed after 1 attempt(s): out of memory",
                                "job_id": shard}
    else:
        assert parent.error == {"code": "cancelled", "message": "cancelled during round.features"}
    assert (_get(database_url, Job, queued).status, _get(database_url, Job, queued).cancel_requested) == ("cancelled", True)
    assert (_get(database_url, Job, sibling).status, _get(database_url, Job, sibling).cancel_requested) == ("running", True)


def test_a_stale_stage_job_does_not_end_the_round(database_url, owner_id):
    parent_id, round_id = _running_round(database_url, owner_id)
    stale = _job(database_url, owner_id, kind="round.prepare", parent_id=parent_id)
    with session_scope(database_url) as session:
        acquire_lease(session, stale, "w1", LEASE)
        finish_job(session, stale, "w1", "failed", error={"code": "x", "message": "late"})
    assert _get(database_url, Round, round_id).status == "running"
    assert _events(database_url, parent_id)[-1] == f"round.prepare job {stale} ended failed after its stage; ignored"


def test_a_stage_job_reaped_at_max_attempts_fails_its_round(database_url, owner_id):
    parent_id, round_id = _running_round(database_url, owner_id)
    shard = _job(database_url, owner_id, kind="round.features", parent_id=parent_id, max_attempts=1)
    t = utcnow()
    with session_scope(database_url) as session:
        acquire_lease(session, shard, "dead", LEASE, now=t)
    assert _reap(database_url, shard, t + timedelta(seconds=LEASE + 1)) == "failed"
    assert _get(database_url, Round, round_id).status == "failed"
    assert _get(database_url, Job, parent_id).error["code"] == "lease_expired"
