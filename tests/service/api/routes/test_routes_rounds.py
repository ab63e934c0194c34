"""Rounds API: creation (202, round + queued job committed, then the job id enqueued on `select`),
one round at a time per pool (also under concurrent requests), every rejection naming the field,
idempotency, reading and listing with the job's stage and progress. SQLite and PostgreSQL."""
from __future__ import annotations

import threading

import pytest
from apitools import memory_queue

from service.db.models import Job, Round
from service.db.session import session_scope
from tests.service.pool_rows import make_dataset


@pytest.fixture
def select_queue():
    """Drains the in-memory broker's `select` queue (kombu's memory transport is per process)."""
    with memory_queue("select") as drain:
        yield drain


@pytest.fixture
def pool(client, alice):
    r = client.post("/v1/pools", json={"name": "p", "base_model": "tiny-llava", "model_type": "llava"},
                    headers=alice.headers)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def ready(database_url, alice):
    return make_dataset(database_url, alice.owner_id, 4)[0]


def start(client, caller, pool_id, **body):
    return client.post(f"/v1/pools/{pool_id}/rounds", json=body, headers=caller.headers)


def finish(database_url, round_id, status="succeeded"):
    with session_scope(database_url) as session:
        rnd = session.get(Round, round_id)
        rnd.status = status
        session.get(Job, rnd.job_id).status = status


def test_create_round(client, alice, pool, ready, database_url, select_queue):
    r = start(client, alice, pool["id"], dataset_ids=[ready], budget=0.5, method="score:el2n", seed=7)
    assert r.status_code == 202, r.text
    rnd = r.json()
    assert r.headers["location"] == f"/v1/rounds/{rnd['id']}"
    assert (rnd["object"], rnd["pool_id"], rnd["number"], rnd["status"]) == ("round", pool["id"], 1, "queued")
    assert rnd["params"] == {"dataset_ids": [ready], "budget": 0.5, "method": "score:el2n", "candidates": "pool",
                             "train": True, "prune": True, "seed": 7}
    assert rnd["result"] is None and rnd["job"]["status"] == "queued"

    job = client.get(f"/v1/jobs/{rnd['job_id']}", headers=alice.headers).json()
    assert (job["kind"], job["queue"], job["params"]) == ("round", "select", {"round_id": rnd["id"]})
    messages = select_queue()
    assert [(m.headers["task"], m.payload[0]) for m in messages] == [("adaptinf.round", [rnd["job_id"]])]

    # The job's stage and progress show through the round.
    with session_scope(database_url) as session:
        j = session.get(Job, rnd["job_id"])
        j.status, j.stage, j.progress_done, j.progress_total = "running", "features", 3, 8
    got = client.get(f"/v1/rounds/{rnd['id']}", headers=alice.headers).json()
    progress = {"done": 3, "total": 8, "unit": None, "rate": None, "eta_seconds": None}
    assert got["job"] == {"status": "running", "stage": "features", "progress": progress, "attempts": 0, "error": None}
    assert got["params"] == rnd["params"] and got["created_at"] == rnd["created_at"]


def test_one_round_at_a_time(client, alice, pool, ready, database_url, select_queue):
    first = start(client, alice, pool["id"], dataset_ids=[ready], budget=2).json()
    second = start(client, alice, pool["id"], dataset_ids=[ready], budget=2)
    assert second.status_code == 409 and second.json()["code"] == "round_in_progress"
    assert first["id"] in second.json()["detail"]
    finish(database_url, first["id"], "failed")
    third = start(client, alice, pool["id"], dataset_ids=[ready], budget=2)
    assert third.status_code == 202 and third.json()["number"] == 2
    assert len(select_queue()) == 2

    listed = client.get(f"/v1/pools/{pool['id']}/rounds", headers=alice.headers).json()
    assert [(r["number"], r["status"]) for r in listed["data"]] == [(1, "failed"), (2, "queued")]
    assert listed["data"][0]["job"]["status"] == "failed"
    page = client.get(f"/v1/pools/{pool['id']}/rounds?limit=1&after={first['id']}", headers=alice.headers).json()
    assert [r["number"] for r in page["data"]] == [2] and page["has_more"] is False


def test_concurrent_creations_leave_one_round(client, alice, pool, ready, database_url):
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def go() -> None:
        barrier.wait()
        codes.append(start(client, alice, pool["id"], dataset_ids=[ready], budget=1).status_code)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202, 409, 409, 409]
    with session_scope(database_url) as session:
        assert session.query(Round).count() == 1
        assert session.query(Job).filter(Job.kind == "round").count() == 1


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"budget": 0}, "body.budget", "got 0"),
        ({"budget": 1.5}, "body.budget", "got 1.5"),
        ({"budget": True}, "body.budget", "got True"),
        ({"method": "best"}, "body.method", "got 'best'"),
        ({"method": "score:loss"}, "body.method", "score:loss"),
        ({"dataset_ids": []}, "body.dataset_ids", ""),
        ({"seed": "x"}, "body.seed", "got 'x'"),
        ({"colour": "red"}, "body.colour", ""),
    ],
)
def test_invalid_bodies(client, alice, pool, ready, body, field, needle, database_url):
    r = start(client, alice, pool["id"], **({"dataset_ids": [ready], "budget": 2} | body))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == field and needle in r.json()["detail"]
    with session_scope(database_url) as session:
        assert session.query(Round).count() == 0


def test_datasets_must_be_owned_and_ready(client, alice, bob, pool, ready, database_url, select_queue):
    pending = make_dataset(database_url, alice.owner_id, 2, status="pending")[0]
    failed = make_dataset(database_url, alice.owner_id, 2, status="failed")[0]
    bobs = make_dataset(database_url, bob.owner_id, 2)[0]
    cases = [(pending, "dataset_not_ready", "pending"), (failed, "dataset_not_ready", "failed"),
             (bobs, "unknown_dataset", bobs), ("ds_missing", "unknown_dataset", "ds_missing")]
    for ds, code, needle in cases:
        r = start(client, alice, pool["id"], dataset_ids=[ready, ds], budget=2)
        assert r.status_code == 422, r.text
        p = r.json()
        assert (p["code"], p["field"]) == (code, "body.dataset_ids[1]") and needle in p["detail"]
    with session_scope(database_url) as session:
        assert session.query(Round).count() == 0 and session.query(Job).filter(Job.kind == "round").count() == 0
    assert select_queue() == []


def test_ig_needs_an_image_model(client, alice, ready):
    pool = client.post("/v1/pools", json={"name": "t", "base_model": "tiny-causal-lm", "model_type": "causal-lm"},
                       headers=alice.headers).json()
    r = start(client, alice, pool["id"], dataset_ids=[ready], budget=2, method="score:ig")
    assert r.status_code == 422 and r.json()["field"] == "body.method"
    assert start(client, alice, pool["id"], dataset_ids=[ready], budget=2, method="score:ppl").status_code == 202


def test_owner_scoping(client, alice, bob, pool, ready):
    rnd = start(client, alice, pool["id"], dataset_ids=[ready], budget=2).json()
    bobs_ready = make_dataset(client.app.state.settings.resolved_database_url, bob.owner_id, 2)[0]
    assert start(client, bob, pool["id"], dataset_ids=[bobs_ready], budget=2).status_code == 404
    for path in (f"/v1/rounds/{rnd['id']}", f"/v1/rounds/{rnd['id']}/selection", f"/v1/pools/{pool['id']}/rounds"):
        r = client.get(path, headers=bob.headers)
        assert r.status_code == 404 and r.json()["code"] == "not_found", path
    assert client.get("/v1/rounds/round_nope", headers=alice.headers).status_code == 404


def test_idempotent_round_creation(client, alice, pool, ready, database_url, select_queue):
    h = alice.headers | {"Idempotency-Key": "round-1"}
    url = f"/v1/pools/{pool['id']}/rounds"
    first = client.post(url, json={"dataset_ids": [ready], "budget": 3}, headers=h)
    again = client.post(url, json={"dataset_ids": [ready], "budget": 3}, headers=h)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    changed = client.post(url, json={"dataset_ids": [ready], "budget": 4}, headers=h)
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"
    assert len(select_queue()) == 1
    with session_scope(database_url) as session:
        assert session.query(Round).count() == 1


def test_a_round_is_refused_when_its_pool_is_above_the_limits_of_now(client, alice, ready, settings,
                                                                      database_url, select_queue):
    """Limits are settings: lowered after a pool was created, they stop its next round with a 409
    naming the field and the variable; a pool of an earlier release (null max_length, a 64-bit
    seed, no training.max_length in its stored config) still runs."""
    from fastapi.testclient import TestClient

    from service.db.models import Pool
    from service.main import create_app

    pool = client.post("/v1/pools", json={"name": "long", "base_model": "tiny-llava", "model_type": "llava",
                                          "config": {"training": {"epochs": 50}}}, headers=alice.headers).json()
    with TestClient(create_app(settings.model_copy(update={"max_epochs": 10}))) as strict:
        r = start(strict, alice, pool["id"], dataset_ids=[ready], budget=2)
    assert r.status_code == 409 and r.json()["code"] == "limit_exceeded", r.text
    assert r.json()["field"] == "pool.config.training.epochs" and "ADAPTINF_MAX_EPOCHS" in r.json()["detail"]

    with session_scope(database_url) as s:
        row = s.get(Pool, pool["id"])
        row.config = {**row.config, "features": {**row.config["features"], "max_length": None},
                      # and no training.max_length (added later): the default fills it
                      "training": {**{k: v for k, v in row.config["training"].items() if k != "max_length"},
                                   "seed": 2**40}}
    assert start(client, alice, pool["id"], dataset_ids=[ready], budget=2).status_code == 202
    assert len(select_queue()) == 1


@pytest.mark.parametrize("seed", [-1, 2**31, 2**64])
def test_round_seeds_fit_faiss(client, alice, pool, ready, seed):
    r = start(client, alice, pool["id"], dataset_ids=[ready], budget=2, seed=seed)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.seed"
    assert "[0, 2147483647]" in r.json()["detail"]


def test_a_pool_whose_stored_config_no_longer_validates_gets_a_409(client, alice, pool, ready, database_url):
    from service.db.models import Pool

    with session_scope(database_url) as s:
        row = s.get(Pool, pool["id"])
        features = {k: v for k, v in row.config["features"].items() if k != "projection_nnz"}
        row.config = {**row.config, "features": {**features, "proj_dim": 1022}}  # before projection_nnz existed
    r = start(client, alice, pool["id"], dataset_ids=[ready], budget=2)
    assert r.status_code == 409 and r.json()["code"] == "invalid_pool_config", r.text
    assert "projection_nnz must divide proj_dim (1022)" in r.json()["detail"]


def test_candidates_is_pool_or_new(client, alice, pool, ready):
    r = start(client, alice, pool["id"], dataset_ids=[ready], budget=2, candidates="everything")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.candidates", r.text
    r = start(client, alice, pool["id"], dataset_ids=[ready], budget=2, candidates="new")
    assert r.status_code == 202 and r.json()["params"]["candidates"] == "new"
