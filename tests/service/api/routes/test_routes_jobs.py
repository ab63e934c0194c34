"""Jobs routes: read, filters, events, and the cancel transitions over HTTP."""
from __future__ import annotations

import pytest

from service.db.models import Dataset, Job
from service.db.session import session_scope
from service.jobs import add_event, create_job


def _job(database_url, owner_id, status="queued", kind="round", **params) -> str:
    with session_scope(database_url) as session:
        job = create_job(session, owner_id, kind, "select", params)
        job.status = status
        return job.id


def test_read_job_shape(client, alice, database_url):
    job_id = _job(database_url, alice.owner_id, status="running", pool_id="pool_1")
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        job.stage, job.progress_done, job.progress_total, job.attempts = "features", 3, 8, 1
        add_event(session, job_id, "shard 3 done", data={"shard": 3})
    body = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    assert body["status"] == "running" and body["stage"] == "features"
    # a job that reports no live progress (older rows, other kinds): the new fields are null
    assert body["progress"] == {"done": 3, "total": 8, "unit": None, "rate": None, "eta_seconds": None}
    assert body["overall"] is None and body["metrics"] is None
    assert body["attempts"] == 1 and body["max_attempts"] == 3
    assert body["params"] == {"pool_id": "pool_1"} and body["error"] is None and body["result"] is None
    events = client.get(f"/v1/jobs/{job_id}/events", headers=alice.headers).json()["data"]
    assert [e["message"] for e in events] == ["round job created", "shard 3 done"]
    assert events[1]["data"] == {"shard": 3} and events[1]["level"] == "info"


def test_filters(client, alice, database_url):
    a = _job(database_url, alice.owner_id, status="queued", kind="ingest")
    b = _job(database_url, alice.owner_id, status="failed", kind="round")
    with session_scope(database_url) as session:
        child = create_job(session, alice.owner_id, "round.features", "gpu", {}, parent_id=b)
        child_id = child.id

    def ids(q):
        return [j["id"] for j in client.get(f"/v1/jobs{q}", headers=alice.headers).json()["data"]]

    assert ids("?status=queued") == [a, child_id]
    assert ids("?status=failed&kind=round") == [b]
    assert ids("?kind=ingest") == [a]
    assert ids(f"?parent_id={b}") == [child_id]


def test_cancel_transitions(client, alice, database_url):
    with session_scope(database_url) as session:
        ds = Dataset(owner_id=alice.owner_id, name="d", file_blob="0" * 64, file_name="d.json")
        session.add(ds)
        session.flush()
        job = create_job(session, alice.owner_id, "ingest", "ingest", {"dataset_id": ds.id})
        ds.job_id, queued, ds_id = job.id, job.id, ds.id
    r = client.post(f"/v1/jobs/{queued}/cancel", headers=alice.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["cancel_requested"]
    assert r.json()["finished_at"] is not None
    ds = client.get(f"/v1/datasets/{ds_id}", headers=alice.headers).json()
    assert ds["status"] == "failed" and ds["error"]["code"] == "cancelled"

    running = _job(database_url, alice.owner_id, status="running")
    r = client.post(f"/v1/jobs/{running}/cancel", headers=alice.headers)
    assert r.json()["status"] == "cancelling" and r.json()["finished_at"] is None
    assert client.post(f"/v1/jobs/{running}/cancel", headers=alice.headers).json()["status"] == "cancelling"
    messages = [e["message"] for e in client.get(f"/v1/jobs/{running}/events", headers=alice.headers).json()["data"]]
    assert any("cancel requested" in m for m in messages)

    for status in ("succeeded", "failed"):
        done = _job(database_url, alice.owner_id, status=status)
        r = client.post(f"/v1/jobs/{done}/cancel", headers=alice.headers)
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "job_not_cancellable" and r.json()["job_status"] == status
    r = client.post(f"/v1/jobs/{queued}/cancel", headers=alice.headers)  # cancelled is terminal too
    assert r.status_code == 409


@pytest.mark.parametrize("path", ["/v1/jobs/job_nope", "/v1/jobs/job_nope/events"])
def test_missing_job_is_404(client, alice, path):
    assert client.get(path, headers=alice.headers).status_code == 404
    assert client.post("/v1/jobs/job_nope/cancel", headers=alice.headers).status_code == 404


def test_read_job_live_progress_and_overall(client, alice, database_url):
    from datetime import timedelta

    from core.progress import iso, utcnow

    job_id = _job(database_url, alice.owner_id, status="running")
    start = utcnow() - timedelta(seconds=100)
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        job.stage, job.progress_done, job.progress_total = "features", 1, 4
        job.progress_unit, job.progress_rate, job.progress_eta, job.progress_fraction = "shards", 0.02, 90.0, 0.5
        job.metrics = {"samples_done": 50, "samples_total": 100, "samples_per_second": 1.0}
        job.stages = [{"name": "prepare", "status": "done", "started_at": iso(start), "seconds": 10.0},
                      {"name": "features", "status": "running", "started_at": iso(start + timedelta(seconds=10)),
                       "seconds": None},
                      {"name": "select", "status": "pending", "started_at": None, "seconds": None},
                      {"name": "finalize", "status": "pending", "started_at": None, "seconds": None}]
    body = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    assert body["progress"] == {"done": 1, "total": 4, "unit": "shards", "rate": 0.02, "eta_seconds": 90.0}
    assert body["metrics"] == {"samples_done": 50, "samples_total": 100, "samples_per_second": 1.0}
    overall = body["overall"]
    assert [(s["name"], s["status"], s["fraction"]) for s in overall["stages"]] == [
        ("prepare", "done", 1.0), ("features", "running", 0.5), ("select", "pending", 0.0), ("finalize", "pending", 0.0)]
    # round weights: prepare .02, features .45, select .06, finalize .02 (of .55 planned)
    assert overall["fraction"] == pytest.approx((0.02 + 0.45 * 0.5) / 0.55, abs=1e-4)
    # 100 s for 0.245 weight done; features' own ETA (90 s) plus select and finalize at that pace
    assert overall["eta_seconds"] == pytest.approx(90 + 0.08 * 100 / 0.245, abs=1.0)


def test_a_cancel_racing_the_workers_end_never_overwrites_it(client, alice, database_url):
    """The worker's end is in an open transaction when the cancel arrives: the cancel waits for it
    and then finds the job finished (409), rather than writing `cancelling` over `succeeded`."""
    import threading
    import time

    from sqlalchemy import update

    running = _job(database_url, alice.owner_id, status="running")
    # a request first, so the key's use is recorded already: that write would otherwise make the
    # cancel wait for SQLite's lock by chance, fix or not
    assert client.get(f"/v1/jobs/{running}", headers=alice.headers).status_code == 200
    with session_scope(database_url) as worker:
        # the worker's final write, not committed yet (on PostgreSQL it holds the row lock, on
        # SQLite the database's write lock)
        worker.execute(update(Job).where(Job.id == running).values(status="succeeded"))
        answers = []
        cancel = threading.Thread(target=lambda: answers.append(
            client.post(f"/v1/jobs/{running}/cancel", headers=alice.headers)))
        cancel.start()
        time.sleep(0.5)  # the cancel is waiting for the lock, not done
        assert not answers
    cancel.join(30)
    assert answers[0].status_code == 409, answers[0].text
    assert answers[0].json()["job_status"] == "succeeded"
    with session_scope(database_url) as session:
        assert session.get(Job, running).status == "succeeded"
