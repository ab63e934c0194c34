"""The job runtime over the SQL leases of `workers.leases`: the context domain code sees, the
heartbeat thread that renews the lease and reads the cancel flag, and the Celery Task base that
takes the lease, runs the job and ends it (both transitions are `service.lifecycle`'s)."""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery, Task
from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy import event
from sqlalchemy.exc import OperationalError as DBOperationalError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.statuses import CANCELLED, FAILED, QUEUED, SUCCEEDED
from service.broker import QUEUES, task_name
from service.config import Settings, get_settings
from service.disk import WAY_OUT, is_disk_full
from service.db.models import Job
from service.db.session import get_sessionmaker
from service.jobs import add_event
from service.lifecycle import acquire_lease, finish_job, update_if_held
from workers.leases import JobCancelled, LeaseLost, lease_values, new_lease_owner, renew_lease
from workers.live_progress import LiveProgress
from workers.metrics import observe_job

log = logging.getLogger(__name__)
_FENCED = "adaptinf.fenced"  # session.info: the JobContext whose lease is renewed again before this commit

#: The only errors a job is retried for; everything else fails the job at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (DBOperationalError, BrokerOperationalError, ConnectionError)


# An absolute server path in an exception's text (a file the worker touched, a library's source).
_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)*[\w.@+-]+")
MAX_ERROR_MESSAGE = 500


def error_of(exc: BaseException) -> dict[str, str]:
    """The job's error {code, message}: a domain error's own code and words, else internal_error
    with the exception's type and first line, minus internals (SQL statements, server paths); the
    worker's log keeps the whole traceback. A full disk is `disk_full`, with the way out, unless a
    domain error (one that says what it is) was raised meanwhile."""
    code = getattr(exc, "code", None)
    domain = isinstance(code, str) and bool(code) and not isinstance(exc, SQLAlchemyError)  # SQLAlchemy's carry one too
    if not domain and is_disk_full(exc):
        return {"code": "disk_full", "message": f"the worker's disk is full: {_written(exc)} could not be "
                                                f"written; {WAY_OUT}, then start a new round"}
    if isinstance(exc, SQLAlchemyError):
        return {"code": "internal_error",
                "message": f"{type(exc).__name__}: a database error; the worker's log has the details"}
    if domain:
        return {"code": code, "message": str(getattr(exc, "detail", None) or exc)}
    first = (str(exc).strip().splitlines() or [""])[0]
    text = _SERVER_PATH.sub("<path>", first)[:MAX_ERROR_MESSAGE]
    return {"code": "internal_error", "message": f"{type(exc).__name__}: {text}" if text else type(exc).__name__}


def _written(exc: BaseException) -> str:
    """What a disk-full error failed to write, in words that name no server path."""
    if isinstance(exc, SQLAlchemyError):
        return "the database"
    name = getattr(exc, "filename", None)
    return f"a file ({Path(name).name})" if isinstance(name, str) and name else "a file"


def _renew_before_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint being released: the renewal belongs to the outermost commit
    ctx = session.info.pop(_FENCED, None)
    if ctx is not None:
        ctx._renew_in(session)  # LeaseLost here aborts the commit: the transaction rolls back


def _disarm_after(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost transaction ended (a rollback; a commit already disarmed)
        session.info.pop(_FENCED, None)


class JobContext:
    """What domain code gets: the job's params, and stage/progress/event reporting and cancel checks.

    Its writes use their own short transactions; on SQLite do not call it while holding an open
    write transaction in the same thread (the database has a single writer).
    """

    PROGRESS_WRITE_INTERVAL = 1.0  # seconds; the heartbeat also flushes the latest progress

    def __init__(self, job: Job, owner: str, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self.job_id, self.kind, self.params = job.id, job.kind, dict(job.params or {})
        self.attempt, self.owner = job.attempts, owner
        self.settings, self.session_factory = settings, session_factory
        self._live = LiveProgress()  # the latest progress; the heartbeat flushes it too
        self._last_write = 0.0
        self._cancel = bool(job.cancel_requested)
        self._lost = False

    def _write(self, **values: Any) -> None:
        with self.session_factory() as session:
            held = update_if_held(session, self.job_id, self.owner, values)
            session.commit()
        if not held:
            self._lost = True
            raise LeaseLost(f"job {self.job_id}: lease of {self.owner} lost")

    @property
    def current_stage(self) -> str | None:
        return self._live.stage[0] if self._live.stage else None

    def live_values(self) -> dict[str, Any]:
        """The latest progress as job column values (what the heartbeat flushes)."""
        return dict(self._live.values)

    def plan(self, names: list[str]) -> None:
        """Declare the job's stages up front, so it reports overall progress; restarts the log."""
        self._write(**self._live.plan(names))

    def stage(self, name: str, total: int = 0, unit: str | None = None) -> None:
        """Enter stage `name` (progress restarts at 0 of `total` `unit`s); the previous one ends.

        Writes a stage.end event for the previous stage (with its seconds) and a stage.start one.
        """
        values, ended = self._live.start(name, total, unit)
        self._last_write = time.monotonic()
        self._write(**values)
        if ended is not None:
            self._end_event(*ended)
        self.event(f"stage {name}", type="stage.start", stage=name, total=total)

    def end_stage(self) -> None:
        """End the running stage: its stage.end event, and done in the stage log."""
        values, ended = self._live.end()
        if values:
            self._write(**values)
        if ended is not None:
            self._end_event(*ended)

    def _end_event(self, name: str, seconds: float) -> None:
        self.event(f"stage {name} done in {seconds:.1f}s", type="stage.end", stage=name, seconds=seconds)

    def progress(
        self, done: int, total: int | None = None, *, unit: str | None = None,
        metrics: dict[str, Any] | None = None, fraction: float | None = None, eta: float | None = None,
    ) -> None:
        """Report progress; written at most once per PROGRESS_WRITE_INTERVAL (and on the last step).

        Args:
            done, total: units done of `total` in this stage (total None: the stage's).
            unit: what is counted (None: as before in this stage); a new unit restarts the rate.
            metrics: the latest live numbers (None: keep the last ones); non-finite floats become null.
            fraction: the stage's fraction done when it is not done/total (a stage in phases).
            eta: seconds left in the stage when the caller knows better than done/total at the
                measured rate.
        """
        values = self._live.update(done, total, unit, metrics, fraction, eta)
        now = time.monotonic()
        if done >= values["progress_total"] or now - self._last_write >= self.PROGRESS_WRITE_INTERVAL:
            self._last_write = now
            self._write(**values)

    def fence(self, session: Session) -> None:
        """Inside `session`'s open transaction, prove this worker still holds the lease.

        Locks the job row until that transaction ends, so a final write committed after a
        successful fence cannot race a reaper or a successor. Raises LeaseLost otherwise.

        The lease is renewed here and again just before the transaction commits: while the
        transaction holds the row, the heartbeat (another connection) cannot renew it, so a
        write longer than the lease would otherwise commit with an expired lease, and the
        reaper, blocked on the row until then, would take the job from a worker that finished.
        """
        self._renew_in(session)
        if "adaptinf.fence_hooks" not in session.info:  # once per session; they act only when armed
            session.info["adaptinf.fence_hooks"] = True
            event.listen(session, "before_commit", _renew_before_commit)
            event.listen(session, "after_transaction_end", _disarm_after)
        session.info[_FENCED] = self

    def _renew_in(self, session: Session) -> None:
        session.flush()  # pending writes first: the renewed lease starts after them
        if not update_if_held(session, self.job_id, self.owner, lease_values(self.settings.lease_seconds)):
            self._lost = True
            raise LeaseLost(f"job {self.job_id}: lease of {self.owner} lost")

    def event(self, message: str, level: str = "info", **data: Any) -> None:
        with self.session_factory() as session:
            add_event(session, self.job_id, message, level=level, data=data or None)
            session.commit()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel

    def check_cancelled(self) -> None:
        """Raise JobCancelled if a cancel was seen, LeaseLost if the lease is gone."""
        if self._lost:
            raise LeaseLost(f"job {self.job_id}: lease of {self.owner} lost")
        if self._cancel:
            raise JobCancelled(self.job_id)


class Heartbeat(threading.Thread):
    """Renews a running job's lease every `interval` seconds and picks up its cancel flag."""

    def __init__(self, ctx: JobContext, interval: float) -> None:
        super().__init__(name=f"heartbeat-{ctx.job_id}", daemon=True)
        self.ctx, self.interval = ctx, interval
        self._stop_event = threading.Event()

    def beat(self) -> None:
        ctx = self.ctx
        with ctx.session_factory() as session:
            held, cancel = renew_lease(session, ctx.job_id, ctx.owner, ctx.settings.lease_seconds, ctx.live_values())
        ctx._cancel = ctx._cancel or cancel
        if not held:
            ctx._lost = True
            self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a DB blip must not kill the heartbeat; the lease covers it
                log.exception("heartbeat of job %s failed; retrying in %ss", self.ctx.job_id, self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()


class JobTask(Task):
    """Celery Task base of every job: lease, heartbeat, domain call, final status.

    A task receives only the job id. A delivery the lease refuses (the job finished, or another
    live worker holds it) is acked and ignored. Only TRANSIENT_ERRORS are retried.
    """

    kind: str = ""
    job_queue: str = ""
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = 5
    retry_backoff_seconds = 2.0

    def run_job(self, job_id: str, fn: Callable[[JobContext], dict[str, Any] | None]) -> dict[str, Any]:
        settings = get_settings()
        factory = get_sessionmaker(settings.resolved_database_url)
        owner = new_lease_owner()
        try:
            with factory() as session:
                job = acquire_lease(session, job_id, owner, settings.lease_seconds)
        except TRANSIENT_ERRORS as exc:
            raise self._retry(exc) from exc
        if job is None:
            log.info("job %s: not acquired (finished, held by a live worker, or unknown); ignoring", job_id)
            return {"job_id": job_id, "ran": False}
        ctx = JobContext(job, owner, settings, factory)
        started = time.monotonic()
        heartbeat = Heartbeat(ctx, settings.heartbeat_seconds)
        heartbeat.start()
        try:
            ctx.check_cancelled()
            result = fn(ctx)
            outcome: tuple[str, dict | None, dict | None] = (SUCCEEDED, result, None)
        except JobCancelled:
            outcome = (CANCELLED, None, {"code": "cancelled", "message": "cancelled on request"})
        except LeaseLost:
            log.warning("job %s: lease lost while running; leaving it to its new owner", job_id)
            return {"job_id": job_id, "ran": False}
        except TRANSIENT_ERRORS as exc:
            heartbeat.stop()
            self._release(factory, job_id, owner)
            raise self._retry(exc) from exc
        except Exception as exc:  # noqa: BLE001 - any other error is the job's failure, recorded in SQL
            log.exception("job %s (%s) failed", job_id, self.kind)
            outcome = (FAILED, None, error_of(exc))
        finally:
            heartbeat.stop()
        status, result, error = outcome
        if status == SUCCEEDED:
            # Bookkeeping after `fn` committed (a round stage has even sent the next jobs): a database
            # blip here costs the stage log one entry, never a retry of the job.
            try:
                ctx.end_stage()
            except Exception:  # noqa: BLE001 - bookkeeping only (a lost lease: finish_job below says so)
                log.exception("job %s: could not record the end of its last stage", job_id)
        with factory() as session:
            if not finish_job(session, job_id, owner, status, result=result, error=error):
                log.warning("job %s: lease lost before it could be marked %s", job_id, status)
        observe_job(self.kind, status, time.monotonic() - started, result)
        return {"job_id": job_id, "ran": True, "status": status}

    def _release(self, factory: sessionmaker[Session], job_id: str, owner: str) -> None:
        try:
            with factory() as session:
                finish_job(session, job_id, owner, QUEUED)
        except Exception:  # noqa: BLE001 - if SQL is down the lease simply expires and the reaper requeues
            log.exception("job %s: could not release the lease after a transient error", job_id)

    def _retry(self, exc: BaseException) -> BaseException:
        # Raises celery's Retry (or `exc` itself once max_retries is spent: the job then stays
        # queued in SQL and the reaper re-sends it, bounded by the job's max_attempts).
        countdown = self.retry_backoff_seconds * 2**self.request.retries
        log.warning("task %s: transient %s; retry in %.0fs", self.name, type(exc).__name__, countdown)
        return self.retry(exc=exc, countdown=countdown)


def job_task(app: Celery, kind: str, queue: str) -> Callable[[Callable[[JobContext], dict[str, Any] | None]], Task]:
    """Register domain function `fn(ctx) -> result dict` as task ``adaptinf.<kind>`` on `queue`."""
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}, got {queue!r}")

    def decorate(fn: Callable[[JobContext], dict[str, Any] | None]) -> Task:
        def run(self: JobTask, job_id: str) -> dict[str, Any]:
            return self.run_job(job_id, fn)

        run.__name__, run.__doc__, run.__module__ = fn.__name__, fn.__doc__, fn.__module__
        # The route matters only to code calling task.delay(); enqueue_job names the queue itself.
        app.conf.task_routes = {**dict(app.conf.task_routes or {}), task_name(kind): {"queue": queue}}
        return app.task(base=JobTask, bind=True, name=task_name(kind), kind=kind, job_queue=queue)(run)

    return decorate
