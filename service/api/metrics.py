"""Prometheus metrics: requests by route template and status, and jobs by status read at scrape time."""
from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.statuses import STATUSES
from service.db.models import Job


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


class Metrics:
    """One registry per app (several apps may live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "adaptinf_http_requests", "HTTP requests.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "adaptinf_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=self.registry,
        )

    def watch_jobs(self, sessionmaker: Callable[[], Session]) -> None:
        self.registry.register(JobsCollector(sessionmaker))


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
