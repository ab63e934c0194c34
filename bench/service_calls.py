"""What the service benchmarks ask of a running service: create (safe to retry), wait for a job, read
every page of a listing; and their progress log."""
from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

DONE = ("succeeded", "failed", "cancelled")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ts(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def list_all(api: Any, path: str, **params: Any) -> list[dict[str, Any]]:
    out, after = [], None
    while True:
        page = api.request("GET", path, params={**params, "limit": 100, **({"after": after} if after else {})}).json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["data"][-1]["id"]


def create(api: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A creating POST, safe to retry (an Idempotency-Key)."""
    return api.request("POST", path, json=body, idempotency_key=f"bench-{uuid.uuid4()}").json()


def wait_job(api: Any, job_id: str, what: str, poll: float = 1.0) -> dict[str, Any]:
    last = None
    while True:
        job = api.request("GET", f"/v1/jobs/{job_id}").json()
        state = (job["status"], job["stage"], job["progress"]["done"] // max(1, job["progress"]["total"] // 10))
        if state != last:
            log(f"{what}: {job['status']} {job['stage'] or ''} {job['progress']['done']}/{job['progress']['total']}")
            last = state
        if job["status"] in DONE:
            if job["status"] != "succeeded":
                raise RuntimeError(f"{what} {job['id']} {job['status']}: {job.get('error')}")
            return job
        time.sleep(poll)


def upload_dataset(api: Any, path: Path, name: str, skill: str = "text") -> dict[str, Any]:
    """POST a JSON Lines file as a dataset; the answer holds its id and its ingest job's id."""
    with open(path, "rb") as f:
        return api.request("POST", "/v1/datasets", files={"file": (path.name, f, "application/x-ndjson")},
                           data={"name": name, "skill": skill}, timeout=None).json()


def stage_spans(children: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Each stage kind (round.features → features) → (first start, last end) over its jobs."""
    spans: dict[str, tuple[float, float]] = {}
    for job in children:
        if job["status"] != "succeeded":
            continue
        kind = job["kind"].split(".", 1)[1]
        start, end = ts(job["started_at"]), ts(job["finished_at"])
        if kind in spans:
            start, end = min(start, spans[kind][0]), max(end, spans[kind][1])
        spans[kind] = (start, end)
    return spans
