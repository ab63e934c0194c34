"""Live progress of a job: rates, ETAs, the stage log, and overall progress across stages.

Plain Python, shared by the workers (who measure) and the API (which reports). Every ETA here
is an estimate: work done so far, extrapolated at the pace it went.

A job's stage log (`jobs.stages`) is a list of {"name", "status", "started_at", "seconds"}, status
pending | running | done, in the order the stages run. A job that declares its plan up front
(a round, an ingest) lists its pending stages too, and so gets an overall progress.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

PENDING, RUNNING, DONE = "pending", "running", "done"

# Relative time of each stage of a job kind, for the overall fraction and ETA. Rough shares of a
# round's time on a 7B LLaVA pool: features (a forward and backward pass per candidate) dominate,
# then training on the selection (a fraction of the pool, a few epochs) and the warm-up (a small
# seeded subset); select, evaluation and the SQL stages are short. Only their ratios matter, and
# only until the round has done enough work for its own pace to take over (`overall`).
STAGE_WEIGHTS: dict[str, dict[str, float]] = {
    "round": {"prepare": 0.02, "warmup": 0.10, "features": 0.45, "select": 0.06, "train": 0.27, "eval": 0.08,
              "finalize": 0.02},
    # parse validates every record and extracts the archive; images are moved to the blob store;
    # write is one bulk INSERT
    "ingest": {"parse": 0.5, "images": 0.25, "write": 0.25},
}

#: At most this many train.step events per training run (a round trains twice at most: its
#: warm-up and its selection), so a long run does not flood the job_events table.
MAX_STEP_EVENTS = 100


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def eta_seconds(done: float, total: float, rate: float | None) -> float | None:
    """Seconds left at `rate` units per second (None without a positive rate or a total)."""
    if rate is None or not rate > 0 or total <= 0:
        return None
    return max(0.0, (total - done) / rate)


class RateMeter:
    """Units per second within one stage, measured from its first report on.

    The time before the first report (loading a model, reading inputs) is left out of the rate:
    it is not spent again per unit, so counting it would overstate the time left. With only one
    report so far the rate is that report's units over the time since the stage started.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.reset(now)

    def reset(self, now: float, unit: str | None = None) -> None:
        self.started, self.unit = now, unit
        self.first: tuple[float, float] | None = None  # (time, done) of the first report
        self.last = 0.0
        self.rate: float | None = None

    def observe(self, done: float, now: float, unit: str | None = None) -> float | None:
        """Record `done` units at time `now` (seconds, monotonic); returns the rate. A change of
        unit (a stage moving to its next phase) or a count going back starts the meter afresh."""
        if unit != self.unit or done < self.last:
            self.reset(now if self.first is not None else self.started, unit)
        self.last = done
        if self.first is None:
            if done > 0:
                self.first = (now, done)
                self.rate = done / (now - self.started) if now > self.started else None
            return self.rate
        t0, d0 = self.first
        if now > t0 and done > d0:
            self.rate = (done - d0) / (now - t0)
        return self.rate


def step_event_interval(total: int, max_events: int = MAX_STEP_EVENTS) -> int:
    """Every how many steps a train.step event is written: at most `max_events` per run."""
    return max(1, math.ceil(total / max_events))


def is_logged_step(step: int, total: int, max_events: int = MAX_STEP_EVENTS) -> bool:
    """Whether step `step` (1-based) of `total` gets a train.step event: every
    `step_event_interval` steps, and always the last one."""
    return step >= total or step % step_event_interval(total, max_events) == 0


# ---------------------------------------------------------------- the stage log


def plan_stages(names: list[str]) -> list[dict[str, Any]]:
    """A stage log with every stage of the plan still pending."""
    return [{"name": n, "status": PENDING, "started_at": None, "seconds": None} for n in names]


def start_stage(stages: list[dict[str, Any]] | None, name: str, now: datetime) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Enter stage `name`: the running stage ends (done, with its seconds), pending stages planned
    before `name` are dropped (the job skipped them), `name` runs (inserted before the pending
    stages if it was not planned).

    Returns the new log and the ended stage's entry (None if none was running).
    """
    out, ended = end_running(stages, now)
    names = [s["name"] for s in out]
    if name in names:
        k = names.index(name)
        out = [s for i, s in enumerate(out) if i >= k or s["status"] != PENDING]
        k = [s["name"] for s in out].index(name)
        out[k] = {**out[k], "status": RUNNING, "started_at": iso(now), "seconds": None}
    else:  # unplanned: it runs now, so before the stages still pending
        k = next((i for i, s in enumerate(out) if s["status"] == PENDING), len(out))
        out.insert(k, {"name": name, "status": RUNNING, "started_at": iso(now), "seconds": None})
    return out, ended


def end_running(stages: list[dict[str, Any]] | None, now: datetime) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The log with its running stage ended (done, seconds since it started); and that entry."""
    out, ended = [dict(s) for s in stages or []], None
    for s in out:
        if s["status"] == RUNNING:
            started = parse_iso(s.get("started_at"))
            s["status"], s["seconds"] = DONE, round((now - started).total_seconds(), 3) if started else None
            ended = s
    return out, ended


# ---------------------------------------------------------------- overall progress


def overall(
    stages: list[dict[str, Any]] | None,
    kind: str,
    stage_fraction: float | None,
    stage_eta: float | None,
    now: datetime,
    *,
    phased: bool = False,
) -> dict[str, Any] | None:
    """{fraction, eta_seconds, stages: [{name, status, fraction}]} of a job with a stage log.

    The fraction weighs each stage's own fraction (done 1, pending 0, running `stage_fraction`)
    by `STAGE_WEIGHTS[kind]` (equal weights for a kind or stage not listed).

    The ETA is an estimate: the running stage's time left, plus the pending stages' weights, each
    weight costing the seconds per unit of weight the job took so far (time since its first stage
    started over the weighted fraction done). The running stage's time left is its reported ETA
    (from its measured rate); for a stage that reports in phases (`phased`: select reads shards,
    then selects clusters), whose ETA covers the current phase only, the larger of that and the
    stage's own pace over its fraction (time in the stage x (1 - f) / f). Without either, its
    remaining weight at the job's pace. None until some work is done.
    """
    if not stages:
        return None
    weights = STAGE_WEIGHTS.get(kind, {})
    default = 1.0 / len(stages)
    rows, done_w, total_w, pending_w, running_left = [], 0.0, 0.0, 0.0, 0.0
    running_eta: float | None = None
    running_pace: float | None = None  # the running stage's time left at its own pace so far
    for s in stages:
        w = weights.get(s["name"], default)
        f = 1.0 if s["status"] == DONE else 0.0
        if s["status"] == RUNNING:
            f = min(1.0, max(0.0, stage_fraction or 0.0))
            running_left, running_eta = w * (1.0 - f), stage_eta
            stage_start = parse_iso(s.get("started_at"))
            if phased and stage_start is not None and f > 0:
                running_pace = max(0.0, (now - stage_start).total_seconds()) * (1.0 - f) / f
        elif s["status"] == PENDING:
            pending_w += w
        rows.append({"name": s["name"], "status": s["status"], "fraction": round(f, 4)})
        done_w, total_w = done_w + w * f, total_w + w
    fraction = done_w / total_w if total_w > 0 else 0.0
    started = min((t for t in (parse_iso(s.get("started_at")) for s in stages) if t), default=None)
    eta = None
    if started is not None and done_w > 0:
        per_weight = max(0.0, (now - started).total_seconds()) / done_w
        own = [t for t in (running_eta, running_pace) if t is not None]
        left = max(own) if own else running_left * per_weight
        eta = round(left + pending_w * per_weight, 1)
    if all(s["status"] == DONE for s in stages):
        fraction, eta = 1.0, 0.0
    return {"fraction": round(fraction, 4), "eta_seconds": eta, "stages": rows}
