"""Cursor pagination: limit bounds, has_more, after, a stable total order (created_at, then id)."""
from __future__ import annotations

from datetime import timedelta

from service.db.models import Job, utcnow
from service.db.session import session_scope
from service.jobs import add_event, create_job


def _make_jobs(database_url, owner_id, n, same_time_from=2) -> list[str]:
    """n jobs; from index `same_time_from` on they share one created_at, so only the id orders them."""
    t0 = utcnow()
    with session_scope(database_url) as session:
        ids = []
        for i in range(n):
            job = create_job(session, owner_id, "ingest", "ingest", {"i": i})
            job.created_at = t0 + timedelta(seconds=min(i, same_time_from))
            ids.append(job.id)
    first, tied = ids[:same_time_from], sorted(ids[same_time_from:])
    return first + tied


def _walk(client, headers, url, limit):
    seen, after, pages = [], None, 0
    while True:
        q = f"{url}{'&' if '?' in url else '?'}limit={limit}" + (f"&after={after}" if after else "")
        body = client.get(q, headers=headers).json()
        pages += 1
        seen += [x["id"] for x in body["data"]]
        assert len(body["data"]) <= limit
        if not body["has_more"]:
            return seen, pages
        after = body["data"][-1]["id"]


def test_pages_cover_everything_once_in_order(client, alice, database_url):
    expected = _make_jobs(database_url, alice.owner_id, 7)
    first = client.get("/v1/jobs?limit=3", headers=alice.headers).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [j["id"] for j in first["data"]] == expected[:3]
    seen, pages = _walk(client, alice.headers, "/v1/jobs", 3)
    assert seen == expected and pages == 3
    seen, pages = _walk(client, alice.headers, "/v1/jobs", 7)  # exactly one full page: has_more False
    assert seen == expected and pages == 1
    assert len(client.get("/v1/jobs", headers=alice.headers).json()["data"]) == 7  # default 20


def test_filters_combine_with_the_cursor(client, alice, database_url):
    ids = _make_jobs(database_url, alice.owner_id, 6)
    with session_scope(database_url) as session:
        for job_id in ids[::2]:
            session.get(Job, job_id).status = "succeeded"
    seen, _ = _walk(client, alice.headers, "/v1/jobs?status=succeeded", 2)
    assert seen == ids[::2]
    assert client.get("/v1/jobs?kind=round", headers=alice.headers).json()["data"] == []


def test_integer_cursor_on_events(client, alice, database_url):
    with session_scope(database_url) as session:
        job = create_job(session, alice.owner_id, "round", "select", {})
        for i in range(4):
            add_event(session, job.id, f"step {i}")
        job_id = job.id
    seen, pages = _walk(client, alice.headers, f"/v1/jobs/{job_id}/events", 2)
    assert pages == 3 and len(seen) == 5 and seen == sorted(seen)
    body = client.get(f"/v1/jobs/{job_id}/events?limit=1&after={seen[-1]}", headers=alice.headers).json()
    assert body == {"object": "list", "data": [], "has_more": False}
    for after in ("99999999999999999999", str(-(2**63) - 1), "abc"):  # beyond BIGINT: no id, not a DB error
        r = client.get(f"/v1/jobs/{job_id}/events?after={after}", headers=alice.headers)
        assert r.status_code == 400 and r.json()["code"] == "invalid_cursor", r.text


def test_bad_cursors_and_limits(client, alice, bob, database_url):
    bobs = _make_jobs(database_url, bob.owner_id, 1)
    _make_jobs(database_url, alice.owner_id, 2)
    for after in ("job_unknown", bobs[0]):  # another owner's id is not a cursor either
        r = client.get(f"/v1/jobs?after={after}", headers=alice.headers)
        assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"
    r = client.get("/v1/jobs/job_x/events?after=abc", headers=alice.headers)
    assert r.status_code == 404  # the job is checked before the cursor
    for limit in (0, 101, "x"):
        r = client.get(f"/v1/jobs?limit={limit}", headers=alice.headers)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.limit"
    assert len(client.get("/v1/jobs?limit=100", headers=alice.headers).json()["data"]) == 2
