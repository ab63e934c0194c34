"""A job's live progress as its worker holds it: the job row's progress columns, the rate meter and
the stage log (core.progress). No I/O: `JobContext` writes what this computes."""
from __future__ import annotations

import time
from typing import Any

from core.progress import RateMeter, end_running, eta_seconds, plan_stages, start_stage, utcnow
from core.text import json_safe


class LiveProgress:
    """The latest progress values (job column name → value) and the stage being timed."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {"progress_done": 0, "progress_total": 0}
        self.meter = RateMeter(time.monotonic())
        self.stages: list[dict[str, Any]] | None = None  # the stage log, once the job declared a plan
        self.stage: tuple[str, float] | None = None  # the running stage and its monotonic start

    def plan(self, names: list[str]) -> dict[str, Any]:
        """Declare the job's stages; returns the columns to write."""
        self.stages = plan_stages(names)
        return {"stages": self.stages}

    def start(self, name: str, total: int, unit: str | None) -> tuple[dict[str, Any], tuple[str, float] | None]:
        """Enter stage `name`: the columns to write, and (name, seconds) of the stage it ended."""
        now = time.monotonic()
        ended = self._seconds(now)
        self.stage = (name, now)
        self.meter.reset(now, unit)
        self.values = {"progress_done": 0, "progress_total": total, "progress_unit": unit, "progress_rate": None,
                       "progress_eta": None, "progress_fraction": None, "metrics": None}
        out: dict[str, Any] = {"stage": name, **self.values}
        if self.stages is not None:
            self.stages, _ = start_stage(self.stages, name, utcnow())
            out["stages"] = self.stages
        return out, ended

    def end(self) -> tuple[dict[str, Any], tuple[str, float] | None]:
        """End the running stage: the columns to write (none without a plan), and (name, seconds)."""
        ended = self._seconds(time.monotonic())
        self.stage = None
        if ended is None or self.stages is None:
            return {}, ended
        self.stages, _ = end_running(self.stages, utcnow())
        return {"stages": self.stages}, ended

    def update(self, done: int, total: int | None, unit: str | None, metrics: dict[str, Any] | None,
               fraction: float | None, eta: float | None) -> dict[str, Any]:
        """Record a progress report (see `JobContext.progress`); returns the new column values."""
        last = self.values
        total = last["progress_total"] if total is None else total
        unit = last.get("progress_unit") if unit is None else unit
        rate = self.meter.observe(done, time.monotonic(), unit)
        if metrics is not None:  # JSON has no NaN (PostgreSQL refuses it): null
            metrics = json_safe(metrics)
        eta = eta if eta is not None else eta_seconds(done, total, rate)
        self.values = {
            "progress_done": done, "progress_total": total, "progress_unit": unit,
            "progress_rate": None if rate is None else round(rate, 4),
            "progress_eta": None if eta is None else round(eta, 1),
            "progress_fraction": fraction, "metrics": metrics if metrics is not None else last.get("metrics"),
        }
        return self.values

    def _seconds(self, now: float) -> tuple[str, float] | None:
        return (self.stage[0], round(now - self.stage[1], 3)) if self.stage else None
