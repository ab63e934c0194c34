"""The JobTask base (workers/jobs.py): success, domain failure, cancel, duplicate delivery and
transient errors, run in-process on a real SQLite database (the task body is called directly)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from jobs_dbs import database_from, migrated_template
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from service.broker import make_celery
from service.config import Settings
from service.db.models import Job, JobEvent, Owner
from service.db.session import get_sessionmaker
from service.lifecycle import request_cancel
from workers import jobs
from workers.jobs import JobContext, job_task


class DomainError(Exception):
    code = "bad_input"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory):
    with migrated_template("sqlite", tmp_path_factory.mktemp("tmpl")) as t:
        yield t


@pytest.fixture
def settings(template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with database_from("sqlite", template, tmp_path) as url:
        s = Settings(data_dir=tmp_path / "data", database_url=url, lease_seconds=5, heartbeat_seconds=0.05)
        monkeypatch.setattr(jobs, "get_settings", lambda: s)
        yield s


@pytest.fixture
def app(settings: Settings):
    return make_celery(settings)


def new_job(settings: Settings, kind: str) -> str:
    with get_sessionmaker(settings.resolved_database_url)() as s:
        owner = Owner(name=f"o-{kind}")
        s.add(owner)
        s.flush()
        job = Job(owner_id=owner.id, kind=kind, queue="ingest", params={"x": 1})
        s.add(job)
        s.commit()
        return job.id


def load(settings: Settings, job_id: str) -> tuple[Job, list[str]]:
    with get_sessionmaker(settings.resolved_database_url)() as s:
        events = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        return s.get(Job, job_id), list(events)


def test_success_records_result_and_a_second_delivery_is_ignored(settings: Settings, app) -> None:
    calls: list[dict] = []

    @job_task(app, kind="t-ok", queue="ingest")
    def ok(ctx: JobContext) -> dict:
        calls.append(ctx.params)
        ctx.stage("work", total=3)
        ctx.progress(3)
        return {"answer": 42}

    assert ok.name == "adaptinf.t-ok" and ok.job_queue == "ingest" and ok.acks_late
    job_id = new_job(settings, "t-ok")
    assert ok(job_id) == {"job_id": job_id, "ran": True, "status": "succeeded"}
    assert ok(job_id) == {"job_id": job_id, "ran": False}  # redelivered message: acked, not rerun
    job, events = load(settings, job_id)
    assert calls == [{"x": 1}]
    assert (job.status, job.result, job.attempts, job.stage, job.progress_done) == ("succeeded", {"answer": 42}, 1, "work", 3)
    assert job.finished_at is not None and job.lease_owner is None
    assert events[0].startswith("started (attempt 1") and events[-1] == "succeeded"


def test_domain_errors_fail_the_job_with_their_code(settings: Settings, app) -> None:
    @job_task(app, kind="t-bad", queue="select")
    def bad(ctx: JobContext) -> None:
        raise DomainError("line 3: no assistant turn")

    @job_task(app, kind="t-bug", queue="select")
    def bug(ctx: JobContext) -> None:
        raise KeyError("oops")

    bad_id, bug_id = new_job(settings, "t-bad"), new_job(settings, "t-bug")
    assert bad(bad_id)["status"] == "failed" and bug(bug_id)["status"] == "failed"
    assert load(settings, bad_id)[0].error == {"code": "bad_input", "message": "line 3: no assistant turn"}
    assert load(settings, bug_id)[0].error == {"code": "internal_error", "message": "KeyError: 'oops'"}


def test_cancel_requested_while_running_ends_cancelled(settings: Settings, app) -> None:
    started = threading.Event()

    @job_task(app, kind="t-long", queue="gpu")
    def long(ctx: JobContext) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            time.sleep(0.01)
        raise AssertionError("the cancel was never seen")

    job_id = new_job(settings, "t-long")

    def cancel() -> None:
        started.wait(10)
        with get_sessionmaker(settings.resolved_database_url)() as s:
            request_cancel(s, s.get(Job, job_id))
            s.commit()

    threading.Thread(target=cancel).start()
    assert long(job_id)["status"] == "cancelled"
    job, events = load(settings, job_id)
    assert (job.status, job.error["code"], job.lease_owner) == ("cancelled", "cancelled", None)


def test_transient_error_releases_the_job_for_a_retry(settings: Settings, app) -> None:
    @job_task(app, kind="t-blip", queue="train")
    def blip(ctx: JobContext) -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    job_id = new_job(settings, "t-blip")
    # Called directly (no worker), Celery's retry re-raises the error instead of re-sending.
    with pytest.raises(OperationalError):
        blip(job_id)
    job, events = load(settings, job_id)
    assert (job.status, job.attempts, job.lease_owner, job.error) == ("queued", 1, None, None)
    assert "released for a retry" in events


@pytest.mark.parametrize("error", [OperationalError("UPDATE jobs", {}, Exception("server closed the connection")),
                                   ValueError("a bug in the bookkeeping")])
def test_a_failure_to_log_the_last_stage_end_neither_retries_nor_fails_the_job(
    settings: Settings, app, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The job's work is committed (a round stage has even sent the next jobs) when its last stage
    is logged as ended: that bookkeeping failing must leave the job succeeded, run once."""
    calls: list[int] = []

    @job_task(app, kind="t-done", queue="ingest")
    def done(ctx: JobContext) -> dict:
        calls.append(1)
        ctx.stage("work", total=1)
        ctx.progress(1)
        return {"answer": 1}

    def broken(self: JobContext) -> None:
        raise error

    monkeypatch.setattr(JobContext, "end_stage", broken)
    job_id = new_job(settings, "t-done")
    assert done(job_id) == {"job_id": job_id, "ran": True, "status": "succeeded"}
    job, _ = load(settings, job_id)
    assert (job.status, job.result, job.attempts, job.lease_owner, calls) == ("succeeded", {"answer": 1}, 1, None, [1])


def test_job_task_refuses_an_unknown_queue(app) -> None:
    with pytest.raises(ValueError, match="cpu"):
        job_task(app, kind="t-x", queue="cpu")


def test_internal_errors_keep_sql_and_server_paths_out_of_the_job():
    import sqlalchemy.exc

    from workers.jobs import error_of

    sql = sqlalchemy.exc.DataError("INSERT INTO samples (messages) VALUES (%(m)s)", {"m": "secret"}, ValueError("NUL"))
    assert error_of(sql) == {"code": "internal_error",
                             "message": "DataError: a database error; the worker's log has the details"}
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (see /opt/venv/lib/python3.11/torch/x.py)\nmore")
    got = error_of(oom)["message"]
    assert got == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (see <path>)"
    assert error_of(FileNotFoundError(2, "No such file", "/data/blobs/ab/cd/abcd"))["message"] == (
        "FileNotFoundError: [Errno 2] No such file: '<path>'")
    assert len(error_of(ValueError("x" * 5000))["message"]) <= len("ValueError: ") + 500
    assert error_of(KeyError("oops"))["message"] == "KeyError: 'oops'"


def test_a_full_disk_is_disk_full_with_the_way_out_and_no_server_path():
    import errno
    import sqlite3

    import sqlalchemy.exc

    from workers.jobs import error_of

    got = error_of(OSError(errno.ENOSPC, "No space left on device", "/data/work/shards/r-00001.npz"))
    assert got["code"] == "disk_full" and "/data" not in got["message"]
    assert "a file (r-00001.npz) could not be written" in got["message"] and "ADAPTINF_DATA_DIR" in got["message"]
    sql = sqlalchemy.exc.OperationalError("INSERT INTO scores ...", {}, sqlite3.OperationalError("database or disk is full"))
    assert error_of(sql)["code"] == "disk_full" and "the database could not be written" in error_of(sql)["message"]
    try:  # raised while handling ENOSPC: still the disk
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("could not save the adapter")  # noqa: B904
    except RuntimeError as exc:
        assert error_of(exc)["code"] == "disk_full"
    assert error_of(OSError(errno.EACCES, "Permission denied"))["code"] == "internal_error"

    class Domain(Exception):
        code = "checkpoint_corrupt"

    try:  # a domain error raised meanwhile says what it is: it keeps its own code
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise Domain("every checkpoint is damaged")  # noqa: B904
    except Domain as exc:
        assert error_of(exc) == {"code": "checkpoint_corrupt", "message": "every checkpoint is damaged"}


def test_urls_and_ratios_survive_the_path_filter():
    from workers.jobs import error_of

    assert error_of(ValueError("see https://sqlalche.me/e/21/9h9h; 1/2 done; org/name")) == {
        "code": "internal_error", "message": "ValueError: see https://sqlalche.me/e/21/9h9h; 1/2 done; org/name"}
