"""/healthz, /readyz (200, and 503 with a broken database), /metrics text."""
from __future__ import annotations

import re

from fastapi.testclient import TestClient

from service.config import Settings
from service.db.models import Job
from service.db.session import session_scope
from service.jobs import create_job
from service.main import create_app


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["checks"] == {"database": "ok", "broker": "ok", "disk": "ok"} and body["status"] == "ready"
    assert body["disk"]["free_bytes"] >= body["disk"]["min_free_bytes"] == 256 * 2**20


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    broken = Settings(
        data_dir=tmp_path,
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2",
        broker_url="memory://",
    )
    with TestClient(create_app(broken)) as c:
        assert c.get("/healthz").status_code == 200  # alive, just not ready
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["checks"] == {"database": "unreachable", "broker": "ok", "disk": "ok"}
        assert r.json()["code"] == "not_ready"


def test_readyz_is_503_when_the_broker_is_unreachable(tmp_path):
    broken = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        broker_url="redis://127.0.0.1:1/0",
    )
    with TestClient(create_app(broken)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"] == {"database": "ok", "broker": "unreachable", "disk": "ok"}


def _sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return None


def test_metrics_counts_requests_by_route_template_and_jobs_by_status(client, alice, database_url):
    with session_scope(database_url) as session:
        ids = [create_job(session, alice.owner_id, "ingest", "ingest", {}).id for _ in range(3)]
        session.get(Job, ids[0]).status = "running"
    for job_id in ids:
        client.get(f"/v1/jobs/{job_id}", headers=alice.headers)
    client.get("/v1/jobs/job_missing", headers=alice.headers)
    client.get("/no/such/route")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert _sample(text, "adaptinf_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="200") == 3
    assert _sample(text, "adaptinf_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="404") == 1
    assert _sample(text, "adaptinf_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert _sample(text, "adaptinf_http_request_duration_seconds_count", method="GET", route="/v1/jobs/{job_id}") == 4
    assert _sample(text, "adaptinf_jobs", status="queued") == 2
    assert _sample(text, "adaptinf_jobs", status="running") == 1
    assert _sample(text, "adaptinf_jobs", status="failed") == 0


def test_readyz_checks_an_s3_blob_store_instead_of_trusting_the_disk(tmp_path, s3_endpoint, monkeypatch):
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    base = {"data_dir": tmp_path, "database_url": f"sqlite:///{tmp_path / 'x.db'}", "broker_url": "memory://",
            "s3_endpoint_url": s3_endpoint.url}
    with TestClient(create_app(Settings(**base, blob_store_url=f"s3://{s3_endpoint.new_bucket()}/b"))) as c:
        r = c.get("/readyz")
        assert r.status_code == 200
        assert r.json()["checks"] == {"database": "ok", "broker": "ok", "disk": "ok", "blob_store": "ok"}
    with TestClient(create_app(Settings(**base, blob_store_url="s3://bucket-that-was-never-made/b"))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["blob_store"] == "unreachable"
        assert r.json()["detail"] == "not ready: blob_store unreachable"
