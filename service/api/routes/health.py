"""Liveness, readiness and Prometheus metrics (no auth: meant for the orchestrator and scraper;
ADAPTINF_PUBLIC_METRICS=false puts /metrics behind a key, see service/api/access.py)."""
from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.api.deps import SettingsDep
from service.api.errors import ApiProblem
from service.api.openapi import problem_responses
from service.broker import broker_ping
from service.config import Settings
from service.disk import free_bytes

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class HealthOut(BaseModel):
    status: Literal["ok"]


class DiskOut(BaseModel):
    free_bytes: int = Field(description="bytes free on the data directory's disk")
    min_free_bytes: int = Field(description="below this, the service is not ready (ADAPTINF_MIN_FREE_DISK_MB)")


class ReadyOut(BaseModel):
    status: Literal["ready"]
    checks: dict[str, Literal["ok", "unreachable", "low"]] = Field(
        description="database, broker, disk (the data directory's); blob_store too when blobs live in an "
        "S3 bucket, whose disk the data directory's free space says nothing about")
    disk: DiskOut


@router.get("/healthz", response_model=HealthOut)
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _database_ok(request: Request) -> bool:
    try:
        with request.app.state.sessionmaker() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False


def _blob_store_ok(request: Request) -> bool:
    try:
        request.app.state.blobs.check()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready"; the log names the setting
        log.warning("readiness: the blob store does not answer", exc_info=True)
        return False


def _disk(settings: Settings) -> dict[str, int]:
    """The data directory's free space (SQLite, local blobs or the S3 cache, work files and the embedded
    broker live there)."""
    return {"free_bytes": free_bytes(settings.data_dir), "min_free_bytes": settings.min_free_disk_mb * 1024 * 1024}


@router.get("/readyz", response_model=ReadyOut, responses=problem_responses(503))
async def readyz(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Readiness: database, broker and an S3 blob store answer, the data dir's disk has room (else a 503 problem)."""
    disk = await run_in_threadpool(_disk, settings)
    checks = {
        "database": "ok" if await run_in_threadpool(_database_ok, request) else "unreachable",
        "broker": "ok" if await run_in_threadpool(broker_ping, settings) else "unreachable",
        "disk": "ok" if disk["free_bytes"] >= disk["min_free_bytes"] else "low",
    }
    if request.app.state.blobs.remote:
        checks["blob_store"] = "ok" if await run_in_threadpool(_blob_store_ok, request) else "unreachable"
    said = {"disk": f"disk low ({disk['free_bytes'] // 2**20} MiB free in the data directory, "
                    f"under ADAPTINF_MIN_FREE_DISK_MB={settings.min_free_disk_mb})"}
    failing = [said.get(name, f"{name} {state}") for name, state in checks.items() if state != "ok"]
    if failing:
        raise ApiProblem(503, f"not ready: {', '.join(failing)}", code="not_ready", checks=checks, disk=disk)
    return {"status": "ready", "checks": checks, "disk": disk}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    body = await run_in_threadpool(request.app.state.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
