"""Rounds end to end with real worker processes.

(a) PostgreSQL + Redis: two datasets, two rounds over HTTP, selection downloads (jsonl, json,
tar), the checkpoint loaded with peft, lifelong metrics; two workers share the feature shards.
(c) then a third round cancelled mid-features leaves the pool exactly as it was.
(b) a worker SIGKILLed during the feature stage; another finishes the round after the lease
expires, and every candidate has exactly one Score row and sits in exactly one done shard.
(d) the embedded mode (`adaptinf serve`: SQLite + filesystem broker, one worker) runs a round.
(e) the same on the real pretrained `smol-lm`, scored on an evaluation set.
"""
from __future__ import annotations

import io
import json
import signal
import tarfile
from pathlib import Path

import httpx
import pytest
from e2e_procs import wait_for
from rounds_fixtures import (  # noqa: F401 - rounds_redis_url is a fixture
    create_pool, jsonl, rounds_redis_url, start_round, tar_members, upload_ready, wait_round,
)
from sqlalchemy import func, select

from service.config import Settings
from service.db.models import FeatureShard, Job, JobEvent, Score
from service.db.session import get_sessionmaker

pytestmark = [pytest.mark.slow]


@pytest.fixture
def pg_redis_settings(e2e_pg_url: str, rounds_redis_url: str, tmp_path: Path) -> Settings:
    # Short lease, heartbeat and reaper period: a lost worker is noticed within ~4 s.
    return Settings(data_dir=tmp_path / "data", database_url=e2e_pg_url, broker_url=rounds_redis_url,
                    lease_seconds=3, heartbeat_seconds=1, reaper_interval_seconds=1, max_attempts=3)


@pytest.fixture
def http(pg_redis_settings: Settings):
    from fastapi.testclient import TestClient

    from service.auth import create_api_key, create_owner
    from service.db.session import session_scope
    from service.main import create_app

    with session_scope(pg_redis_settings.resolved_database_url) as session:
        _, key = create_api_key(session, create_owner(session, "e2e-rounds"))
    with TestClient(create_app(pg_redis_settings)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def shard_owner_pids(settings: Settings, parent_id: str) -> list[int]:
    """The worker pid of every feature-shard attempt (lease owner = host:pid:nonce)."""
    with get_sessionmaker(settings.resolved_database_url)() as s:
        rows = s.scalars(
            select(JobEvent.data).join(Job, Job.id == JobEvent.job_id)
            .where(Job.parent_id == parent_id, Job.kind == "round.features", JobEvent.message.like("started%"))
        ).all()
    return [int(d["owner"].split(":")[1]) for d in rows]


def assert_scored_once(settings: Settings, round_id: str, candidates: int) -> None:
    with get_sessionmaker(settings.resolved_database_url)() as s:
        n, distinct = s.execute(select(func.count(), func.count(func.distinct(Score.sample_id)))
                                .where(Score.round_id == round_id)).one()
        shards = s.execute(select(FeatureShard.status, FeatureShard.rows).where(FeatureShard.round_id == round_id)).all()
    assert n == distinct == candidates
    assert {st for st, _ in shards} == {"done"} and sum(r for _, r in shards) == candidates


def pool_state(http, pool_id: str) -> dict:  # noqa: ANN001
    body = http.get(f"/v1/pools/{pool_id}").json()
    ckpts = http.get("/v1/checkpoints", params={"pool_id": pool_id}).json()["data"]
    keep = ("size", "pruned", "rounds_completed", "current_checkpoint_id", "datasets")
    return {**{k: body[k] for k in keep}, "checkpoints": sorted(c["id"] for c in ckpts)}


def check_two_skill_metrics(m: dict, res1: dict, res2: dict) -> None:
    """/metrics of two rounds: vqa arrived in round 1, ocr in round 2; every number from the matrix it returns.

    The tiny random model's accuracies may all be 0 here, so this checks the wiring (which rows and
    skills each figure uses, the base, the arrivals); tests/service/test_pools_api.py checks the
    figures on non-trivial seeded matrices."""
    assert [r["number"] for r in m["rounds"]] == [1, 2] and m["skills"] == ["ocr", "vqa"]
    (ocr1, vqa1), (ocr2, vqa2) = m["accuracy"]
    # the matrix is what the rounds' evaluations recorded, every skill scored after every round
    assert [ocr1, vqa1] == [res1["eval"][s]["accuracy"] for s in ("ocr", "vqa")]
    assert [ocr2, vqa2] == [res2["eval"][s]["accuracy"] for s in ("ocr", "vqa")]
    base = m["base"]["accuracy"]
    # round 1 scored the base model on both evaluation sets (one set per skill), round 2 on none
    assert sorted(v["skill"] for v in res1["base_eval_datasets"].values()) == ["ocr", "vqa"]
    assert base == {v["skill"]: v["accuracy"] for v in res1["base_eval_datasets"].values()}
    assert res2["base_eval_datasets"] == {}
    per = {p["skill"]: p for p in m["per_skill"]}
    assert (per["vqa"]["arrival_round"], per["ocr"]["arrival_round"]) == (1, 2)
    assert per["vqa"]["trajectory"] == [vqa1, vqa2] and per["ocr"]["trajectory"] == [ocr1, ocr2]
    s = m["summary"]
    assert (s["skills_arrived"], s["skills_unseen"]) == (2, 0)
    assert s["avg_acc"] == pytest.approx((ocr2 + vqa2) / 2)
    assert s["forgetting"] == pytest.approx(vqa1 - vqa2)  # only vqa arrived before the last round
    assert s["backward_transfer"] == pytest.approx(vqa2 - vqa1)
    assert s["forward_transfer"] == pytest.approx(ocr1 - base["ocr"])  # ocr right before its arrival − base
    assert s["mft"] == pytest.approx((vqa1 + ocr2) / 2)
    assert s["maa"] == pytest.approx((vqa1 + (ocr2 + vqa2) / 2) / 2)


def test_two_rounds_two_workers_then_a_cancelled_round(pg_redis_settings: Settings, http, start_worker,
                                                       tmp_path: Path) -> None:
    settings = pg_redis_settings
    workers = [start_worker(settings, "ingest,select,train,gpu"), start_worker(settings, "gpu")]
    for w in workers:
        w.wait_ready()
    # two skills: `vqa` declared for all of d1, `ocr` by each record of d2 (over d2's declared vqa)
    d1 = upload_ready(http, tmp_path / "d1", list(range(0, 20)), skill="vqa")
    d2 = upload_ready(http, tmp_path / "d2", [0, 1] + list(range(20, 32)), skill="vqa", record_skill="ocr")
    ev = upload_ready(http, tmp_path / "ev", list(range(40, 44)), short_answers=True)
    ev_ocr = upload_ready(http, tmp_path / "ev_ocr", list(range(64, 68)), short_answers=True)
    assert http.get(f"/v1/datasets/{d2}").json()["skills"] == {"ocr": 14}
    pool = create_pool(http, [{"dataset_id": ev, "skill": "vqa"}, {"dataset_id": ev_ocr, "skill": "ocr"}])

    r1 = start_round(http, pool["id"], [d1], budget=8)
    res1 = wait_round(http, r1["id"], 240)["result"]
    assert (res1["candidates"], res1["new_samples"], res1["duplicates"], res1["warmup"]) == (20, 20, 0, True)
    assert res1["selected"] == 8 and res1["checkpoint_id"] and res1["train"]["steps"] == 2
    r2 = start_round(http, pool["id"], [d2], budget=0.5, seed=1)
    body2 = wait_round(http, r2["id"], 240)
    res2 = body2["result"]
    assert (res2["new_samples"], res2["duplicates"], res2["warmup"]) == (12, 2, False)
    assert res2["candidates"] == res1["pool_size"] + 12 and res2["selected"] == res2["budget"] == round(res2["candidates"] / 2)
    assert sum(c["selected"] for c in res2["clusters"]) == res2["selected"]
    assert res2["eval"]["vqa"]["n"] == res2["eval"]["ocr"]["n"] == 4 and res2["checkpoint_id"] != res1["checkpoint_id"]
    assert_scored_once(settings, r2["id"], res2["candidates"])
    # both workers computed feature shards (of one round or the other)
    pids = set(shard_owner_pids(settings, r1["job_id"]) + shard_owner_pids(settings, body2["job_id"]))
    assert pids == {w.proc.pid for w in workers}

    # the selection in every format: original record + provenance
    records = jsonl(http.get(f"/v1/rounds/{r2['id']}/selection", params={"format": "jsonl"}).content)
    assert len(records) == res2["selected"]
    assert all(r["adaptinf"]["round"] == 2 and r["adaptinf"]["expert"] and "conversations" in r for r in records)
    as_json = http.get(f"/v1/rounds/{r2['id']}/selection", params={"format": "json"}).json()
    assert sorted(r["id"] for r in as_json) == sorted(r["id"] for r in records)
    members = tar_members(http.get(f"/v1/rounds/{r2['id']}/selection", params={"format": "tar"}).content)
    in_tar = jsonl(members["selection.jsonl"])
    images = [name for r in in_tar for name in r["adaptinf"].pop("images")]  # tar records name their members
    assert in_tar == records
    assert len(images) == sum(1 for r in records if r.get("image")) and all(name in members for name in images)

    # the checkpoint: a PEFT adapter at the archive root, loadable on the preset base
    ckpt = http.get(f"/v1/checkpoints/{res2['checkpoint_id']}").json()
    content = http.get(f"/v1/checkpoints/{ckpt['id']}/content")
    assert content.status_code == 200 and content.headers["etag"].strip('"') in content.headers["etag"]
    with tarfile.open(fileobj=io.BytesIO(content.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]
        tar.extractall(tmp_path / "adapter", filter="data")
    from peft import PeftModel

    from workers.engine.models import build_preset

    PeftModel.from_pretrained(build_preset("tiny-llava")[0], tmp_path / "adapter")
    check_two_skill_metrics(http.get(f"/v1/pools/{pool['id']}/metrics").json(), res1, res2)

    # (c) a third round, cancelled while its shards run: the pool is exactly as before
    d3 = upload_ready(http, tmp_path / "d3", list(range(44, 64)))
    before = pool_state(http, pool["id"])
    r3 = start_round(http, pool["id"], [d3], budget=4)
    wait_for(lambda: http.get(f"/v1/jobs/{r3['job_id']}").json()["stage"] == "features", 120, "round 3 features", 0.1)
    assert http.post(f"/v1/jobs/{r3['job_id']}/cancel").status_code == 200
    wait_round(http, r3["id"], 60, status="cancelled")
    job = http.get(f"/v1/jobs/{r3['job_id']}").json()
    assert job["status"] == "cancelled"
    assert pool_state(http, pool["id"]) == before


def test_worker_killed_during_features(pg_redis_settings: Settings, http, start_worker, tmp_path: Path) -> None:
    settings = pg_redis_settings
    first = start_worker(settings)
    first.wait_ready()
    ds = upload_ready(http, tmp_path / "d", list(range(0, 30)))
    pool = create_pool(http)
    r = start_round(http, pool["id"], [ds], budget=6, train=False)
    factory = get_sessionmaker(settings.resolved_database_url)

    def shard_running_on_first() -> bool:
        with factory() as s:
            owners = s.scalars(select(Job.lease_owner).where(
                Job.parent_id == r["job_id"], Job.kind == "round.features", Job.status == "running")).all()
        return any(o and f":{first.proc.pid}:" in o for o in owners)

    # Freeze the worker first, then look: a shard seen running on a frozen worker can no longer
    # commit, so the kill surely lands mid-shard (a plain poll-then-kill races a fast shard).
    for _ in range(50):
        wait_for(shard_running_on_first, 120, "a feature shard running on the first worker", 0.02)
        first.proc.send_signal(signal.SIGSTOP)
        if shard_running_on_first():
            break
        first.proc.send_signal(signal.SIGCONT)
    else:
        pytest.fail("never caught a feature shard in flight on the first worker")
    first.kill()
    second = start_worker(settings)
    body = wait_round(http, r["id"], 180)
    assert_scored_once(settings, r["id"], body["result"]["candidates"])
    with factory() as s:
        lost = s.scalars(select(JobEvent.job_id).where(JobEvent.message.like("worker lost%"))).all()
        attempts = s.scalars(select(Job.attempts).where(Job.id.in_(lost))).all()
    assert lost and set(attempts) == {2}  # the killed shard ran again, once, on the second worker
    assert second.proc.pid in shard_owner_pids(settings, r["job_id"])
    assert body["result"]["checkpoint_id"] is None and body["result"]["train"] is None


def test_embedded_serve_runs_a_round(tmp_path: Path) -> None:
    from test_e2e_serve import Served, free_port

    served = Served(tmp_path / "data", free_port())
    try:
        served.wait_up()
        key = next(line.split("=", 1)[1] for line in served.lines if line.startswith("ADAPTINF_API_KEY="))
        with httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
            ds = upload_ready(api, tmp_path / "d", list(range(0, 16)))
            pool = create_pool(api)
            r = start_round(api, pool["id"], [ds], budget=5)
            body = wait_round(api, r["id"], 240)
            assert body["result"]["selected"] == 5 and body["result"]["checkpoint_id"]
            assert api.get(f"/v1/pools/{pool['id']}").json()["rounds_completed"] == 1
            assert len(jsonl(api.get(f"/v1/rounds/{r['id']}/selection").content)) == 5
            url = f"/v1/checkpoints/{body['result']['checkpoint_id']}/content"
            content, head = api.get(url), api.head(url)  # HEAD through uvicorn: the headers, no body
            assert (head.status_code, head.content, head.headers["etag"]) == (200, b"", content.headers["etag"])
            assert head.headers["content-length"] == str(len(content.content)) != "0"
        assert served.terminate() == 0, served.text[-3000:]
    finally:
        if served.proc.poll() is None:
            served.proc.kill()


def test_embedded_serve_runs_a_round_on_pretrained_smol_lm(tmp_path: Path, smol_cache: Path) -> None:
    from test_e2e_serve import Served, free_port

    served = Served(tmp_path / "data", free_port(), env={"ADAPTINF_PRESET_CACHE": str(smol_cache)})
    config = {"lora": {"r": 4, "alpha": 8, "layers": [28, 29]}, "features": {"proj_dim": 512, "batch_size": 8},
              "selection": {"n_clusters": 2, "n_strata": 4},
              "training": {"max_steps": 2, "batch_size": 4}, "shard_size": 64}
    try:
        served.wait_up()
        key = next(line.split("=", 1)[1] for line in served.lines if line.startswith("ADAPTINF_API_KEY="))
        with httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
            ds = upload_ready(api, tmp_path / "d", list(range(0, 12)))
            ev = upload_ready(api, tmp_path / "e", list(range(40, 44)), short_answers=True)
            r = api.post("/v1/pools", json={"name": "smol", "base_model": "smol-lm", "model_type": "causal-lm",
                                            "config": config, "eval_sets": [{"dataset_id": ev, "skill": "vqa"}]})
            assert r.status_code == 201, r.text
            pool = r.json()
            body = wait_round(api, start_round(api, pool["id"], [ds], budget=4)["id"], 600)
            assert body["result"]["selected"] == 4 and body["result"]["checkpoint_id"]
            metrics = api.get(f"/v1/pools/{pool['id']}/metrics").json()
            assert metrics["skills"] == ["vqa"] and len(metrics["accuracy"]) == 1
            assert metrics["rounds"][0]["loss"]["vqa"] is not None and metrics["base"]["loss"]["vqa"] is not None
            ckpt = api.get(f"/v1/checkpoints/{body['result']['checkpoint_id']}/content")
            adapter = json.loads(tar_members(ckpt.content)["adapter_config.json"])
            assert adapter["r"] == 4
        assert served.terminate() == 0, served.text[-3000:]
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
