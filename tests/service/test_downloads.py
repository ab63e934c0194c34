"""Selection downloads (JSONL, JSON, tar with images, streamed; 409 until selection is final).
SQLite and PostgreSQL for the routes. (Range / ETag: tests/service/api/test_blob_response.py.)"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from service import downloads
from service.db.models import Job
from service.db.session import session_scope
from tests.service.pool_rows import make_dataset, make_round


@pytest.fixture
def pool_id(client, alice):
    body = {"name": "p", "base_model": "tiny-llava", "model_type": "llava"}
    return client.post("/v1/pools", json=body, headers=alice.headers).json()["id"]


@pytest.fixture
def finished(client, alice, pool_id, database_url, settings):
    """A succeeded round that selected 3 of dataset A (images) and 2 of dataset B, where B's first
    image has the same name as A's first but other bytes."""
    blobs = settings.blob_store()
    a, a_ids = make_dataset(database_url, alice.owner_id, 4, blobs=blobs, name="a")
    b, b_ids = make_dataset(database_url, alice.owner_id, 2, blobs=blobs, name="b", image_names=["img/0.png", "x/y.png"])
    chosen = [a_ids[0], a_ids[2], a_ids[3], b_ids[0], b_ids[1]]
    ids = make_round(database_url, pool_id, alice.owner_id, number=1, selected=chosen)
    return {"round_id": ids["round_id"], "a": a, "b": b, "chosen": chosen, "blobs": blobs}


def _check_records(records, finished):
    assert [r["adaptinf"]["sample_id"] for r in records] == finished["chosen"]
    first = records[0]
    assert first["id"] == "s0" and first["conversations"][1]["value"] == "answer 0"  # the original record
    prov = first["adaptinf"]
    assert (prov["round"], prov["round_id"], prov["dataset_id"], prov["key"]) == (1, finished["round_id"], finished["a"], "s0")
    assert [r["adaptinf"]["cluster"] for r in records] == [0, 1, 0, 1, 0]
    assert [r["adaptinf"]["stratum"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["adaptinf"]["score"] for r in records] == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert {r["adaptinf"]["expert"] for r in records} == {"el2n"}


def test_jsonl_and_json(client, alice, finished):
    url = f"/v1/rounds/{finished['round_id']}/selection"
    r = client.get(url, headers=alice.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert f'filename="{finished["round_id"]}-selection.jsonl"' in r.headers["content-disposition"]
    lines = r.text.splitlines()
    assert len(lines) == 5
    _check_records([json.loads(x) for x in lines], finished)

    r = client.get(url, params={"format": "json"}, headers=alice.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    _check_records(r.json(), finished)
    assert client.get(url, params={"format": "csv"}, headers=alice.headers).status_code == 422


def test_tar_has_jsonl_and_every_image_once(client, alice, finished):
    r = client.get(f"/v1/rounds/{finished['round_id']}/selection?format=tar", headers=alice.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    assert r.headers["x-selection-count"] == "5"
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    records = [json.loads(x) for x in members.pop("selection.jsonl").decode().splitlines()]
    _check_records(records, finished)
    a, b = finished["a"], finished["b"]
    # Images sit at their records' own names, so the extracted tar is the records' image folder.
    # B's "img/0.png" differs from A's: it moves under <dataset>/ so neither is overwritten.
    assert [r["adaptinf"]["images"] for r in records] == [
        ["img/0.png"], ["img/2.png"], ["img/3.png"], [f"{b}/img/0.png"], ["x/y.png"]
    ]
    assert [r["image"] for r in records[:3]] + [records[4]["image"]] == ["img/0.png", "img/2.png", "img/3.png", "x/y.png"]
    assert sorted(members) == sorted(p for r in records for p in r["adaptinf"]["images"])
    assert members["img/0.png"] == f"{a}:0:image".encode()
    assert members[f"{b}/img/0.png"] == f"{b}:0:image".encode()
    assert members["x/y.png"] == f"{b}:1:image".encode()


def test_tar_refuses_a_corrupt_image_and_a_reupload_repairs_it(client, alice, finished):
    blobs, a = finished["blobs"], finished["a"]
    content = f"{a}:2:image".encode()
    sha = hashlib.sha256(content).hexdigest()
    path = blobs.path(sha)
    path.chmod(0o644)
    path.write_bytes(b"X" + content[1:])  # same size, one byte changed
    url = f"/v1/rounds/{finished['round_id']}/selection?format=tar"
    r = client.get(url, headers=alice.headers)
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert (p["code"], p["blob"]) == ("blob_corrupt", sha) and "Upload the dataset" in p["detail"]
    blobs.put_bytes(content)  # what ingest does with an image of a re-uploaded dataset
    r = client.get(url, headers=alice.headers)
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:") as tar:
        assert tar.extractfile("img/2.png").read() == content
    path.unlink()
    r = client.get(url, headers=alice.headers)
    assert r.status_code == 500 and (r.json()["code"], r.json()["blob"]) == ("blob_missing", sha)


def test_streams_in_batches(client, alice, pool_id, database_url, monkeypatch):
    """More rows than one SQL batch: every row comes out once, in order."""
    monkeypatch.setattr(downloads, "_BATCH", 3)
    _, ids = make_dataset(database_url, alice.owner_id, 8)
    rnd = make_round(database_url, pool_id, alice.owner_id, number=1, selected=ids)
    body = client.get(f"/v1/rounds/{rnd['round_id']}/selection?format=json", headers=alice.headers).json()
    assert [r["adaptinf"]["sample_id"] for r in body] == ids


def test_409_until_selection_is_final(client, alice, pool_id, database_url):
    _, ids = make_dataset(database_url, alice.owner_id, 3)
    rnd = make_round(database_url, pool_id, alice.owner_id, number=1, status="running", selected=ids[:2])
    url = f"/v1/rounds/{rnd['round_id']}/selection"
    r = client.get(url, headers=alice.headers)
    assert r.status_code == 409 and r.json()["code"] == "selection_not_ready" and r.json()["round_status"] == "running"
    # Once the round's select stage (a child job) has succeeded, the selection is final.
    with session_scope(database_url) as session:
        session.add(Job(owner_id=alice.owner_id, kind="round.select", queue="select", params={},
                        parent_id=rnd["job_id"], status="succeeded"))
    r = client.get(url, headers=alice.headers)
    assert r.status_code == 200 and len(r.text.splitlines()) == 2


def test_empty_selection(client, alice, pool_id, database_url):
    rnd = make_round(database_url, pool_id, alice.owner_id, number=1, selected=[])
    url = f"/v1/rounds/{rnd['round_id']}/selection"
    assert client.get(url, headers=alice.headers).text == ""
    assert client.get(url + "?format=json", headers=alice.headers).json() == []
    tar_bytes = client.get(url + "?format=tar", headers=alice.headers).content
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert [m.name for m in tar.getmembers()] == ["selection.jsonl"]
