"""Prometheus: several API processes add up on /metrics (multiprocess mode), and the scrape-time
gauges (pool sizes, queue depths) report what SQL and the broker hold."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.api.metrics import Metrics
from service.broker import enqueue_job
from service.db.models import Pool
from service.db.session import session_scope
from tests.service.pool_rows import make_dataset, make_round

REPO = Path(__file__).resolve().parents[3]
ADAPTINF = Path(sys.executable).parent / "adaptinf"


def _sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))).strip(",") == want:
            return float(m.group(2))
    return None


def test_counters_of_two_processes_are_one_sum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = ("from service.api.metrics import Metrics; m = Metrics(); "
             "m.requests.labels('GET', '/v1/pools', '200').inc({n})")
    for n in (2, 5):  # two processes, one after the other: each leaves its own file
        subprocess.run([sys.executable, "-c", count.format(n=n)], cwd=REPO, env=env, check=True, timeout=60)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = Metrics().exposition().decode()
    assert _sample(text, "adaptinf_http_requests_total", method="GET", route="/v1/pools", status="200") == 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_adaptinf_api_with_two_processes_counts_every_request(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADAPTINF_", "PROMETHEUS_"))}
    env.update(ADAPTINF_DATA_DIR=str(tmp_path / "data"), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_1.db").write_bytes(b"stale")  # a previous run's file: emptied at start
    from service.cli.admin import upgrade_database

    upgrade_database(f"sqlite:///{(tmp_path / 'data' / 'adaptinf.db').resolve()}")
    proc = subprocess.Popen([str(ADAPTINF), "api", "--port", str(port), "--workers", "2"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        answered, deadline = 0, time.monotonic() + 90
        # Until both processes have answered (each writes its counter file on its first request):
        # a new connection per request, so either process may accept it.
        while len(list((tmp_path / "prom").glob("counter_*.db"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "two API processes did not both answer"
            try:
                answered += httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.3)  # not listening yet
        assert not (tmp_path / "prom" / "counter_1.db").exists()
        for _ in range(10):
            answered += httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        text = httpx.get(f"{base}/metrics", timeout=10).text
        # whichever process answers the scrape, it reports every request of both
        assert _sample(text, "adaptinf_http_requests_total", method="GET", route="/healthz", status="200") == answered
        assert _sample(text, "adaptinf_jobs", status="queued") == 0  # the scrape-time gauges are there too
    finally:
        proc.terminate()
        proc.wait(30)


def test_pool_sizes_and_queue_depths_at_scrape_time(client, alice, database_url, settings) -> None:
    _, sample_ids = make_dataset(database_url, alice.owner_id, 5)
    with session_scope(database_url) as session:
        pool = Pool(owner_id=alice.owner_id, name="p", base_model="tiny-llava", model_type="llava", config={})
        session.add(pool)
        session.flush()
        pool_id = pool.id
    make_round(database_url, pool_id, alice.owner_id, number=1, members=sample_ids[:3], pruned=sample_ids[3:4])
    # memory:// is one broker per test process: other tests may have left messages in it
    before = _sample(client.get("/metrics").text, "adaptinf_queue_depth", queue="ingest")
    for job_id in ("job_a", "job_b"):
        assert enqueue_job(settings, job_id, "ingest", "ingest")
    text = client.get("/metrics").text
    assert _sample(text, "adaptinf_pool_members", pool=pool_id, status="active") == 3
    assert _sample(text, "adaptinf_pool_members", pool=pool_id, status="pruned") == 1
    assert _sample(text, "adaptinf_queue_depth", queue="ingest") == before + 2
    assert _sample(text, "adaptinf_queue_depth", queue="train") is not None
