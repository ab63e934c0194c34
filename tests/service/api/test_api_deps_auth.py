"""Bearer-key authentication and owner scoping on /v1 routes."""
from __future__ import annotations

import pytest

from service.auth import revoke_api_key
from service.db.models import ApiKey, Dataset
from service.db.session import session_scope
from service.jobs import create_job


def _assert_401(r) -> None:
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer ak_wrongwrongwrongwrongwrongwrongwrongwrongwro"},
        {"Authorization": "Bearer not-even-a-key"},
    ],
    ids=["none", "empty", "basic", "wrong", "malformed"],
)
def test_missing_or_wrong_key_is_401(client, alice, headers):
    for path in ("/v1/datasets", "/v1/jobs", "/v1/jobs/job_x"):
        _assert_401(client.get(path, headers=headers))


def test_revoked_key_is_401(client, alice, database_url):
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200
    with session_scope(database_url) as session:
        key = session.query(ApiKey).filter_by(owner_id=alice.owner_id).one()
        revoke_api_key(session, key.id)
    _assert_401(client.get("/v1/jobs", headers=alice.headers))


def test_other_owners_resources_are_404_like_missing_ones(client, alice, bob, database_url):
    with session_scope(database_url) as session:
        ds = Dataset(owner_id=alice.owner_id, name="private", file_blob="0" * 64, file_name="d.json")
        session.add(ds)
        session.flush()
        job = create_job(session, alice.owner_id, "ingest", "ingest", {"dataset_id": ds.id})
        ds_id, job_id = ds.id, job.id
    assert client.get(f"/v1/datasets/{ds_id}", headers=alice.headers).status_code == 200
    for method, path in [
        ("GET", f"/v1/datasets/{ds_id}"),
        ("GET", f"/v1/datasets/{ds_id}/samples"),
        ("DELETE", f"/v1/datasets/{ds_id}"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
    ]:
        theirs = client.request(method, path, headers=bob.headers)
        missing = client.request(method, path.replace(ds_id, "ds_nope").replace(job_id, "job_nope"), headers=bob.headers)
        assert theirs.status_code == missing.status_code == 404, path
        assert theirs.json()["code"] == "not_found"
    assert client.get("/v1/datasets", headers=bob.headers).json()["data"] == []
    assert client.get("/v1/jobs", headers=bob.headers).json()["data"] == []
    # Bob's attempts changed nothing.
    assert client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()["status"] == "queued"
