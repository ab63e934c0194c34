"""Taking a dataset out of a pool (training data and evaluation sets) and deleting a pool: what goes,
what stays, the 409 while a round is unfinished, 404 for another owner, and that `adaptinf gc` then
finds the pool's blobs unreferenced. SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.db.models import (
    Checkpoint, EvalResult, FeatureShard, IndexVersion, Job, JobEvent, Pool, PoolEvalSet, PoolMember, Round,
    RoundBlob, Score, Selection,
)
from service.db.session import session_scope
from service.gc import collect
from tests.service.pool_rows import add_checkpoint, make_dataset, make_round

EVAL = {"loss": 1.0, "accuracy": 0.5, "n": 2}


def new_pool(client, caller) -> str:
    r = client.post("/v1/pools", json={"name": "p", "base_model": "tiny-llava", "model_type": "llava"},
                    headers=caller.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def count(database_url, model, *where) -> int:
    with session_scope(database_url) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def world(client, alice, database_url, settings):
    """A pool with two training datasets (one member pruned), an evaluation set with results, a
    succeeded round with selections and scores over both training datasets."""
    blobs = settings.blob_store()
    pool_id = new_pool(client, alice)
    d1, s1 = make_dataset(database_url, alice.owner_id, 3, name="d1")
    d2, s2 = make_dataset(database_url, alice.owner_id, 2, name="d2")
    ev, _ = make_dataset(database_url, alice.owner_id, 2, name="ev")
    r = client.post(f"/v1/pools/{pool_id}/eval-sets", json={"dataset_id": ev, "skill": "vqa"}, headers=alice.headers)
    assert r.status_code == 201, r.text
    rnd = make_round(database_url, pool_id, alice.owner_id, number=1, selected=[s1[0], s2[0]],
                     members=s1[:2] + s2, pruned=[s1[2]], blobs=blobs, evals=[(ev, "vqa", EVAL)], dataset_ids=[d1, d2])
    with session_scope(database_url) as session:
        session.add_all(Score(round_id=rnd["round_id"], sample_id=sid, ppl=1.0) for sid in s1 + s2)
    return {"pool": pool_id, "d1": d1, "d2": d2, "ev": ev, "s1": s1, "s2": s2, **rnd, "blobs": blobs}


def test_removing_a_training_dataset_takes_its_members_and_history_then_it_can_be_deleted(client, alice, world, database_url):
    pool, d1 = world["pool"], world["d1"]
    r = client.delete(f"/v1/datasets/{d1}", headers=alice.headers)
    assert r.status_code == 409 and r.json()["code"] == "in_use" and r.json()["pool_ids"] == [pool]
    assert f"DELETE /v1/pools/{pool}/datasets/{d1}" in r.json()["detail"]

    r = client.delete(f"/v1/pools/{pool}/datasets/{d1}", headers=alice.headers)
    assert r.status_code == 204 and r.content == b""
    got = client.get(f"/v1/pools/{pool}", headers=alice.headers).json()
    assert got["datasets"] == [{"dataset_id": world["d2"], "active": 2, "pruned": 0}]
    assert (got["size"], got["pruned"]) == (2, 0)
    assert got["eval_sets"] == [{"dataset_id": world["ev"], "skill": "vqa"}]  # not an evaluation use of d1
    s1 = world["s1"]
    assert count(database_url, PoolMember, PoolMember.sample_id.in_(s1)) == 0
    assert count(database_url, Selection, Selection.sample_id.in_(s1)) == 0
    assert count(database_url, Score, Score.sample_id.in_(s1)) == 0
    # the rest of the round stays: d2's rows, the checkpoint and its evaluation
    assert count(database_url, Selection) == 1 and count(database_url, Score) == 2
    assert count(database_url, EvalResult) == 1 and count(database_url, Checkpoint) == 1
    lines = client.get(f"/v1/rounds/{world['round_id']}/selection", headers=alice.headers).text.splitlines()
    assert len(lines) == 1  # the earlier round's selection no longer lists d1's sample

    again = client.delete(f"/v1/pools/{pool}/datasets/{d1}", headers=alice.headers)
    assert again.status_code == 404 and again.json()["code"] == "not_in_pool"
    assert client.delete(f"/v1/datasets/{d1}", headers=alice.headers).status_code == 204


def test_removing_an_evaluation_set_takes_its_link_and_results(client, alice, world, database_url):
    pool, ev = world["pool"], world["ev"]
    assert client.delete(f"/v1/datasets/{ev}", headers=alice.headers).status_code == 409
    # the eval-sets route refuses a training dataset: it is not an evaluation set
    r = client.delete(f"/v1/pools/{pool}/eval-sets/{world['d2']}", headers=alice.headers)
    assert r.status_code == 404 and r.json()["code"] == "not_in_pool"
    assert client.delete(f"/v1/pools/{pool}/eval-sets/{ev}", headers=alice.headers).status_code == 204
    got = client.get(f"/v1/pools/{pool}", headers=alice.headers).json()
    assert got["eval_sets"] == [] and got["size"] == 4  # training members untouched
    assert count(database_url, EvalResult) == 0 and count(database_url, PoolEvalSet) == 0
    assert client.get(f"/v1/pools/{pool}/metrics", headers=alice.headers).json()["skills"] == []
    assert client.delete(f"/v1/pools/{pool}/eval-sets/{ev}", headers=alice.headers).status_code == 404
    assert client.delete(f"/v1/datasets/{ev}", headers=alice.headers).status_code == 204


@pytest.mark.parametrize("status", ["queued", "running", "cancelling"])
def test_removal_and_deletion_wait_for_an_unfinished_round(client, alice, world, database_url, status):
    pool = world["pool"]
    rnd = make_round(database_url, pool, alice.owner_id, number=2, status=status)
    for url in (f"/v1/pools/{pool}/datasets/{world['d1']}", f"/v1/pools/{pool}/eval-sets/{world['ev']}",
                f"/v1/pools/{pool}"):
        r = client.delete(url, headers=alice.headers)
        assert r.status_code == 409 and r.json()["code"] == "round_in_progress", url
        assert rnd["job_id"] in r.json()["detail"] and status in r.json()["detail"]
    assert count(database_url, PoolMember) == 5 and count(database_url, PoolEvalSet) == 1
    assert client.get(f"/v1/pools/{pool}", headers=alice.headers).status_code == 200


def test_removal_and_deletion_wait_for_a_failed_rounds_last_stage_jobs(client, alice, world, database_url):
    """A round fails as soon as one shard does; its sibling shards stop a moment later."""
    pool = world["pool"]
    rnd = make_round(database_url, pool, alice.owner_id, number=2, status="failed")
    with session_scope(database_url) as session:
        shard = Job(owner_id=alice.owner_id, kind="round.features", queue="gpu", params={}, status="cancelling",
                    parent_id=rnd["job_id"])
        session.add(shard)
        session.flush()
        shard_id = shard.id
    for url in (f"/v1/pools/{pool}/datasets/{world['d1']}", f"/v1/pools/{pool}"):
        r = client.delete(url, headers=alice.headers)
        assert r.status_code == 409 and r.json()["code"] == "round_in_progress", url
        assert shard_id in r.json()["detail"] and "cancelling" in r.json()["detail"]
    with session_scope(database_url) as session:
        session.get(Job, shard_id).status = "cancelled"
    assert client.delete(f"/v1/pools/{pool}", headers=alice.headers).status_code == 204


def test_another_owner_gets_404(client, alice, bob, world, database_url):
    pool, d1 = world["pool"], world["d1"]
    for url in (f"/v1/pools/{pool}/datasets/{d1}", f"/v1/pools/{pool}/eval-sets/{world['ev']}", f"/v1/pools/{pool}"):
        r = client.delete(url, headers=bob.headers)
        assert r.status_code == 404 and r.json()["code"] == "not_found", url
    # bob's own pool cannot name alice's dataset either
    bobs = new_pool(client, bob)
    r = client.delete(f"/v1/pools/{bobs}/datasets/{d1}", headers=bob.headers)
    assert r.status_code == 404 and r.json()["code"] == "not_in_pool"
    assert count(database_url, PoolMember) == 5 and count(database_url, Pool) == 2


def test_deleting_a_pool_removes_its_rows_and_leaves_its_blobs_to_gc(client, alice, world, database_url, settings):
    blobs, pool = world["blobs"], world["pool"]
    other = new_pool(client, alice)  # must keep everything of its own
    kept = make_round(database_url, other, alice.owner_id, number=1, selected=world["s2"], members=world["s2"])
    kept["checkpoint_id"] = add_checkpoint(database_url, other, blobs, round_id=kept["round_id"],
                                           content=b"another adapter", evals=[(world["ev"], "vqa", EVAL)])
    put = {name: blobs.put_bytes(name.encode()).sha256 for name in ("plan", "decision", "view", "shard", "index")}
    with session_scope(database_url) as session:
        job = session.get(Job, world["job_id"])
        job.result = {"candidates_blob": put["plan"]}
        stage = Job(owner_id=alice.owner_id, kind="round.select", queue="select", parent_id=job.id,
                    params={}, result={"cluster_view_blob": put["view"]}, status="succeeded")
        session.add(stage)
        session.flush()
        session.add(JobEvent(job_id=stage.id, message="m", data={"blob": put["view"]}))
        for kind in ("plan", "decision", "view", "index"):
            session.add(RoundBlob(round_id=world["round_id"], blob=put[kind],
                                  kind={"plan": "candidates", "view": "cluster_view"}.get(kind, kind)))
        session.add(FeatureShard(round_id=world["round_id"], shard=0, status="done", blob=put["shard"], rows=2))
        session.add(IndexVersion(pool_id=pool, round_id=world["round_id"], blob=put["index"], sha256=put["index"],
                                 size_bytes=5, ntotal=4, kind="flat", dim=8))
        ckpt_blob = session.get(Checkpoint, world["checkpoint_id"]).blob
    with session_scope(database_url) as session:
        assert collect(session, blobs, grace_seconds=-60, delete=False).unreferenced == []

    r = client.delete(f"/v1/pools/{pool}", headers=alice.headers)
    assert r.status_code == 204 and r.content == b""
    assert client.get(f"/v1/pools/{pool}", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/rounds/{world['round_id']}", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/checkpoints/{world['checkpoint_id']}", headers=alice.headers).status_code == 404
    assert count(database_url, RoundBlob, RoundBlob.round_id == world["round_id"]) == 0
    for model, column in ((Round, Round.pool_id), (PoolMember, PoolMember.pool_id), (PoolEvalSet, PoolEvalSet.pool_id),
                          (Checkpoint, Checkpoint.pool_id), (IndexVersion, IndexVersion.pool_id)):
        assert count(database_url, model, column == pool) == 0, model
    assert count(database_url, Selection, Selection.round_id == world["round_id"]) == 0
    assert count(database_url, Score) == 0 and count(database_url, FeatureShard) == 0
    assert count(database_url, Job, Job.id.in_([world["job_id"], stage.id])) == 0 and count(database_url, JobEvent) == 0
    # the other pool and the datasets are untouched
    assert client.get(f"/v1/pools/{other}", headers=alice.headers).json()["size"] == 2
    assert count(database_url, EvalResult) == 1 and count(database_url, Job, Job.id == kept["job_id"]) == 1
    assert client.get(f"/v1/datasets/{world['d1']}", headers=alice.headers).status_code == 200

    with session_scope(database_url) as session:
        report = collect(session, blobs, grace_seconds=-60, delete=True)
    assert sorted(report.unreferenced) == sorted([ckpt_blob, *put.values()])
    assert all(not blobs.exists(sha) for sha in report.unreferenced)
    kept_blob = client.get(f"/v1/checkpoints/{kept['checkpoint_id']}", headers=alice.headers)
    assert kept_blob.status_code == 200
    assert client.delete(f"/v1/pools/{pool}", headers=alice.headers).status_code == 404
    # the datasets it used are free now
    assert client.delete(f"/v1/datasets/{world['d1']}", headers=alice.headers).status_code == 204
