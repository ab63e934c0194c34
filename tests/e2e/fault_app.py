"""The fault-matrix workers' Celery app: `workers.celery_app` itself plus gates that hold a job at
a known point, so the test faults it exactly there. Test-only: the matrix starts its workers with
`celery -A fault_app` (tests/e2e on PYTHONPATH); the service never loads this module.

A gate is a file `<FAULT_GATES_DIR>/<job kind>.<point>.armed` that the test creates. The first job
of that kind to reach the point, on its first attempt, claims it (a rename: atomic, so exactly
one job does), writes `<kind>.<point>.held` with its job id and pid, and waits until the test
deletes that file, or kills the process. Points:

- `start`: the job's first stage report, before it has done any work;
- `commit`: the stage's final transaction opens (`JobContext.fence`): every output written,
  nothing committed. A kill here is the worst moment: all the work is lost but its blobs.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from workers.celery_app import app  # noqa: F401 - what `celery -A fault_app` loads
from workers.jobs import JobContext

log = logging.getLogger(__name__)
GATES = Path(os.environ["FAULT_GATES_DIR"])
HOLD_LIMIT_S = 300.0  # a test that died without releasing its gate must not hold a worker forever


def hold(ctx: JobContext, point: str) -> None:
    if ctx.attempt != 1:
        return
    name = f"{ctx.kind}.{point}"
    claimed = GATES / f"{name}.claimed-{os.getpid()}"
    try:
        os.rename(GATES / f"{name}.armed", claimed)
    except FileNotFoundError:
        return  # not armed, or another job took it
    held = GATES / f"{name}.held"
    tmp = GATES / f"{name}.held.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"job_id": ctx.job_id, "pid": os.getpid()}))
    tmp.rename(held)  # the test sees the file whole or not at all
    log.warning("fault gate %s holds job %s in process %d", name, ctx.job_id, os.getpid())
    deadline = time.monotonic() + HOLD_LIMIT_S
    while held.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    log.warning("fault gate %s released job %s", name, ctx.job_id)


_stage, _fence = JobContext.stage, JobContext.fence


def _gated_stage(self: JobContext, name: str, total: int = 0, unit: str | None = None) -> None:
    if not getattr(self, "_fault_started", False):
        self._fault_started = True
        hold(self, "start")
    _stage(self, name, total, unit)


def _gated_fence(self: JobContext, session: Any) -> None:  # noqa: ANN401 - a Session
    hold(self, "commit")
    _fence(self, session)


JobContext.stage = _gated_stage  # type: ignore[method-assign]
JobContext.fence = _gated_fence  # type: ignore[method-assign]
