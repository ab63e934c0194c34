"""Prometheus metrics: requests by route template and status; jobs by status, pool sizes and queue
depths read at scrape time.

Several API processes (`uvicorn --workers N`) each count their own requests. With
PROMETHEUS_MULTIPROC_DIR set in their environment before they start (an empty folder, one per
host), prometheus_client keeps every process's values in files there and /metrics adds them up,
whichever process answers. The scrape-time gauges come from SQL and the broker, so any process
reports the same values; the workers serve their own metrics (workers/metrics.py).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.statuses import STATUSES
from service.broker import queue_depths
from service.config import Settings
from service.db.models import Job, PoolMember

log = logging.getLogger(__name__)


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode, if this process runs in it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class JobsCollector:
    """`adaptinf_jobs{status}`: counted in SQL on each scrape, so every API replica reports the truth."""

    def __init__(self, sessionmaker: Callable[[], Session]) -> None:
        self._sessionmaker = sessionmaker

    def collect(self):  # noqa: ANN201
        gauge = GaugeMetricFamily("adaptinf_jobs", "Jobs by status.", labels=["status"])
        counts = dict.fromkeys(STATUSES, 0)
        try:
            with self._sessionmaker() as session:
                counts.update(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is down; /readyz says so
            return
        for status, n in sorted(counts.items()):
            gauge.add_metric([status], n)
        yield gauge


class PoolSizesCollector:
    """`adaptinf_pool_members{pool, status}`: members of each pool, active and pruned, from SQL."""

    def __init__(self, sessionmaker: Callable[[], Session]) -> None:
        self._sessionmaker = sessionmaker

    def collect(self):  # noqa: ANN201
        gauge = GaugeMetricFamily("adaptinf_pool_members", "Samples in each pool, by member status.",
                                  labels=["pool", "status"])
        try:
            with self._sessionmaker() as session:
                rows = session.execute(select(PoolMember.pool_id, PoolMember.status, func.count())
                                       .group_by(PoolMember.pool_id, PoolMember.status)).all()
        except Exception:  # noqa: BLE001 - as JobsCollector
            return
        for pool_id, status, n in sorted(rows):
            gauge.add_metric([pool_id, status], n)
        yield gauge


class QueueDepthCollector:
    """`adaptinf_queue_depth{queue}`: messages waiting in the broker, asked on each scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self):  # noqa: ANN201
        try:
            depths = queue_depths(self._settings)
        except Exception:  # noqa: BLE001 - a broker outage shows on /readyz, not as a failed scrape
            log.warning("queue depths: the broker does not answer", exc_info=True)
            return
        gauge = GaugeMetricFamily("adaptinf_queue_depth", "Messages waiting in each broker queue.", labels=["queue"])
        for queue, n in depths.items():
            gauge.add_metric([queue], n)
        yield gauge


class Metrics:
    """One registry per app (several apps may live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._scrape_time: list[object] = []  # collectors of what SQL and the broker know
        self.requests = Counter(
            "adaptinf_http_requests", "HTTP requests.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "adaptinf_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=self.registry,
        )

    def watch(self, sessionmaker: Callable[[], Session], settings: Settings) -> None:
        """Add the scrape-time gauges: jobs by status, pool sizes, queue depths."""
        self._scrape_time = [JobsCollector(sessionmaker), PoolSizesCollector(sessionmaker), QueueDepthCollector(settings)]
        for collector in self._scrape_time:
            self.registry.register(collector)

    def exposition(self) -> bytes:
        """The text /metrics sends: every API process's counters, in multiprocess mode."""
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        # The documented pattern: a fresh registry per scrape, reading every process's files.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for collector in self._scrape_time:
            registry.register(collector)
        return generate_latest(registry)

    def process_ended(self) -> None:
        """This process stops serving: its live gauges' files go (its counters stay in the sums)."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())


class MetricsMiddleware:
    """Pure ASGI (no body buffering): times each request and labels it by its route *template*,
    so /v1/jobs/job_1 and /v1/jobs/job_2 share one series."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
