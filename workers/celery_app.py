"""The worker's Celery app: `celery -A workers.celery_app worker -Q ingest,gpu,select,train`.

Importing it registers every task module. Each worker process also runs the lease reaper in a
background thread (see workers/reaper.py; several reapers at once are safe).
"""
from __future__ import annotations

import logging

from celery import signals

from service.broker import make_celery
from service.config import get_settings
from service.db.session import get_engine

log = logging.getLogger(__name__)

app = make_celery(get_settings())

_reaper = None


@signals.worker_ready.connect
def _start_reaper(**_: object) -> None:
    global _reaper
    from workers.reaper import ReaperThread

    _reaper = ReaperThread(get_settings())
    _reaper.start()
    log.info("reaper started (every %ss)", get_settings().reaper_interval_seconds)


@signals.worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    if _reaper is not None:
        _reaper.stop()


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
from workers.tasks import ingest  # noqa: E402,F401
from workers.tasks import rounds  # noqa: E402,F401
