"""Idempotency-Key on POST /v1/datasets: replay, conflict, per-owner scope."""
from __future__ import annotations

import pytest
from apitools import count_rows, post_dataset

import datagen as dg
from service.api.idempotency import request_fingerprint
from service.db.models import Dataset, IdempotencyRecord, Job


@pytest.fixture
def files(tmp_path):
    return dg.write_llava_dataset(tmp_path / "a", 3, with_images=False)[0], dg.write_llava_dataset(tmp_path / "b", 4, with_images=False)[0]


def test_same_key_same_request_replays_the_first_response(client, alice, database_url, files):
    first = post_dataset(client, alice, files[0], name="x", headers={"Idempotency-Key": "k-1"})
    again = post_dataset(client, alice, files[0], name="x", headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert count_rows(database_url, Dataset) == 1 and count_rows(database_url, Job) == 1
    assert count_rows(database_url, IdempotencyRecord) == 1


def test_same_key_different_request_is_422(client, alice, database_url, files):
    assert post_dataset(client, alice, files[0], headers={"Idempotency-Key": "k-2"}).status_code == 202
    for kwargs in ({"file": files[1]}, {"file": files[0], "name": "renamed"}):
        r = post_dataset(client, alice, kwargs["file"], name=kwargs.get("name"), headers={"Idempotency-Key": "k-2"})
        assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert count_rows(database_url, Dataset) == 1


def test_keys_are_scoped_per_owner_and_optional(client, alice, bob, database_url, files):
    a = post_dataset(client, alice, files[0], headers={"Idempotency-Key": "shared"})
    b = post_dataset(client, bob, files[0], headers={"Idempotency-Key": "shared"})
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]
    # Without a key, every POST creates.
    post_dataset(client, alice, files[0])
    post_dataset(client, alice, files[0])
    assert count_rows(database_url, Dataset) == 4


def test_rejected_request_records_nothing(client, alice, database_url, tmp_path, files):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[]")
    assert post_dataset(client, alice, bad, headers={"Idempotency-Key": "k-3"}).status_code == 422
    # The key was not used up by the failure: a corrected request goes through.
    assert post_dataset(client, alice, files[0], headers={"Idempotency-Key": "k-3"}).status_code == 202
    assert count_rows(database_url, IdempotencyRecord) == 1


def test_key_length_is_checked(client, alice, files):
    r = post_dataset(client, alice, files[0], headers={"Idempotency-Key": "x" * 201})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "header.Idempotency-Key"


def test_fingerprint_is_canonical():
    assert request_fingerprint("r", {"a": 1, "b": [1, 2]}) == request_fingerprint("r", {"b": [1, 2], "a": 1})
    assert request_fingerprint("r", {"a": 1}) != request_fingerprint("r2", {"a": 1})
    assert request_fingerprint("r", {"a": 1}) != request_fingerprint("r", {"a": 2})


def test_a_key_whose_dataset_was_deleted_creates_anew(client, alice, database_url, files):
    """A replay never answers with a resource that is gone: the key is forgotten with it."""
    first = post_dataset(client, alice, files[0], name="x", headers={"Idempotency-Key": "k-gone"}).json()
    assert client.post(f"/v1/jobs/{first['job_id']}/cancel", headers=alice.headers).status_code == 200
    assert client.delete(f"/v1/datasets/{first['id']}", headers=alice.headers).status_code == 204
    again = post_dataset(client, alice, files[0], name="x", headers={"Idempotency-Key": "k-gone"})
    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first["id"]
    assert client.get(f"/v1/datasets/{again.json()['id']}", headers=alice.headers).status_code == 200
    replay = post_dataset(client, alice, files[0], name="x", headers={"Idempotency-Key": "k-gone"})
    assert replay.headers["idempotent-replayed"] == "true" and replay.json()["id"] == again.json()["id"]
