"""Per-owner caps: rounds queued or running, and unfinished jobs. Over one, a round or an upload is
a 429 naming the limit and its setting, stores nothing, and leaves other owners alone; concurrent
requests of one owner never pass a cap together. SQLite and PostgreSQL."""
from __future__ import annotations

import json
import threading

import pytest
from apitools import blob_files, count_rows, memory_queue

from service.db.models import Dataset, Job, Round
from service.db.session import session_scope
from tests.service.pool_rows import make_dataset

RECORD = {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"max_active_rounds_per_owner": 2, "max_queued_jobs_per_owner": 3})


@pytest.fixture(autouse=True)
def _drain_queues():
    with memory_queue("select"), memory_queue("ingest"):
        yield


def new_pool(client, caller, name):
    r = client.post("/v1/pools", json={"name": name, "base_model": "tiny-llava", "model_type": "llava"},
                    headers=caller.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start(client, caller, pool_id, dataset_id):
    return client.post(f"/v1/pools/{pool_id}/rounds", json={"dataset_ids": [dataset_id], "budget": 1},
                       headers=caller.headers)


def upload(client, caller, name="ds"):
    files = {"file": (f"{name}.jsonl", (json.dumps(RECORD) + "\n").encode())}
    return client.post("/v1/datasets", files=files, data={"name": name}, headers=caller.headers)


def assert_quota(r, limit, setting, value):
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "30"  # ADAPTINF_QUOTA_RETRY_AFTER_SECONDS's default
    body = r.json()
    assert (body["code"], body["limit"], body["setting"], body["value"]) == ("quota_exceeded", limit, setting, value)
    assert f"{setting}={value}" in body["detail"]


def test_active_rounds_cap(client, alice, bob, database_url):
    ds = make_dataset(database_url, alice.owner_id, 2)[0]
    pools = [new_pool(client, alice, f"p{i}") for i in range(3)]
    first, second = (start(client, alice, p, ds) for p in pools[:2])
    assert first.status_code == second.status_code == 202
    third = start(client, alice, pools[2], ds)
    assert_quota(third, "max_active_rounds_per_owner", "ADAPTINF_MAX_ACTIVE_ROUNDS_PER_OWNER", 2)
    assert count_rows(database_url, Round) == 2

    # Another owner has caps of their own.
    bob_ds = make_dataset(database_url, bob.owner_id, 2, name="b")[0]
    assert start(client, bob, new_pool(client, bob, "b"), bob_ds).status_code == 202

    # A finished round frees its place.
    with session_scope(database_url) as session:
        rnd = session.get(Round, first.json()["id"])
        rnd.status = session.get(Job, rnd.job_id).status = "succeeded"
    assert start(client, alice, pools[2], ds).status_code == 202


def test_unfinished_jobs_cap_refuses_uploads_and_rounds(client, alice, bob, settings, database_url):
    assert [upload(client, alice, f"d{i}").status_code for i in range(3)] == [202, 202, 202]
    blobs_before = blob_files(settings)
    refused = upload(client, alice, "d3")
    assert_quota(refused, "max_queued_jobs_per_owner", "ADAPTINF_MAX_QUEUED_JOBS_PER_OWNER", 3)
    assert count_rows(database_url, Dataset) == 3 and blob_files(settings) == blobs_before  # nothing stored

    ds = make_dataset(database_url, alice.owner_id, 2)[0]
    assert_quota(start(client, alice, new_pool(client, alice, "p"), ds),
                 "max_queued_jobs_per_owner", "ADAPTINF_MAX_QUEUED_JOBS_PER_OWNER", 3)
    assert upload(client, bob, "b").status_code == 202

    # An ended ingest frees its place; a round's stages are its job's own and do not count.
    with session_scope(database_url) as session:
        job = session.query(Job).filter(Job.owner_id == alice.owner_id).first()
        job.status = "failed"
        session.add(Job(owner_id=alice.owner_id, kind="round.features", queue="gpu", params={}, status="running",
                        parent_id=job.id))
    assert upload(client, alice, "d4").status_code == 202


def test_concurrent_rounds_of_one_owner_never_pass_the_cap_together(client, alice, database_url, settings):
    client.app.state.settings = settings.model_copy(update={"max_active_rounds_per_owner": 1})
    ds = make_dataset(database_url, alice.owner_id, 2)[0]
    pools = [new_pool(client, alice, f"p{i}") for i in range(4)]
    barrier = threading.Barrier(len(pools))
    codes: list[int] = []

    def go(pool_id: str) -> None:
        barrier.wait()
        codes.append(start(client, alice, pool_id, ds).status_code)

    threads = [threading.Thread(target=go, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202, 429, 429, 429]
    assert count_rows(database_url, Round) == 1
