"""The worker's Celery app: `celery -A workers.celery_app worker -Q ingest,gpu,select,train`.

Importing it registers every task module. At start-up the worker checks ADAPTINF_DEVICE and exits
with EXIT_CONFIG if this machine cannot use it; once ready it rewrites its heartbeat file (read by
`adaptinf worker-health`) and runs the lease reaper in a background thread (see workers/reaper.py;
several reapers at once are safe).
"""
from __future__ import annotations

import logging
import sys

from celery import signals

from core.worker_health import EXIT_CONFIG, HeartbeatWriter
from service.broker import make_celery
from service.config import get_settings
from service.db.session import get_engine

log = logging.getLogger(__name__)

app = make_celery(get_settings())

_reaper = None
_heartbeat: HeartbeatWriter | None = None
_device = "auto"


@signals.worker_init.connect
def _check_device(**_: object) -> None:
    """Before the pool starts and before "ready": refuse a device this machine cannot use."""
    global _device
    from workers.device import DeviceUnavailable, check_device

    setting = get_settings().device
    try:
        _device = check_device(setting)
    except DeviceUnavailable as exc:
        # One line on stderr (logging is not set up yet); SystemExit passes celery's signal
        # dispatch, which catches only Exception, and ends the worker with this code.
        print(f"adaptinf worker: refusing to start: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIG)
    log.info("device: ADAPTINF_DEVICE=%s -> %s", setting, _device)


@signals.worker_init.connect
def _serve_metrics(**_: object) -> None:
    port = get_settings().worker_metrics_port
    if port is not None:
        from workers.metrics import serve_metrics

        serve_metrics(port)


@signals.worker_ready.connect
def _start_reaper_and_heartbeat(**_: object) -> None:
    global _reaper, _heartbeat
    from workers.reaper import ReaperThread

    settings = get_settings()
    _reaper = ReaperThread(settings)
    _reaper.start()
    log.info("reaper started (every %ss)", settings.reaper_interval_seconds)
    queues = ",".join(sorted(app.amqp.queues.consume_from))  # sender: the consumer; -Q set these
    _heartbeat = HeartbeatWriter(settings.heartbeat_file, settings.heartbeat_seconds,
                                 lambda: {"queues": queues, "device": _device})
    _heartbeat.start()
    log.info("heartbeat file %s (every %ss)", settings.heartbeat_file, settings.heartbeat_seconds)


@signals.worker_shutdown.connect
def _stop_heartbeat_and_reaper(**_: object) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()  # first: the health check fails as soon as the worker begins to stop
    if _reaper is not None:
        _reaper.stop()


@signals.worker_process_shutdown.connect
def _task_process_ended(pid: int | None = None, **_: object) -> None:
    from workers.metrics import process_ended

    if pid is not None:
        process_ended(pid)


@signals.worker_process_init.connect
def _fresh_db_connections(**_: object) -> None:
    # A prefork child must not reuse pooled connections inherited from its parent's sockets.
    get_engine(get_settings().resolved_database_url).dispose(close=False)


_threads_set = False


@signals.task_prerun.connect
def _limit_torch_threads(**_: object) -> None:
    """ADAPTINF_TORCH_THREADS, once, in the process that runs tasks (the solo pool's process or
    each prefork child; a prefork parent never imports torch for it)."""
    global _threads_set
    threads = get_settings().torch_threads
    if threads is not None and not _threads_set:
        import torch

        torch.set_num_threads(threads)
        _threads_set = True
        log.info("torch uses %d CPU threads", threads)


# Task modules last: they import `app` from here.
from workers.tasks import index  # noqa: E402,F401
from workers.tasks import ingest  # noqa: E402,F401
from workers.tasks import rounds  # noqa: E402,F401
