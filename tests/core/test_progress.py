"""core.progress: rates, ETAs, the step-event thinning, the stage log and overall progress."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.progress import (
    MAX_STEP_EVENTS, RateMeter, end_running, eta_seconds, is_logged_step, iso, overall, plan_stages, start_stage,
    step_event_interval,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def test_rate_leaves_out_the_time_before_the_first_report():
    meter = RateMeter(now=0.0)
    # 10 s of model loading, then one unit every 2 s
    assert meter.observe(1, 12.0, "steps") == pytest.approx(1 / 12)  # one report: units over the stage so far
    assert meter.observe(2, 14.0, "steps") == pytest.approx(0.5)
    assert meter.observe(5, 20.0, "steps") == pytest.approx(0.5)
    assert meter.observe(5, 21.0, "steps") == pytest.approx(4 / 9)  # a second with no new unit slows it


def test_rate_restarts_on_a_new_unit_or_a_count_going_back():
    meter = RateMeter(now=0.0)
    meter.observe(4, 4.0, "shards")
    meter.observe(8, 8.0, "shards")
    assert meter.observe(1, 10.0, "clusters") is None  # a new phase: no rate from a single instant
    assert meter.observe(5, 12.0, "clusters") == pytest.approx(2.0)
    assert meter.observe(1, 13.0, "clusters") is None  # counting again from a lower value
    assert meter.observe(3, 14.0, "clusters") == pytest.approx(2.0)


def test_eta_needs_a_positive_rate_and_a_total():
    assert eta_seconds(25, 100, 5.0) == 15.0
    assert eta_seconds(100, 100, 5.0) == 0.0 and eta_seconds(120, 100, 5.0) == 0.0
    assert eta_seconds(1, 100, None) is None and eta_seconds(1, 100, 0.0) is None and eta_seconds(0, 0, 1.0) is None


@pytest.mark.parametrize("total", [1, 7, 99, 100, 101, 250, 1000, 12_345, 1_000_000])
def test_step_events_are_at_most_the_cap_and_always_include_the_last(total):
    logged = [s for s in range(1, total + 1) if is_logged_step(s, total)]
    assert len(logged) <= MAX_STEP_EVENTS and logged[-1] == total
    every = step_event_interval(total)
    assert logged[:-1] == list(range(every, total, every))  # evenly spaced before the last
    if total <= MAX_STEP_EVENTS:
        assert logged == list(range(1, total + 1))


def test_stage_log_ends_the_running_stage_and_drops_skipped_ones():
    log = plan_stages(["prepare", "warmup", "features", "select"])
    log, ended = start_stage(log, "prepare", T0)
    assert ended is None and log[0] == {"name": "prepare", "status": "running", "started_at": iso(T0), "seconds": None}
    log, ended = start_stage(log, "features", T0 + timedelta(seconds=3))  # the round needed no warm-up
    assert ended["name"] == "prepare" and ended["seconds"] == 3.0
    assert [(s["name"], s["status"]) for s in log] == [("prepare", "done"), ("features", "running"), ("select", "pending")]
    log, _ = start_stage(log, "eval", T0 + timedelta(seconds=5))  # not planned: it runs before what is pending
    assert [(s["name"], s["status"]) for s in log] == [
        ("prepare", "done"), ("features", "done"), ("eval", "running"), ("select", "pending")]
    log, ended = end_running(log, T0 + timedelta(seconds=6))
    assert ended["name"] == "eval" and ended["seconds"] == 1.0 and all(s["status"] != "running" for s in log)


def _log(*rows):
    return [{"name": n, "status": st, "started_at": iso(T0 + timedelta(seconds=t)) if t is not None else None,
             "seconds": None} for n, st, t in rows]


def test_overall_weights_stages_and_estimates_the_rest_at_the_pace_so_far():
    stages = _log(("parse", "done", 0), ("images", "running", 50), ("write", "pending", None))
    # ingest weights parse .5, images .25, write .25; images half done after 100 s in all
    got = overall(stages, "ingest", 0.5, None, T0 + timedelta(seconds=100))
    assert got["fraction"] == pytest.approx(0.625)
    assert [s["fraction"] for s in got["stages"]] == [1.0, 0.5, 0.0]
    # 100 s per 0.625 weight: images' last 0.125 and write's 0.25 take 60 s
    assert got["eta_seconds"] == pytest.approx(60.0)
    # the running stage's own measured ETA replaces its share of the estimate (5 + 40), even when
    # the stage spent long before its first step (queued, loading a model): no pace from its start
    later = T0 + timedelta(seconds=100)
    assert overall(stages, "ingest", 0.5, 5.0, later)["eta_seconds"] == pytest.approx(45.0)
    # a stage reporting in phases: its ETA is the phase's, so its own pace (half done in its 50 s:
    # 50 s more) wins over a smaller one (5 + 40) ...
    assert overall(stages, "ingest", 0.5, 5.0, later, phased=True)["eta_seconds"] == pytest.approx(90.0)
    # ... and a larger reported ETA over its pace (70 + 40)
    assert overall(stages, "ingest", 0.5, 70.0, later, phased=True)["eta_seconds"] == pytest.approx(110.0)
    # with no fraction reported yet, images' whole weight at the job's pace (0.5 weight in 100 s),
    # as write's: 0.25 x 200 s twice
    assert overall(stages, "ingest", None, None, T0 + timedelta(seconds=100))["eta_seconds"] == pytest.approx(100.0)


def test_overall_edge_cases():
    now = T0 + timedelta(seconds=10)
    assert overall(None, "round", None, None, now) is None and overall([], "round", None, None, now) is None
    fresh = overall(_log(("prepare", "running", 0), ("features", "pending", None)), "round", None, None, now)
    assert fresh["fraction"] == 0.0 and fresh["eta_seconds"] is None  # no work done yet: no ETA
    done = overall(_log(("a", "done", 0), ("b", "done", 5)), "some-kind", None, None, now)
    assert done["fraction"] == 1.0 and done["eta_seconds"] == 0.0
    # unknown kinds weigh their stages equally; a running fraction is clamped to [0, 1]
    half = overall(_log(("a", "done", 0), ("b", "running", 5)), "some-kind", 3.0, None, now)
    assert half["fraction"] == 1.0 and half["stages"][1]["fraction"] == 1.0
