"""Leases, heartbeat and reaper against real PostgreSQL and SQLite databases (workers/leases.py,
workers/jobs.py, workers/reaper.py, over service/lifecycle.py). Enqueues go to a real filesystem broker folder, counted as
message files."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from jobs_dbs import database_from, migrated_template
from sqlalchemy import select

from service.config import Settings
from service.db.models import Dataset, Job, JobEvent, Owner
from service.db.session import get_sessionmaker
from service.lifecycle import acquire_lease, finish_job, request_cancel
from workers.jobs import Heartbeat, JobContext
from workers.leases import JobCancelled, LeaseLost, utcnow
from workers.reaper import lost_message_grace, reap_expired

LEASE = 30.0


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    with migrated_template(request.param, tmp_path_factory.mktemp("tmpl")) as t:
        yield request.param, t


@pytest.fixture
def settings(template: tuple[str, str], tmp_path: Path):
    with database_from(*template, tmp_path) as url:
        yield Settings(data_dir=tmp_path / "data", database_url=url, lease_seconds=LEASE, heartbeat_seconds=0.05)


@pytest.fixture
def factory(settings: Settings):
    return get_sessionmaker(settings.resolved_database_url)


def make_job(factory, kind: str = "ingest", max_attempts: int = 3) -> str:
    with factory() as s:
        owner = s.scalar(select(Owner).where(Owner.name == "t"))
        if owner is None:
            owner = Owner(name="t")
            s.add(owner)
            s.flush()
        job = Job(owner_id=owner.id, kind=kind, queue="ingest", params={}, max_attempts=max_attempts)
        s.add(job)
        s.commit()
        return job.id


def job_row(factory, job_id: str) -> Job:
    with factory() as s:
        return s.get(Job, job_id)


def sent_messages(settings: Settings) -> int:
    folder = settings.broker_dir / "queue"
    return len([p for p in folder.glob("*.ingest.msg")]) if folder.exists() else 0


def test_concurrent_acquirers_exactly_one_wins(factory) -> None:
    for _ in range(3):
        job_id = make_job(factory)
        n = 6
        barrier = threading.Barrier(n)
        winners: list[str] = []

        def contend(i: int) -> None:
            with factory() as s:
                barrier.wait()
                if acquire_lease(s, job_id, f"worker-{i}", LEASE) is not None:
                    winners.append(f"worker-{i}")

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        job = job_row(factory, job_id)
        assert (job.status, job.attempts, job.lease_owner) == ("running", 1, winners[0])


def test_live_lease_refuses_a_second_worker_and_finished_jobs_stay_finished(factory) -> None:
    job_id = make_job(factory)
    with factory() as s:
        assert acquire_lease(s, job_id, "a", LEASE) is not None
        assert acquire_lease(s, job_id, "b", LEASE) is None
        assert finish_job(s, job_id, "b", "succeeded") is False  # not the owner
        assert finish_job(s, job_id, "a", "succeeded", result={"n": 1}) is True
        assert acquire_lease(s, job_id, "b", LEASE) is None
    job = job_row(factory, job_id)
    assert (job.status, job.result, job.lease_owner, job.attempts) == ("succeeded", {"n": 1}, None, 1)


def test_expired_lease_is_requeued_resent_and_counts_attempts(factory, settings: Settings) -> None:
    job_id = make_job(factory)
    t0 = utcnow()
    with factory() as s:
        acquire_lease(s, job_id, "dead", LEASE, now=t0)
        assert reap_expired(s, settings, now=t0 + timedelta(seconds=LEASE - 1)) == []  # still live
        assert reap_expired(s, settings, now=t0 + timedelta(seconds=LEASE + 1)) == [job_id]
    job = job_row(factory, job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("queued", 1, None)
    assert sent_messages(settings) == 1
    with factory() as s:
        assert acquire_lease(s, job_id, "second", LEASE) is not None
        assert finish_job(s, job_id, "dead", "failed") is False  # the lost worker cannot write any more
    assert job_row(factory, job_id).attempts == 2


def test_max_attempts_fails_with_a_clear_error_and_fails_its_dataset(factory, settings: Settings) -> None:
    job_id = make_job(factory, kind="ingest", max_attempts=2)
    with factory() as s:
        job = s.get(Job, job_id)
        dataset = Dataset(owner_id=job.owner_id, name="d", file_blob="0" * 64, file_name="d.json", job_id=job_id)
        s.add(dataset)
        s.flush()
        job.params = {"dataset_id": dataset.id}
        s.commit()
        dataset_id = dataset.id
    t = utcnow()
    with factory() as s:
        for attempt in (1, 2):
            assert acquire_lease(s, job_id, f"w{attempt}", LEASE, now=t) is not None
            t += timedelta(seconds=LEASE + 1)
            assert reap_expired(s, settings, now=t) == [job_id]
    job = job_row(factory, job_id)
    assert job.status == "failed" and job.attempts == 2
    assert job.error["code"] == "lease_expired"
    assert "worker lost 2 times" in job.error["message"] and "max_attempts=2" in job.error["message"]
    with factory() as s:
        dataset = s.get(Dataset, dataset_id)
        assert (dataset.status, dataset.error["code"]) == ("failed", "lease_expired")
    assert sent_messages(settings) == 1  # re-sent after the first loss only


def test_concurrent_reapers_requeue_once(factory, settings: Settings) -> None:
    job_ids = [make_job(factory) for _ in range(4)]
    t0 = utcnow()
    with factory() as s:
        for job_id in job_ids:
            acquire_lease(s, job_id, "dead", LEASE, now=t0)
    later = t0 + timedelta(seconds=LEASE + 1)
    results: list[list[str]] = []
    barrier = threading.Barrier(3)

    def reap() -> None:
        with factory() as s:
            barrier.wait()
            results.append(reap_expired(s, settings, now=later))

    threads = [threading.Thread(target=reap) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for r in results for j in r) == sorted(job_ids)
    assert sent_messages(settings) == len(job_ids)
    assert {job_row(factory, j).status for j in job_ids} == {"queued"}


def test_expired_cancelling_job_ends_cancelled(factory, settings: Settings) -> None:
    job_id = make_job(factory)
    t0 = utcnow()
    with factory() as s:
        acquire_lease(s, job_id, "dead", LEASE, now=t0)
        request_cancel(s, s.get(Job, job_id))
        s.commit()
        assert reap_expired(s, settings, now=t0 + timedelta(seconds=LEASE + 1)) == [job_id]
    job = job_row(factory, job_id)
    assert (job.status, job.error["code"]) == ("cancelled", "cancelled")
    assert sent_messages(settings) == 0


def test_unclaimed_queued_job_is_resent_once_per_grace_period(factory, settings: Settings) -> None:
    job_id = make_job(factory)
    grace = timedelta(seconds=lost_message_grace(settings))
    now = utcnow()
    with factory() as s:
        assert reap_expired(s, settings, now=now) == []
        assert reap_expired(s, settings, now=now + grace * 1.1) == [job_id]
        assert reap_expired(s, settings, now=now + grace * 1.2) == []  # just re-sent
        assert reap_expired(s, settings, now=now + grace * 2.3) == [job_id]
    assert sent_messages(settings) == 2
    assert job_row(factory, job_id).status == "queued"


def test_heartbeat_renews_the_lease_and_sees_the_cancel_flag(factory, settings: Settings) -> None:
    job_id = make_job(factory)
    with factory() as s:
        job = acquire_lease(s, job_id, "me", 1.0)
    first_expiry = job.lease_expires_at
    ctx = JobContext(job, "me", settings, factory)
    hb = Heartbeat(ctx, 0.05)
    hb.start()
    try:
        deadline = time.monotonic() + 5  # a beat every 0.05 s; allow for a loaded machine
        while job_row(factory, job_id).lease_expires_at <= first_expiry and time.monotonic() < deadline:
            time.sleep(0.05)
        ctx.check_cancelled()  # no cancel yet: returns
        assert job_row(factory, job_id).lease_expires_at > first_expiry
        with factory() as s:
            request_cancel(s, s.get(Job, job_id))
            s.commit()
        deadline = time.monotonic() + 5
        while not ctx.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(JobCancelled):
            ctx.check_cancelled()
    finally:
        hb.stop()
    assert job_row(factory, job_id).status == "cancelling"


def test_context_writes_stage_and_progress_and_detects_a_lost_lease(factory, settings: Settings) -> None:
    job_id = make_job(factory)
    t0 = utcnow()
    with factory() as s:
        job = acquire_lease(s, job_id, "me", LEASE, now=t0)
    ctx = JobContext(job, "me", settings, factory)
    ctx.stage("images", total=10)
    ctx.progress(10, 10)
    row = job_row(factory, job_id)
    assert (row.stage, row.progress_done, row.progress_total) == ("images", 10, 10)
    with factory() as s:
        messages = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        assert "stage images" in messages
        reap_expired(s, settings, now=t0 + timedelta(seconds=LEASE + 1))
    with pytest.raises(LeaseLost):
        ctx.stage("write")
    with pytest.raises(LeaseLost):
        ctx.check_cancelled()


def test_context_live_progress_is_rate_limited_flushed_by_the_heartbeat_and_logs_stages(factory, settings: Settings) -> None:
    job_id = make_job(factory)
    with factory() as s:
        job = acquire_lease(s, job_id, "me", LEASE)
    ctx = JobContext(job, "me", settings, factory)
    ctx.PROGRESS_WRITE_INTERVAL = 3600.0  # only the last step and the heartbeat write
    ctx.plan(["parse", "images", "write"])
    ctx.stage("parse")
    ctx.stage("images", total=10, unit="images")
    for k in range(1, 4):
        time.sleep(0.02)
        ctx.progress(k, metrics={"loss": float("nan"), "step": k})
    row = job_row(factory, job_id)
    assert (row.progress_done, row.progress_unit, row.metrics) == (0, "images", None)  # not written yet
    Heartbeat(ctx, 1.0).beat()  # the heartbeat flushes the latest values
    row = job_row(factory, job_id)
    assert (row.progress_done, row.progress_total, row.progress_unit) == (3, 10, "images")
    assert row.metrics == {"loss": None, "step": 3}  # NaN is not JSON: null
    assert row.progress_rate > 0 and row.progress_eta == pytest.approx(7 / row.progress_rate, abs=0.1)
    assert [(st["name"], st["status"]) for st in row.stages] == [("parse", "done"), ("images", "running"),
                                                                ("write", "pending")]
    ctx.progress(10)  # the last step is written at once
    assert (job_row(factory, job_id).progress_done, job_row(factory, job_id).progress_eta) == (10, 0.0)
    ctx.end_stage()
    row = job_row(factory, job_id)
    assert [st["status"] for st in row.stages] == ["done", "done", "pending"] and row.stages[1]["seconds"] >= 0
    with factory() as s:
        data = s.scalars(select(JobEvent.data).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
    kinds = [(d["type"], d["stage"]) for d in data if d and "type" in d]
    assert kinds == [("stage.start", "parse"), ("stage.end", "parse"), ("stage.start", "images"), ("stage.end", "images")]
    assert all(d["seconds"] >= 0 for d in data if d and d.get("type") == "stage.end")


def test_a_write_longer_than_the_lease_keeps_it(factory, settings: Settings) -> None:
    """A fenced transaction holds the job row, so neither the heartbeat nor the reaper can touch
    it until the commit. Renewed again just before that commit, the lease outlives a write three
    times as long as itself: the reaper, blocked meanwhile, finds nothing to take, and the job
    ends succeeded on its first attempt."""
    lease = 1.0
    short = settings.model_copy(update={"lease_seconds": lease})
    job_id = make_job(factory)
    with factory() as s:
        job = acquire_lease(s, job_id, "me", lease)
    ctx = JobContext(job, "me", short, factory)
    reaped: list[list[str]] = []

    def reaper() -> None:
        time.sleep(1.5 * lease)  # the lease taken at the fence has run out: the reaper tries now
        with factory() as s:
            reaped.append(reap_expired(s, short))

    with factory() as s, s.begin():
        ctx.fence(s)
        thread = threading.Thread(target=reaper)
        thread.start()
        time.sleep(3 * lease)  # the long write
        s.add(JobEvent(job_id=job_id, message="written"))
    thread.join(30)
    assert len(reaped) == 1 and job_id not in reaped[0], reaped
    with factory() as s:
        assert finish_job(s, job_id, "me", "succeeded")
    row = job_row(factory, job_id)
    assert (row.status, row.attempts) == ("succeeded", 1)


def test_a_fenced_commit_after_the_lease_was_taken_rolls_back(factory, settings: Settings) -> None:
    job_id = make_job(factory)
    t0 = utcnow()
    with factory() as s:
        job = acquire_lease(s, job_id, "me", LEASE, now=t0)
    ctx = JobContext(job, "me", settings, factory)
    with factory() as s:
        s.begin()
        ctx.fence(s)
        s.add(JobEvent(job_id=job_id, message="half a write"))
        s.flush()
        s.rollback()  # this transaction is abandoned: its commit-time renewal is disarmed
        s.add(JobEvent(job_id=job_id, message="unrelated"))
        s.commit()
    with factory() as s:
        reap_expired(s, settings, now=t0 + timedelta(seconds=LEASE + 1))  # the lease goes to nobody
    with pytest.raises(LeaseLost), factory() as s, s.begin():
        ctx.fence(s)
    with factory() as s:
        messages = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert "half a write" not in messages and "unrelated" in messages


def test_savepoints_leave_the_commit_time_renewal_to_the_outer_commit(factory, settings: Settings) -> None:
    from workers.jobs import _FENCED

    job_id = make_job(factory)
    with factory() as s:
        job = acquire_lease(s, job_id, "me", LEASE)
    ctx = JobContext(job, "me", settings, factory)
    with factory() as s, s.begin():
        ctx.fence(s)
        with s.begin_nested():  # released: not the commit the renewal waits for
            s.add(JobEvent(job_id=job_id, message="kept"))
        assert s.info.get(_FENCED) is ctx
        nested = s.begin_nested()
        s.add(JobEvent(job_id=job_id, message="undone"))
        nested.rollback()  # a savepoint rolled back: still armed
        assert s.info.get(_FENCED) is ctx
        before = s.scalar(select(Job.lease_expires_at).where(Job.id == job_id))
        time.sleep(0.05)
    assert _FENCED not in s.info
    row = job_row(factory, job_id)
    assert row.lease_expires_at > before  # renewed at the outer commit
    with factory() as s:
        messages = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert "kept" in messages and "undone" not in messages
