"""The Celery broker: app factory, job enqueueing and a readiness probe.

Importable by the API (no worker code, no torch): jobs are sent by task *name* with the job id as
the only argument; SQL is the source of truth, so there is no result backend.

Broker modes: a Redis URL in production; ``filesystem://`` (the default) in the embedded mode, a
folder under ``settings.broker_dir`` served by :class:`FilesystemTransport`, a hardened subclass
of kombu's filesystem transport (see its docstring for why).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from queue import Empty

from celery import Celery
from kombu import Exchange, Queue
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from service.config import Settings

log = logging.getLogger(__name__)

#: Every queue of the system (DESIGN §3); a worker consumes a subset of them.
QUEUES: tuple[str, ...] = ("ingest", "gpu", "select", "train")
TASK_PREFIX = "adaptinf."


def task_name(kind: str) -> str:
    """The Celery task name of a job kind: ``ingest`` -> ``adaptinf.ingest``."""
    return f"{TASK_PREFIX}{kind}"


class FilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel with atomic publish and an exactly-once claim.

    Upstream (kombu 5.x) writes a message in place, so a consumer can pick up a half-written
    file, and claims a message by ``shutil.move`` into the system temp folder, which is a copy
    plus delete (two consumers can both get it) whenever /tmp is another filesystem. Here a
    message is written to a dot-file, fsynced and renamed into the queue folder, and claimed by
    ``os.rename`` into a ``claimed`` folder next to it: a same-filesystem rename succeeds for
    exactly one process, so each message goes to one consumer.
    """

    def _put(self, queue, payload, **kwargs):  # noqa: ANN001, ANN003
        folder = Path(self.data_folder_out)
        # Zero-padded wall-clock nanoseconds keep FIFO order across processes in a plain sort.
        name = f"{time.time_ns():020d}_{uuid.uuid4().hex}.{queue}.msg"
        tmp = folder / f".{name}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, folder / name)
        except OSError as exc:
            raise ChannelError(f"cannot write message {name!r} to {folder}") from exc

    def _get(self, queue):  # noqa: ANN001
        suffix = f".{queue}.msg"
        folder = Path(self.data_folder_in)
        claimed = folder.parent / "claimed"
        for name in sorted(os.listdir(folder)):
            if name.startswith(".") or name.partition(".")[2] != suffix[1:]:
                continue
            target = claimed / f"{os.getpid()}-{name}"
            try:
                os.rename(folder / name, target)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                payload = target.read_bytes()
            finally:
                target.unlink(missing_ok=True)
            return loads(bytes_to_str(payload))
        raise Empty()


class FilesystemTransport(filesystem.Transport):
    Channel = FilesystemChannel


def filesystem_options(broker_dir: Path) -> dict[str, object]:
    """Transport options for the embedded broker folder; creates its sub-folders."""
    queue_dir, claimed, control = broker_dir / "queue", broker_dir / "claimed", broker_dir / "control"
    for d in (queue_dir, claimed, control):
        d.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "control_folder": str(control),
        # A folder poll costs one listdir; half a second keeps job pickup snappy.
        "polling_interval": 0.5,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app for the configured broker, with the queues and reliability options set."""
    url = settings.resolved_broker_url
    app = Celery("adaptinf", set_as_current=False)
    conf: dict[str, object] = {
        "broker_url": url,
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        "task_default_queue": QUEUES[0],
        "task_create_missing_queues": False,
        # A message is acked only after the task ends, and a worker holds one at a time, so a
        # crash loses at most the job it was running, which the lease reaper then re-enqueues.
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
    }
    if url.startswith("filesystem://"):
        conf["broker_url"] = "filesystem://localhost//"  # the folder is local; naming it stops a kombu warning
        conf["broker_transport"] = f"{__name__}:FilesystemTransport"
        conf["broker_transport_options"] = filesystem_options(settings.broker_dir)
        # Remote control uses fanout queues per worker; on a folder those of a dead worker would
        # collect broadcast files forever. Events are off by default anyway.
        conf["worker_enable_remote_control"] = False
    app.conf.update(conf)
    return app


_apps: dict[tuple[str, str], Celery] = {}
_apps_lock = threading.Lock()


def _app_for(settings: Settings) -> Celery:
    # One app per broker per process: its producer pool reuses connections across requests.
    key = (settings.resolved_broker_url, str(settings.broker_dir))
    with _apps_lock:
        if key not in _apps:
            _apps[key] = make_celery(settings)
        return _apps[key]


def enqueue_job(settings: Settings, job_id: str, kind: str, queue: str) -> bool:
    """Send ``adaptinf.<kind>(job_id)`` to ``queue``; call it after the job's row is committed.

    Returns False (and logs) when the broker cannot be reached: the job stays ``queued`` in SQL
    and the reaper re-sends it, so a caller that already committed must not fail the request.
    """
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}, got {queue!r}")
    try:
        _app_for(settings).send_task(
            task_name(kind),
            args=[job_id],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
        )
    except Exception:  # kombu raises OperationalError, redis its own ConnectionError
        log.exception("could not enqueue job %s (%s) on %s; the reaper will re-send it", job_id, kind, queue)
        return False
    return True


def broker_ping(settings: Settings) -> bool:
    """Whether the broker answers (Redis) or its folder is writable (embedded)."""
    url = settings.resolved_broker_url
    if url.startswith("filesystem://"):
        try:
            options = filesystem_options(settings.broker_dir)
            return all(os.access(str(options[k]), os.W_OK) for k in ("data_folder_in", "control_folder"))
        except OSError:
            return False
    try:
        with _app_for(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            return True
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in each queue, asked of the broker (raises if it does not answer).

    A passive declare is kombu's transport-neutral count (Redis: the list lengths over its
    priority levels; the folder broker: its message files); a queue nobody has sent to yet does
    not exist, and counts 0.
    """
    depths: dict[str, int] = {}
    with _app_for(settings).connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        channel = conn.default_channel
        for queue in QUEUES:
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:
                depths[queue] = 0
    return depths
