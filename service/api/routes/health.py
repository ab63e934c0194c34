"""Liveness, readiness and Prometheus metrics (no auth: meant for the orchestrator and scraper;
ADAPTINF_PUBLIC_METRICS=false puts /metrics behind a key, see service/api/access.py)."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.api.deps import SettingsDep
from service.api.errors import ApiProblem
from service.api.openapi import problem_responses
from service.broker import broker_ping

router = APIRouter(tags=["health"])


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    checks: dict[str, Literal["ok", "unreachable"]]


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


@router.get("/readyz", response_model=ReadyOut, responses=problem_responses(503))
async def readyz(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Readiness: the database and the broker answer (503 problem otherwise)."""
    checks = {
        "database": "ok" if await run_in_threadpool(_database_ok, request) else "unreachable",
        "broker": "ok" if await run_in_threadpool(broker_ping, settings) else "unreachable",
    }
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        raise ApiProblem(503, f"not ready: {', '.join(failing)} unreachable", code="not_ready", checks=checks)
    return {"status": "ready", "checks": checks}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    body = await run_in_threadpool(request.app.state.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
