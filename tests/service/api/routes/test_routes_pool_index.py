"""GET /v1/pools/{id}/index: the FAISS file served after its sha256 check, never when damaged (503
naming the version and the rebuild job), rebuilt from the shards by that job, then served again."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from index_rows import corrupt_blob, store_index
from tests.service.pool_rows import make_round

from service.db.models import IndexVersion, Job, RoundBlob
from service.db.session import session_scope
from workers.rounds.index_rebuild import rebuild_index_version


def new_pool(client, caller, pool_index: bool = True) -> str:
    body = {"name": "p", "base_model": "tiny-llava", "model_type": "llava", "config": {"pool_index": pool_index}}
    r = client.post("/v1/pools", json=body, headers=caller.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def read_faiss(data: bytes, tmp_path):
    import faiss

    path = tmp_path / "got.faiss"
    path.write_bytes(data)
    index = faiss.read_index(str(path))
    ids = faiss.vector_to_array(faiss.downcast_index(index).id_map)
    return index, ids


@pytest.fixture
def indexed(client, alice, database_url, settings):
    """A pool with two succeeded rounds, each with a stored index version."""
    pool = new_pool(client, alice)
    blobs = settings.blob_store()
    stored = {}
    for number in (1, 2):
        rnd = make_round(database_url, pool, alice.owner_id, number=number)
        stored[number] = store_index(database_url, blobs, settings.work_dir, pool, rnd["round_id"], number,
                                     n=20 + 10 * number)
    return pool, stored


def test_serves_the_latest_version_verified_and_readable(client, alice, indexed, tmp_path):
    pool, stored = indexed
    r = client.get(f"/v1/pools/{pool}/index", headers=alice.headers)
    assert r.status_code == 200, r.text
    latest = stored[2]
    assert hashlib.sha256(r.content).hexdigest() == latest.sha256 and r.headers["etag"] == f'"{latest.sha256}"'
    assert r.headers["content-type"] == "application/octet-stream"
    assert (r.headers["x-index-round"], r.headers["x-index-rows"], r.headers["x-index-dim"], r.headers["x-index-kind"]) \
        == ("2", str(len(latest.survivors)), "16", "flat")
    assert r.headers["x-index-version"] == latest.version_id
    assert f'{pool}-round2.faiss' in r.headers["content-disposition"]
    index, ids = read_faiss(r.content, tmp_path)
    assert index.ntotal == len(latest.survivors) and sorted(ids.tolist()) == latest.survivors.tolist()
    # a vector of the pool finds itself: the ids are the SQL sample ids
    _, found = index.search(latest.features[3:4].astype(np.float32), 1)
    assert found[0, 0] == latest.ids[3]

    older = client.get(f"/v1/pools/{pool}/index", params={"round": 1}, headers=alice.headers)
    assert older.status_code == 200 and hashlib.sha256(older.content).hexdigest() == stored[1].sha256
    # ETag, Range and HEAD as for every blob download
    etag = r.headers["etag"]
    assert client.get(f"/v1/pools/{pool}/index", headers={**alice.headers, "If-None-Match": etag}).status_code == 304
    part = client.get(f"/v1/pools/{pool}/index", headers={**alice.headers, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == r.content[10:20]
    head = client.head(f"/v1/pools/{pool}/index", headers=alice.headers)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(r.content))


def test_no_index_is_a_404_that_says_how_to_turn_it_on(client, alice, bob, indexed):
    pool, _ = indexed
    off = new_pool(client, alice, pool_index=False)
    r = client.get(f"/v1/pools/{off}/index", headers=alice.headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "no_index" and '"pool_index": true' in r.json()["detail"]
    fresh = new_pool(client, alice)
    r = client.get(f"/v1/pools/{fresh}/index", headers=alice.headers)
    assert r.status_code == 404 and "no index version yet" in r.json()["detail"]
    r = client.get(f"/v1/pools/{pool}/index", params={"round": 3}, headers=alice.headers)
    assert r.status_code == 404 and "round 3" in r.json()["detail"]
    assert client.get(f"/v1/pools/{pool}/index", params={"round": 0}, headers=alice.headers).status_code == 422
    assert client.get(f"/v1/pools/{pool}/index", headers=bob.headers).status_code == 404  # another owner's


def test_a_corrupt_version_is_refused_rebuilt_by_one_job_and_served_again(client, alice, indexed, settings,
                                                                         database_url, tmp_path):
    pool, stored = indexed
    latest = stored[2]
    blobs = settings.blob_store()
    corrupt_blob(blobs, latest.sha256)

    r = client.get(f"/v1/pools/{pool}/index", headers=alice.headers)
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert r.headers["retry-after"] == "10" and problem["code"] == "index_rebuilding"
    assert (problem["index_version_id"], problem["round_number"], problem["blob"]) == (latest.version_id, 2, latest.sha256)
    job_id = problem["job_id"]
    assert job_id in problem["detail"] and latest.version_id in problem["detail"]
    # asking again (GET or HEAD) while the rebuild is queued joins the same job
    again = client.get(f"/v1/pools/{pool}/index", headers=alice.headers)
    assert again.status_code == 503 and again.json()["job_id"] == job_id
    assert client.head(f"/v1/pools/{pool}/index", headers=alice.headers).status_code == 503
    job = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    assert (job["kind"], job["status"]) == ("index.rebuild", "queued")
    with session_scope(database_url) as session:
        assert session.query(Job).filter(Job.kind == "index.rebuild").count() == 1
        assert session.get(IndexVersion, latest.version_id).rebuild_job_id == job_id
    # the intact older version is still served meanwhile
    assert client.get(f"/v1/pools/{pool}/index", params={"round": 1}, headers=alice.headers).status_code == 200

    # the job's work, run in-process with the test's settings (the worker task wraps exactly this)
    from service.db.session import get_sessionmaker

    out = rebuild_index_version(get_sessionmaker(database_url), blobs, settings.work_dir, latest.version_id)
    assert out["rebuilt"] and out["ntotal"] == len(latest.survivors)
    with session_scope(database_url) as session:
        row = session.get(IndexVersion, latest.version_id)
        assert row.blob == row.sha256 == out["sha256"] and blobs.verify(row.blob)
        assert session.get(RoundBlob, (row.round_id, "index")).blob == row.blob

    r = client.get(f"/v1/pools/{pool}/index", headers=alice.headers)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == out["sha256"]
    index, ids = read_faiss(r.content, tmp_path)
    assert sorted(ids.tolist()) == latest.survivors.tolist()
    # the rebuilt rows are the shards' features, normalised (fp16 codes: within 1e-3)
    vectors = index.reconstruct_batch(latest.survivors)
    expected = latest.features[np.isin(latest.ids, latest.survivors)].astype(np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-3)


def test_a_rebuild_whose_source_is_damaged_is_a_500_and_not_retried(client, alice, indexed, settings, database_url):
    pool, stored = indexed
    latest = stored[2]
    blobs = settings.blob_store()
    blobs.delete(latest.sha256)
    job_id = client.get(f"/v1/pools/{pool}/index", headers=alice.headers).json()["job_id"]
    with session_scope(database_url) as session:  # what the job's failure leaves (its shards were damaged)
        job = session.get(Job, job_id)
        job.status, job.error = "failed", {"code": "index_source_damaged", "message": "feature shard 0 is corrupt"}
    r = client.get(f"/v1/pools/{pool}/index", headers=alice.headers)
    assert r.status_code == 500 and r.json()["code"] == "index_unrecoverable"
    assert r.json()["job_id"] == job_id and "feature shard 0 is corrupt" in r.json()["detail"]
    with session_scope(database_url) as session:
        assert session.query(Job).filter(Job.kind == "index.rebuild").count() == 1
        # any other failure (a worker lost thrice) lets the next request try again
        session.get(Job, job_id).error = {"code": "worker_lost", "message": "lease expired"}
    r = client.get(f"/v1/pools/{pool}/index", headers=alice.headers)
    assert r.status_code == 503 and r.json()["job_id"] != job_id
