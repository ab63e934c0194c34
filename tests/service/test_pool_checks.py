"""What pools do with the datasets a request gives them: a dataset in both roles is a 422 naming the
field; images in a causal-lm pool and a dataset already in the pool are warnings in the creating
response (and, for rounds, warning events of the round's job). SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from apitools import memory_queue

from service.db.models import Round
from service.db.session import session_scope
from tests.service.pool_rows import make_dataset, make_round, with_images


@pytest.fixture(autouse=True)
def select_queue():
    with memory_queue("select") as drain:
        yield drain


def new_pool(client, caller, model_type="llava", **body):
    base = {"llava": "tiny-llava", "causal-lm": "tiny-causal-lm"}[model_type]
    r = client.post("/v1/pools", json={"name": "p", "base_model": base, "model_type": model_type, **body},
                    headers=caller.headers)
    assert r.status_code == 201, r.text
    return r.json()


def events(client, caller, job_id):
    return client.get(f"/v1/jobs/{job_id}/events", headers=caller.headers).json()["data"]


def test_a_plain_round_has_no_warnings(client, alice, database_url):
    pool = new_pool(client, alice)
    assert pool["warnings"] == []
    ds, _ = make_dataset(database_url, alice.owner_id, 2)
    r = client.post(f"/v1/pools/{pool['id']}/rounds", json={"dataset_ids": [ds], "budget": 1}, headers=alice.headers)
    assert r.status_code == 202 and r.json()["warnings"] == []
    assert [e["level"] for e in events(client, alice, r.json()["job_id"])].count("warning") == 0


def test_an_evaluation_set_is_refused_as_training_data(client, alice, database_url):
    ev, _ = make_dataset(database_url, alice.owner_id, 2, name="ev")
    ds, _ = make_dataset(database_url, alice.owner_id, 2)
    pool = new_pool(client, alice, eval_sets=[{"dataset_id": ev, "skill": "vqa"}])
    r = client.post(f"/v1/pools/{pool['id']}/rounds", json={"dataset_ids": [ds, ev], "budget": 1}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["code"] == "eval_set_as_training_data"
    assert r.json()["field"] == "body.dataset_ids[1]" and f"/v1/pools/{pool['id']}/eval-sets/{ev}" in r.json()["detail"]
    with session_scope(database_url) as session:
        assert session.query(Round).count() == 0
    # another pool may train on it: the rule is per pool
    other = new_pool(client, alice)
    assert client.post(f"/v1/pools/{other['id']}/rounds", json={"dataset_ids": [ev], "budget": 1},
                       headers=alice.headers).status_code == 202


@pytest.mark.parametrize("how", ["member", "queued_round"])
def test_training_data_is_refused_as_an_evaluation_set(client, alice, database_url, how):
    pool = new_pool(client, alice)
    ds, samples = make_dataset(database_url, alice.owner_id, 2)
    if how == "member":
        make_round(database_url, pool["id"], alice.owner_id, number=1, members=samples[:1], dataset_ids=[ds])
    else:
        make_round(database_url, pool["id"], alice.owner_id, number=1, status="queued", dataset_ids=[ds])
    r = client.post(f"/v1/pools/{pool['id']}/eval-sets", json={"dataset_id": ds, "skill": "vqa"}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["code"] == "training_data_as_eval_set"
    assert r.json()["field"] == "body.dataset_id"
    assert client.get(f"/v1/pools/{pool['id']}", headers=alice.headers).json()["eval_sets"] == []
    if how == "member":  # once taken out of the pool, it may measure it
        assert client.delete(f"/v1/pools/{pool['id']}/datasets/{ds}", headers=alice.headers).status_code == 204
        r = client.post(f"/v1/pools/{pool['id']}/eval-sets", json={"dataset_id": ds, "skill": "vqa"},
                        headers=alice.headers)
        assert r.status_code == 201 and r.json()["warnings"] == []


def test_images_in_a_causal_lm_pool_are_a_warning(client, alice, database_url):
    img, _ = make_dataset(database_url, alice.owner_id, 2, name="img")
    ev, _ = make_dataset(database_url, alice.owner_id, 2, name="ev")
    ev2, _ = make_dataset(database_url, alice.owner_id, 2, name="ev2")
    for d in (img, ev, ev2):
        with_images(database_url, d)
    pool = new_pool(client, alice, "causal-lm", eval_sets=[{"dataset_id": ev, "skill": "vqa"}])
    assert [w["code"] for w in pool["warnings"]] == ["images_dropped"] and ev in pool["warnings"][0]["message"]
    r = client.post(f"/v1/pools/{pool['id']}/eval-sets", json={"dataset_id": ev2, "skill": "ocr"}, headers=alice.headers)
    assert r.status_code == 201 and [w["code"] for w in r.json()["warnings"]] == ["images_dropped"]
    r = client.post(f"/v1/pools/{pool['id']}/rounds", json={"dataset_ids": [img], "budget": 1}, headers=alice.headers)
    assert r.status_code == 202, r.text
    (warning,) = r.json()["warnings"]
    assert warning["code"] == "images_dropped" and img in warning["message"] and "3 image(s)" in warning["message"]
    # the round's job carries it too, where `jobs watch` shows it
    got = [(e["level"], e["message"], e["data"]) for e in events(client, alice, r.json()["job_id"])]
    assert ("warning", warning["message"], {"code": "images_dropped"}) in got
    # a llava pool takes the same dataset without a word
    llava = new_pool(client, alice, eval_sets=[{"dataset_id": ev, "skill": "vqa"}])
    assert llava["warnings"] == []


def test_a_dataset_already_in_the_pool_is_a_warning(client, alice, database_url):
    pool = new_pool(client, alice)
    old, samples = make_dataset(database_url, alice.owner_id, 3, name="old")
    new, _ = make_dataset(database_url, alice.owner_id, 2, name="new")
    make_round(database_url, pool["id"], alice.owner_id, number=1, members=samples[:2], pruned=samples[2:],
               dataset_ids=[old])
    def start():
        return client.post(f"/v1/pools/{pool['id']}/rounds", json={"dataset_ids": [new, old], "budget": 1},
                           headers={**alice.headers, "Idempotency-Key": "k"})

    r = start()
    assert r.status_code == 202, r.text
    (warning,) = r.json()["warnings"]
    assert warning["code"] == "dataset_already_in_pool" and old in warning["message"]
    assert "3 member(s)" in warning["message"]
    replay = start()  # a retried request gets the warnings back with the round
    assert replay.headers["idempotent-replayed"] == "true" and replay.json() == r.json()
