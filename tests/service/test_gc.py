"""Blob garbage collection (service/gc.py and `adaptinf gc`): only old blobs that no typed column
names go; a sha256 that only JSON mentions is no reference."""
from __future__ import annotations

import os
import time

import pytest
from pool_rows import make_dataset, make_round

from service.cli import main
from service.config import get_settings
from service.db.models import ROUND_BLOB_KINDS, Dataset, FeatureShard, IndexVersion, Job, JobEvent, RoundBlob, Sample
from service.db.session import session_scope
from service.gc import collect
from core.blobs import BlobStore

OLD = time.time() - 3 * 86400


def age(blobs: BlobStore, *shas: str) -> None:
    for sha in shas:
        os.utime(blobs.path(sha), (OLD, OLD))


@pytest.fixture
def world(client, alice, database_url, settings):
    """Blobs referenced in every typed way the service refers to them, one old blob that only JSON
    columns mention (as the round stages' state does), one unreferenced young blob, and an old and
    a young leftover temp file."""
    blobs = settings.blob_store()
    pool_id = client.post("/v1/pools", json={"name": "p", "base_model": "tiny-llava", "model_type": "llava"},
                          headers=alice.headers).json()["id"]
    _, sample_ids = make_dataset(database_url, alice.owner_id, 2, blobs=blobs)  # image_refs
    rnd = make_round(database_url, pool_id, alice.owner_id, number=1, selected=sample_ids, blobs=blobs)  # checkpoint
    names = ("upload", "archive", "shard", "index", *ROUND_BLOB_KINDS, "orphan", "young")
    put = {name: blobs.put_bytes(name.encode()).sha256 for name in names}
    with session_scope(database_url) as session:
        ds = session.query(Dataset).first()
        ds.file_blob, ds.archive_blob = put["upload"], put["archive"]
        session.add(FeatureShard(round_id=rnd["round_id"], shard=0, status="done", blob=put["shard"], rows=2))
        session.add(IndexVersion(pool_id=pool_id, round_id=rnd["round_id"], blob=put["index"], sha256=put["index"],
                                 size_bytes=5, ntotal=2, kind="flat", dim=8))
        session.add_all(RoundBlob(round_id=rnd["round_id"], kind=kind, blob=put[kind]) for kind in ROUND_BLOB_KINDS)
        # JSON that names the orphan as the round stages' state names their blobs: not a reference
        job = session.get(Job, rnd["job_id"])
        job.result = {"state": {"candidates_blob": put["orphan"], "nested": [{"decision_blob": put["orphan"]}]}}
        session.add(JobEvent(job_id=job.id, message="m", data={"blob": put["orphan"]}))
    everything = [p.name for p in blobs.root.glob("??/??/*")]
    age(blobs, *(sha for sha in everything if sha != put["young"]))
    old_tmp, young_tmp = blobs.root / "tmp" / "put.old.tmp", blobs.root / "tmp" / "put.young.tmp"
    old_tmp.write_bytes(b"x")
    young_tmp.write_bytes(b"y")
    os.utime(old_tmp, (OLD, OLD))
    return blobs, put, everything, old_tmp, young_tmp


def test_dry_run_reports_and_delete_removes_only_old_unreferenced_blobs(world, database_url):
    blobs, put, everything, old_tmp, young_tmp = world
    with session_scope(database_url) as session:
        report = collect(session, blobs, grace_seconds=86400, delete=False)
    assert report.unreferenced == [put["orphan"]] and report.stale_tmp == [str(old_tmp)]
    assert report.scanned == len(everything) and report.referenced == len(everything) - 2  # orphan, young
    assert report.unreferenced_bytes == len(b"orphan") and report.deleted == 0
    assert all(blobs.exists(sha) for sha in everything) and old_tmp.exists()

    with session_scope(database_url) as session:
        report = collect(session, blobs, grace_seconds=86400, delete=True)
    assert report.deleted == 1 and not blobs.exists(put["orphan"]) and not old_tmp.exists()
    assert all(blobs.exists(sha) for sha in everything if sha != put["orphan"]) and young_tmp.exists()
    assert all(blobs.verify(sha) for sha in everything if sha != put["orphan"])


def test_a_reused_blob_is_protected_by_the_grace_period(world, database_url):
    blobs, put, *_ = world
    # A new upload with the orphan's bytes reuses the stored blob before its row is committed:
    # the reuse refreshes the blob's mtime, so a collector running in between leaves it alone.
    assert blobs.put_bytes(b"orphan").sha256 == put["orphan"]
    with session_scope(database_url) as session:
        assert collect(session, blobs, grace_seconds=86400, delete=True).deleted == 0
    assert blobs.verify(put["orphan"])


def test_cli_gc_is_a_dry_run_unless_told(world, database_url, settings, monkeypatch, capsys):
    blobs, put, *_ = world
    monkeypatch.setenv("ADAPTINF_DATABASE_URL", database_url)
    monkeypatch.setenv("ADAPTINF_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        assert main(["gc"]) == 0
        assert "would delete (dry run; pass --delete): 1 unreferenced" in capsys.readouterr().out
        assert blobs.exists(put["orphan"])
        assert main(["gc", "--delete"]) == 0
        assert "deleted: 1 unreferenced" in capsys.readouterr().out
        assert not blobs.exists(put["orphan"])
        assert main(["gc", "--grace-hours", "-1"]) == 2
    finally:
        get_settings.cache_clear()


def test_rows_a_failed_ingest_left_keep_no_image(client, alice, database_url, settings):
    """An ingest cancelled mid-write leaves some rows in its failed dataset: their images go."""
    blobs = settings.blob_store()
    dataset_id, _ = make_dataset(database_url, alice.owner_id, 2, blobs=blobs)
    with session_scope(database_url) as session:
        images = {sha for s in session.query(Sample).filter_by(dataset_id=dataset_id) for sha in s.image_refs}
        session.get(Dataset, dataset_id).status = "failed"
    assert images
    age(blobs, *images)
    with session_scope(database_url) as session:
        report = collect(session, blobs, grace_seconds=86400, delete=False)
    assert images <= set(report.unreferenced)
