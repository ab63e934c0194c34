"""A small synchronous HTTP client of the API (httpx) and a job watcher with a progress line.

Used by the `adaptinf` client commands; usable from Python too:
`Api(url, key).get("/v1/pools")`, `watch_job(api, job_id)`.
"""
from __future__ import annotations

import sys
import time
import uuid
from typing import Any, TextIO

import httpx

from core.statuses import TERMINAL



class ApiError(Exception):
    """A 4xx/5xx answer; `str()` is the one-line message the CLI prints."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        problem = problem if isinstance(problem, dict) else {}
        self.status = response.status_code
        self.problem = problem
        title = problem.get("title") or response.reason_phrase
        detail = " ".join(str(problem.get("detail") or response.text[:200]).split())  # one line
        super().__init__(f"{self.status} {title}: {detail}" if detail else f"{self.status} {title}")


class Api:
    """A thin httpx wrapper: base URL, bearer key, errors raised as ApiError."""

    def __init__(self, url: str, key: str | None, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> httpx.Response:
        # `retry` only for requests made safe to repeat (GETs, POSTs with an Idempotency-Key).
        for attempt in range(3 if retry else 1):
            try:
                response = self.http.request(method, path, **kwargs)
                break
            except httpx.TransportError:
                if attempt == (2 if retry else 0):
                    raise
                time.sleep(0.5 * (attempt + 1))
        if response.status_code >= 400:
            raise ApiError(response)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, retry=True, **kwargs).json()

    def create(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"Idempotency-Key": f"cli-{uuid.uuid4()}"}
        return self.call("POST", path, json=body, headers=headers, retry=True).json()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def progress_line(job: dict[str, Any], elapsed: float, width: int = 30) -> str:
    """`stage [#####.....] done/total  pct%  mm:ss  status`."""
    done, total = job["progress"]["done"], job["progress"]["total"]
    frac = min(1.0, done / total) if total else (1.0 if job["status"] == "succeeded" else 0.0)
    bar = "#" * int(frac * width) + "." * (width - int(frac * width))
    stage = job.get("stage") or job["kind"]
    return f"{stage:<12} [{bar}] {done}/{total} {frac * 100:5.1f}%  {_clock(elapsed)}  {job['status']}"


def watch_job(api: Api, job_id: str, *, interval: float = 1.0, out: TextIO | None = None) -> dict[str, Any]:
    """Poll a job until it ends, redrawing one progress line on `out` (stderr); return the job."""
    out = out or sys.stderr
    tty = out.isatty()
    start, last, width = time.monotonic(), None, 0
    while True:
        job = api.get(f"/v1/jobs/{job_id}")
        line = progress_line(job, time.monotonic() - start)
        state = (job["status"], job["stage"], job["progress"]["done"], job["progress"]["total"])
        if tty:  # redraw in place; pad to wipe a longer previous line
            out.write("\r" + line.ljust(width))
            width = max(width, len(line))
        elif state != last:  # a log file gets a line per change, not one per poll
            out.write(line + "\n")
        out.flush()
        last = state
        if job["status"] in TERMINAL:
            if tty:
                out.write("\n")
            return job
        time.sleep(interval)
