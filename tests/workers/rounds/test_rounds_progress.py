"""Live progress through a real tiny round (tiny-llava, SQLite, tasks called in-process): the round
job's progress per stage (unit, rate, ETA), its overall progress, its stage/train.step/eval events,
and the checkpoint's training and evaluation metrics."""
from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from service.db.models import Checkpoint, Job, JobEvent
from service.schemas import JobOut
from tests.workers.rounds.rounds_helpers import POOL_CONFIG, RoundEnv, add_dataset, add_pool, round_env, start_round  # noqa: F401


def _job(env: RoundEnv, job_id: str) -> dict:
    with env.factory() as s:
        out = JobOut.model_validate(s.get(Job, job_id)).model_dump(mode="json")
    JobOut.model_validate(out)  # the API's response model accepts it
    return out


def test_a_round_reports_progress_rates_overall_steps_and_checkpoint_metrics(
    round_env: RoundEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.rounds import runner

    env = round_env
    a = add_dataset(env, "a", list(range(14)))
    ev = add_dataset(env, "eval", list(range(40, 44)))
    config = {**POOL_CONFIG, "training": {"batch_size": 2, "max_steps": 4}}
    pool_id = add_pool(env, config, eval_sets=((ev, "vqa"),))
    round_id, job_id = start_round(env, pool_id, [a], budget=8, seed=1)

    # inside training: the round job as the user sees it right after each optimizer step
    during_steps: list[dict] = []
    real = runner.ParentWatch.on_step
    monkeypatch.setattr(runner.ParentWatch, "on_step",
                        lambda self, info: (real(self, info), during_steps.append(_job(env, job_id))))

    # between deliveries: the round job after each stage or shard job ran
    snapshots = []
    while env.sent:
        job, kind = env.sent.pop(0)
        env.deliver(job, kind)
        snapshots.append((kind, _job(env, job_id)))

    final = snapshots[-1][1]
    assert final["status"] == "succeeded", final["error"]
    assert final["overall"]["fraction"] == 1.0 and final["overall"]["eta_seconds"] == 0.0
    # the first round warms up and the pool has an evaluation set: every stage ran, in order
    assert [(s["name"], s["status"]) for s in final["overall"]["stages"]] == [
        (n, "done") for n in ("prepare", "warmup", "features", "select", "train", "eval", "finalize")]

    # features: shards done of all, samples per second in the metrics, a rate and an ETA once a shard is done
    in_features = [j for kind, j in snapshots if kind == "round.features" and j["stage"] == "features"]
    assert in_features, "no snapshot while shards remained"
    first = in_features[0]
    assert first["progress"]["unit"] == "shards" and first["progress"]["total"] == 3  # 14 samples, shards of 6
    assert first["progress"]["done"] == 1 and first["progress"]["rate"] > 0
    assert first["metrics"]["samples_done"] == 6 and first["metrics"]["samples_total"] == 14
    assert first["metrics"]["samples_per_second"] > 0 and first["progress"]["eta_seconds"] >= 0
    running = {s["name"]: s for s in first["overall"]["stages"]}
    assert running["features"]["status"] == "running" and running["features"]["fraction"] == pytest.approx(6 / 14, abs=1e-3)
    assert (running["prepare"]["status"], running["warmup"]["status"], running["select"]["status"]) == ("done", "done", "pending")
    assert 0 < first["overall"]["fraction"] < 1 and first["overall"]["eta_seconds"] > 0

    # the overall fraction never goes back between deliveries
    fractions = [j["overall"]["fraction"] for _, j in snapshots]
    assert fractions == sorted(fractions)

    # training: steps, loss and lr live on the round job; warm-up (ceil(0.2·14 / 2) = 2 steps) then train (8 selected / 2 = 4)
    by_stage = {}
    for j in during_steps:
        by_stage.setdefault(j["stage"], []).append(j)
    assert sorted(by_stage) == ["train", "warmup"]
    last = by_stage["train"][-1]
    assert last["progress"]["unit"] == "steps" and (last["progress"]["done"], last["progress"]["total"]) == (4, 4)
    assert last["metrics"]["step"] == 4 and last["metrics"]["max_steps"] == 4 and math.isfinite(last["metrics"]["loss"])
    assert last["metrics"]["lr"] >= 0 and last["progress"]["rate"] > 0 and last["progress"]["eta_seconds"] == 0
    assert {s["name"]: s["status"] for s in last["overall"]["stages"]}["train"] == "running"

    with env.factory() as s:
        events = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        types = [(e.data or {}).get("type") for e in events]
        steps = [e.data for e in events if (e.data or {}).get("type") == "train.step"]
        # every step of both short runs (fewer than MAX_STEP_EVENTS), each with a finite loss
        assert [(d["stage"], d["step"]) for d in steps] == [("warmup", 1), ("warmup", 2)] + [("train", k) for k in range(1, 5)]
        assert all(math.isfinite(d["loss"]) and d["lr"] >= 0 and d["epoch"] > 0 for d in steps)
        starts = [e.data["stage"] for e in events if (e.data or {}).get("type") == "stage.start"]
        ends = [(e.data["stage"], e.data["seconds"]) for e in events if (e.data or {}).get("type") == "stage.end"]
        assert starts == ["prepare", "warmup", "features", "select", "train", "eval", "finalize"]
        assert [n for n, _ in ends] == starts and all(sec >= 0 for _, sec in ends)
        evals = {e.data["checkpoint"]: e.data["skills"] for e in events if (e.data or {}).get("type") == "eval"}
        assert set(evals) == {"warmup", "round", "base"} and evals["round"]["vqa"]["n"] == 4
        assert math.isfinite(evals["round"]["vqa"]["loss"])
        assert types.index("eval") > types.index("train.step")

        ckpts = {c.kind: c for c in s.scalars(select(Checkpoint).where(Checkpoint.pool_id == pool_id))}
    # the checkpoints carry training and evaluation metrics, through the API's response model
    from service.schemas import CheckpointOut

    with env.factory() as s:
        out = {c.kind: CheckpointOut.model_validate(s.get(Checkpoint, c.id)).model_dump() for c in ckpts.values()}
    train = out["round"]["metrics"]["train"]
    assert train["steps"] == 4 and math.isfinite(train["final_loss"]) and train["seconds"] > 0
    assert train["mean_loss"] == pytest.approx(sum(d["loss"] for d in steps[2:]) / 4, rel=1e-6)
    assert out["round"]["metrics"]["eval"]["vqa"]["loss"] == pytest.approx(evals["round"]["vqa"]["loss"])
    assert out["warmup"]["metrics"]["train"]["steps"] == 2 and out["warmup"]["metrics"]["eval"]["vqa"]["n"] == 4


def test_a_round_without_eval_sets_or_warmup_plans_neither(round_env: RoundEnv) -> None:
    env = round_env
    first = add_dataset(env, "a", list(range(8)))
    config = {**POOL_CONFIG, "training": {"batch_size": 4, "max_steps": 1}}
    pool_id = add_pool(env, config)
    start_round(env, pool_id, [first], budget=4)
    env.drain()
    _, job_id = start_round(env, pool_id, [add_dataset(env, "b", list(range(8, 16)))], budget=4, train=False)
    before = _job(env, job_id)
    assert before["overall"] is None and before["progress"]["unit"] is None  # queued: nothing planned yet
    env.drain(until_kind="round.prepare")
    planned = [s["name"] for s in _job(env, job_id)["overall"]["stages"]]
    assert planned == ["prepare", "features", "select", "finalize"]  # a checkpoint exists, no training asked
    env.drain()
    final = _job(env, job_id)
    assert final["status"] == "succeeded" and final["overall"]["fraction"] == 1.0
    with env.factory() as s:
        ckpts = s.scalars(select(Checkpoint.metrics).where(Checkpoint.pool_id == pool_id)).all()
    assert all(m["eval"] is None and m["train"]["steps"] == 1 for m in ckpts)  # no evaluation sets: eval null


def test_step_events_are_thinned_on_a_long_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """250 steps: an event every 3rd step and the last (84 in all, under the 100 cap); progress
    and the cancel check on every step."""
    from types import SimpleNamespace

    from workers.engine.training import TrainStep
    from workers.rounds.runner import ParentWatch

    events, reports, checks = [], [], []
    watch = ParentWatch(SimpleNamespace(current_stage="train"), "job_x")
    monkeypatch.setattr(watch, "event", lambda message, **data: events.append(data))
    monkeypatch.setattr(watch, "report", lambda done, total, **kw: reports.append((done, kw["metrics"]["loss"])))
    monkeypatch.setattr(watch, "check", lambda force=False: checks.append(force))
    for step in range(1, 251):
        watch.on_step(TrainStep(step, 250, float("nan") if step == 7 else 1.0 / step, 1e-4, step / 50))
    assert [d["step"] for d in events] == list(range(3, 250, 3)) + [250] and len(events) == 84
    assert all(d["type"] == "train.step" and d["stage"] == "train" and d["max_steps"] == 250 for d in events)
    assert len(reports) == 250 and reports[6] == (7, None)  # a NaN loss is reported as null
    assert checks.count(True) == 1 and checks[-1] is True  # the last step checks the round at once
