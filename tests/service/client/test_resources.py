"""service.client against the real app under uvicorn (SQLite and PostgreSQL): every resource,
auto-paging, typed errors, wait(), downloads; and its import staying free of torch and workers."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from apitools import serve_app
from service.client import ApiError, ApiUnreachable, Client, Dataset, Job, Pool, WaitTimeout
from service.client import http as client_http
from service.db.session import session_scope
from service.jobs import add_event
from tests.datagen import write_llava_dataset
from tests.service.pool_rows import adapter_tar_gz, make_dataset, make_round, set_job

REPO = Path(__file__).resolve().parents[3]


def test_importing_the_client_loads_no_torch_nor_workers():
    code = ("import sys, service.client; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'workers', 'transformers', 'faiss', 'sqlalchemy', 'fastapi')); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.fixture
def api(settings, alice):
    with serve_app(settings) as url, Client(url, alice.key) as client:
        yield client


def test_datasets(api, alice, database_url, tmp_path):
    file, archive = write_llava_dataset(tmp_path, 3)
    ds = api.datasets.upload(file, archive, name="mine", skill="vqa")
    assert isinstance(ds, Dataset) and (ds.name, ds.status, ds.num_samples, ds.skill) == ("mine", "pending", 3, "vqa")
    assert api.datasets.get(ds.id) == ds
    assert [d.id for d in api.datasets.list()] == [ds.id]
    with pytest.raises(ApiError) as exc:  # patch needs a ready dataset: 409 with its code
        api.datasets.patch(ds.id, skill="count")
    assert exc.value.status == 409 and exc.value.code == "dataset_not_ready"

    ready, sample_ids = make_dataset(database_url, alice.owner_id, 5)
    assert api.datasets.patch(ready, skill="count").skill == "count"
    assert api.datasets.patch(ready, skill=None).skill is None
    samples = list(api.datasets.samples(ready))
    assert [s.id for s in samples] == sample_ids and samples[0].key == "s0"
    set_job(database_url, ds.job_id, status="failed")  # an ended ingest: the dataset may go
    api.datasets.delete(ds.id)
    with pytest.raises(ApiError) as exc:
        api.datasets.get(ds.id)
    assert exc.value.status == 404 and exc.value.problem.status == 404 and ds.id in exc.value.problem.detail


def test_auto_paging_follows_the_cursor(api, alice, database_url, monkeypatch):
    ids = [make_dataset(database_url, alice.owner_id, 1, name=f"d{i}")[0] for i in range(5)]
    pages: list[dict] = []
    real = api.http.request

    def spy(method, path, **kw):
        pages.append(dict(kw.get("params") or {}))
        return real(method, path, **kw)

    monkeypatch.setattr(client_http, "PAGE_SIZE", 2)
    monkeypatch.setattr(api.http, "request", spy)
    assert [d.id for d in api.datasets.list()] == ids
    assert pages == [{"limit": 2}, {"limit": 2, "after": ids[1]}, {"limit": 2, "after": ids[3]}]


def test_pools_rounds_checkpoints(api, alice, database_url, settings, tmp_path):
    owner = alice.owner_id
    ev, _ = make_dataset(database_url, owner, 2)
    new, sample_ids = make_dataset(database_url, owner, 3, blobs=settings.blob_store())
    pool = api.pools.create("p", "tiny-llava", "llava", config={"selection": {"n_clusters": 4}})
    assert isinstance(pool, Pool) and pool.config["selection"]["n_clusters"] == 4
    pool = api.pools.add_eval_set(pool.id, ev, "count")
    assert [(e.dataset_id, e.skill) for e in pool.eval_sets] == [(ev, "count")]
    assert [p.id for p in api.pools.list()] == [pool.id] and api.pools.get(pool.id) == pool
    assert api.pools.clusters(pool.id).clusters == []
    assert api.pools.metrics(pool.id).skills == ["count"]

    rnd = api.rounds.create(pool.id, [new], 2, method="random", seed=3)
    assert rnd.number == 1 and rnd.params.seed == 3 and rnd.params.method == "random" and rnd.job.status == "queued"
    assert [r.id for r in api.rounds.list(pool.id)] == [rnd.id] and api.rounds.get(rnd.id).job_id == rnd.job_id
    with pytest.raises(ApiError) as exc:  # one round at a time
        api.rounds.create(pool.id, [new], 2)
    assert exc.value.status == 409 and exc.value.code == "round_in_progress"
    assert api.jobs.cancel(rnd.job_id).status == "cancelled"

    done = make_round(database_url, pool.id, owner, number=2, selected=sample_ids, blobs=settings.blob_store())
    clusters = api.pools.clusters(pool.id)
    assert clusters.round_id == done["round_id"] and clusters.clusters[0].selected == 3  # typed: ClusterOut
    assert api.rounds.get(done["round_id"]).result.selected == 3
    out = tmp_path / "sel.jsonl"
    assert api.rounds.download_selection(done["round_id"], out) == out.stat().st_size
    assert [json.loads(x)["adaptinf"]["sample_id"] for x in out.read_text().splitlines()] == sample_ids

    ckpts = list(api.checkpoints.list(pool_id=pool.id))
    assert [c.id for c in ckpts] == [done["checkpoint_id"]] and ckpts[0].round_number == 2
    target = tmp_path / "a.tar.gz"
    d = api.checkpoints.download(done["checkpoint_id"], target)
    assert target.read_bytes() == adapter_tar_gz() and d.downloaded == d.size and not d.already_complete
    assert api.checkpoints.download(done["checkpoint_id"], target).already_complete
    with tarfile.open(target) as tar:
        assert "adapter_config.json" in tar.getnames()


def test_jobs_list_events_wait(api, alice, database_url):
    pool = api.pools.create("p", "tiny-llava", "llava")
    new, _ = make_dataset(database_url, alice.owner_id, 2)
    job_id = api.rounds.create(pool.id, [new], 1).job_id
    with session_scope(database_url) as session:
        for i in range(3):
            add_event(session, job_id, f"step {i}", data={"type": "train.step", "step": i, "loss": 2.0 - i})
    events = list(api.jobs.events(job_id))
    steps = [e for e in events if e.type == "train.step"]
    assert [e.data["step"] for e in steps] == [0, 1, 2]
    assert list(api.jobs.events(job_id, after=steps[1].id)) == [steps[2]]
    assert [j.id for j in api.jobs.list(kind="round")] == [job_id]
    assert list(api.jobs.list(status="failed")) == []

    with pytest.raises(WaitTimeout) as exc:
        api.jobs.wait(job_id, timeout=0.2, interval=0.05)
    assert exc.value.job.status == "queued"

    def move() -> None:
        time.sleep(0.3)
        set_job(database_url, job_id, status="running", stage="features", progress_done=1, progress_total=2)
        time.sleep(0.5)
        set_job(database_url, job_id, status="succeeded", stage="finalize", progress_done=2, progress_total=2)

    t = threading.Thread(target=move)
    t.start()
    seen: list[Job] = []
    job = api.jobs.wait(job_id, on_update=seen.append, interval=0.05)
    t.join()
    assert job.status == "succeeded" and seen[-1] == job
    assert any(j.status == "running" and j.progress.done == 1 for j in seen)
    assert job.progress.unit is None and job.overall is None  # a server without the new fields: all optional


def test_errors_carry_the_problem(api):
    with pytest.raises(ApiError) as exc:
        api.pools.create("p", "m", "llava", config={"selection": {"n_clusters": 0}})
    err = exc.value
    assert err.status == 422 and "body.config.selection.n_clusters" in str(err) and "\n" not in str(err)
    assert [e.field for e in err.problem.errors] == ["body.config.selection.n_clusters"]
    assert err.problem.code == "validation_error"
    with Client(api.url, "ak_wrong") as bad, pytest.raises(ApiError) as exc:
        bad.pools.get("pool_x")
    assert exc.value.status == 401


def test_unreachable_api_raises_after_retries():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with Client(f"http://127.0.0.1:{port}", "ak_x", retries=1, backoff=0) as c, pytest.raises(ApiUnreachable) as exc:
        c.pools.get("pool_x")
    assert f"127.0.0.1:{port}" in str(exc.value)


def test_pool_index_download(api, alice, database_url, settings, tmp_path):
    """pools.download_index: the verified file, resumed; a damaged version is a 503 naming its
    rebuild job (retried on its own by a client with retries), served again once rebuilt."""
    import hashlib

    from index_rows import corrupt_blob, store_index

    from service.db.session import get_sessionmaker
    from workers.rounds.index_rebuild import rebuild_index_version

    pool = api.pools.create("p", "tiny-llava", "llava", config={"pool_index": True})
    blobs = settings.blob_store()
    stored = {}
    for number in (1, 2):
        rnd = make_round(database_url, pool.id, alice.owner_id, number=number)
        stored[number] = store_index(database_url, blobs, settings.work_dir, pool.id, rnd["round_id"], number,
                                     n=20 * number)
    d = api.pools.download_index(pool.id, tmp_path / "i.faiss")
    data = (tmp_path / "i.faiss").read_bytes()
    assert hashlib.sha256(data).hexdigest() == stored[2].sha256 and d.downloaded == d.size == len(data)
    assert (d.round_number, d.rows, d.dim, d.kind, d.version_id) == (
        2, len(stored[2].survivors), 16, "flat", stored[2].version_id)
    # the default file name, an older round, and a resumed partial file
    older = api.pools.download_index(pool.id, round_number=1)
    try:
        assert older.path == Path(f"{pool.id}-round1.faiss") and older.round_number == 1
        assert hashlib.sha256(older.path.read_bytes()).hexdigest() == stored[1].sha256
    finally:
        older.path.unlink()
    (tmp_path / "i.faiss").unlink()
    (tmp_path / "i.faiss.part").write_bytes(data[:50])
    d = api.pools.download_index(pool.id, tmp_path / "i.faiss")
    assert d.resumed_at == 50 and (tmp_path / "i.faiss").read_bytes() == data

    off = api.pools.create("q", "tiny-llava", "llava")
    with pytest.raises(ApiError) as exc:
        api.pools.download_index(off.id, tmp_path / "none.faiss")
    assert exc.value.status == 404 and exc.value.code == "no_index" and not (tmp_path / "none.faiss").exists()

    corrupt_blob(blobs, stored[2].sha256)
    with Client(api.http.url, alice.key, retries=0) as impatient, pytest.raises(ApiError) as exc:
        impatient.pools.download_index(pool.id, tmp_path / "j.faiss")
    assert exc.value.status == 503 and exc.value.code == "index_rebuilding"
    job_id = exc.value.problem.model_extra["job_id"]
    assert api.jobs.get(job_id).kind == "index.rebuild"
    rebuild_index_version(get_sessionmaker(database_url), blobs, settings.work_dir, stored[2].version_id)
    d = api.pools.download_index(pool.id, tmp_path / "j.faiss")
    assert hashlib.sha256((tmp_path / "j.faiss").read_bytes()).hexdigest() == stored[2].sha256
