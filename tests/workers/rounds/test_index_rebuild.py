"""Rebuilding an index version from its round's feature shards (workers/rounds/index_rebuild.py
and the `index.rebuild` task), on SQLite and PostgreSQL, without a model."""
from __future__ import annotations

import json

import numpy as np
import pytest
from apitools import make_caller
from index_rows import corrupt_blob, store_index

from service.db.models import IndexVersion, Job, Pool, RoundBlob
from service.db.session import get_sessionmaker, session_scope
from service.jobs import create_job
from tests.service.pool_rows import make_round
from workers.engine.index import IndexRowsMismatch
from workers.rounds.index_rebuild import IndexSourceDamaged, rebuild_index_version


@pytest.fixture
def stored(database_url, tmp_path):
    from core.blobs import LocalBlobStore

    owner = make_caller(database_url).owner_id
    with session_scope(database_url) as session:
        pool = Pool(owner_id=owner, name="p", base_model="tiny-llava", model_type="llava", config={"pool_index": True})
        session.add(pool)
        session.flush()
        pool_id = pool.id
    rnd = make_round(database_url, pool_id, owner, number=1)
    blobs = LocalBlobStore(tmp_path / "blobs")
    return owner, blobs, store_index(database_url, blobs, tmp_path / "work", pool_id, rnd["round_id"], 1, n=40,
                                     pruned=(0, 5, 39))


def rebuild(database_url, blobs, tmp_path, version_id):
    return rebuild_index_version(get_sessionmaker(database_url), blobs, tmp_path / "work", version_id)


def test_an_intact_version_is_left_alone(database_url, stored, tmp_path):
    _, blobs, index = stored
    out = rebuild(database_url, blobs, tmp_path, index.version_id)
    assert out == {"index_version_id": index.version_id, "rebuilt": False, "sha256": index.sha256, "ntotal": 37}
    assert not list((tmp_path / "work").glob("index-rebuild-*"))  # its work folder is gone


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_version_is_rebuilt_from_the_shards_and_recorded(database_url, stored, tmp_path, damage):
    _, blobs, index = stored
    corrupt_blob(blobs, index.sha256) if damage == "corrupt" else blobs.delete(index.sha256)
    out = rebuild(database_url, blobs, tmp_path, index.version_id)
    assert out["rebuilt"] and out["ntotal"] == 37 and out["previous_sha256"] == index.sha256
    # the same rows and seed give the same bytes: the blob is whole again under its name
    assert out["sha256"] == index.sha256 and blobs.verify(index.sha256)
    with session_scope(database_url) as session:
        row = session.get(IndexVersion, index.version_id)
        assert (row.blob, row.sha256, row.size_bytes) == (out["sha256"], out["sha256"], blobs.size(out["sha256"]))
    import faiss

    got = faiss.read_index(str(blobs.materialize(out["sha256"])))
    assert sorted(faiss.vector_to_array(faiss.downcast_index(got).id_map).tolist()) == index.survivors.tolist()


def test_a_rebuild_that_gives_other_bytes_moves_both_references(database_url, stored, tmp_path, monkeypatch):
    """Another FAISS build (a new release) may write other bytes for the same rows: SQL then
    names the new blob in index_versions and round_blobs, and the damaged one is left to gc."""
    import workers.engine.index as index_mod

    _, blobs, index = stored
    blobs.delete(index.sha256)
    real = index_mod.build_index
    monkeypatch.setattr(index_mod, "build_index", lambda ids, x, seed=0: _reordered(real(ids, x, seed)))
    out = rebuild(database_url, blobs, tmp_path, index.version_id)
    assert out["rebuilt"] and out["sha256"] != index.sha256
    with session_scope(database_url) as session:
        row = session.get(IndexVersion, index.version_id)
        assert row.blob == out["sha256"] == session.get(RoundBlob, (row.round_id, "index")).blob


def _reordered(index):
    """The same rows, other bytes: the vectors added in another order."""
    import faiss

    ids = faiss.vector_to_array(index.id_map)
    vectors = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
    order = np.argsort(-ids)
    out = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16,
                                                       faiss.METRIC_INNER_PRODUCT))
    out.add_with_ids(vectors[order], ids[order])
    return out


@pytest.mark.parametrize("source", ["decision", "shard"])
def test_a_damaged_source_fails_with_its_code(database_url, stored, tmp_path, source):
    from service.db.models import FeatureShard

    _, blobs, index = stored
    blobs.delete(index.sha256)
    with session_scope(database_url) as session:
        round_id = session.get(IndexVersion, index.version_id).round_id
        sha = (session.get(RoundBlob, (round_id, "decision")).blob if source == "decision"
               else session.get(FeatureShard, (round_id, 1)).blob)
    corrupt_blob(blobs, sha)
    with pytest.raises(IndexSourceDamaged, match="decision" if source == "decision" else "feature shard 1") as exc:
        rebuild(database_url, blobs, tmp_path, index.version_id)
    assert exc.value.code == "index_source_damaged"


def test_a_rebuild_with_other_rows_is_refused(database_url, stored, tmp_path):
    """The decision blob rewritten to prune fewer samples: the rows no longer match SQL's ntotal."""
    _, blobs, index = stored
    blobs.delete(index.sha256)
    with session_scope(database_url) as session:
        row = session.get(RoundBlob, (session.get(IndexVersion, index.version_id).round_id, "decision"))
        row.blob = blobs.put_bytes(json.dumps({"assign": [], "pruned": []}).encode()).sha256
    with pytest.raises(IndexRowsMismatch, match="40 rows; SQL recorded 37") as exc:
        rebuild(database_url, blobs, tmp_path, index.version_id)
    assert exc.value.code == "index_source_damaged"


def test_the_task_runs_the_job_and_records_its_result(database_url, stored, tmp_path, monkeypatch):
    from service.config import get_settings
    from workers.tasks.index import rebuild_index

    owner, blobs, index = stored
    monkeypatch.setenv("ADAPTINF_DATABASE_URL", database_url)
    monkeypatch.setenv("ADAPTINF_DATA_DIR", str(tmp_path))  # its blob store is tmp_path/blobs, as above
    get_settings.cache_clear()
    try:
        corrupt_blob(blobs, index.sha256)
        with session_scope(database_url) as session:
            job_id = create_job(session, owner, "index.rebuild", "select", {"index_version_id": index.version_id}).id
        assert rebuild_index(job_id)["status"] == "succeeded"
        with session_scope(database_url) as session:
            job = session.get(Job, job_id)
            assert job.status == "succeeded" and job.result["rebuilt"] and job.result["sha256"] == index.sha256
        assert blobs.verify(index.sha256)
    finally:
        get_settings.cache_clear()


def test_a_round_from_before_round_blobs_takes_its_pruned_members(database_url, stored, tmp_path):
    """No decision blob named (a round finalized before this release): the members the round
    pruned give the same survivors, hence the same index."""
    from service.db.models import Dataset, PoolMember, Sample

    owner, blobs, index = stored
    gone = set(index.ids.tolist()) - set(index.survivors.tolist())
    with session_scope(database_url) as session:
        row = session.get(IndexVersion, index.version_id)
        session.delete(session.get(RoundBlob, (row.round_id, "decision")))
        ds = Dataset(owner_id=owner, name="d", status="ready", file_blob="0" * 64, file_name="d.json")
        session.add(ds)
        session.flush()
        for pos, sid in enumerate(index.ids.tolist()):  # samples with the index's ids, members of the pool
            session.add(Sample(id=sid, dataset_id=ds.id, position=pos, key=f"k{pos}", content_hash=f"{sid:064d}",
                               record={}, messages=[], image_refs=[], image_names=[]))
        session.flush()
        for sid in index.ids.tolist():
            session.add(PoolMember(pool_id=row.pool_id, sample_id=sid, joined_round=1,
                                   status="pruned" if sid in gone else "active", pruned_round=1 if sid in gone else None))
    blobs.delete(index.sha256)
    out = rebuild(database_url, blobs, tmp_path, index.version_id)
    assert out["rebuilt"] and out["ntotal"] == 37 and out["sha256"] == index.sha256


def _unavailable(*_args):
    from core.blobs import BlobStoreUnavailable

    raise BlobStoreUnavailable("the blob store at s3://b/x cannot be reached; check ADAPTINF_BLOB_STORE")


def _disk_full(*_args):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fault", [_unavailable, _disk_full])
def test_a_transient_failure_reading_a_shard_is_not_source_damage(database_url, stored, tmp_path, monkeypatch, fault):
    """An unreachable store or a full disk says nothing about the shards: wrapped as damage, the
    version answered index_unrecoverable until the next round."""
    _, blobs, index = stored
    blobs.delete(index.sha256)
    monkeypatch.setattr(blobs, "materialize", fault)
    with pytest.raises(OSError) as exc:
        rebuild(database_url, blobs, tmp_path, index.version_id)
    assert not isinstance(exc.value, IndexSourceDamaged) and exc.value.__cause__ is None


@pytest.mark.parametrize("fault, status, code", [(_unavailable, "queued", None), (_disk_full, "failed", "disk_full")])
def test_after_a_transient_failure_the_next_request_queues_a_rebuild(database_url, stored, tmp_path, monkeypatch,
                                                                    fault, status, code):
    """The job retries (store unreachable) or fails as disk_full, never as index_source_damaged, so
    the API's next request joins or queues a rebuild instead of answering index_unrecoverable."""
    from core.blobs import BlobStoreUnavailable, LocalBlobStore
    from service.config import get_settings
    from service.pool_index import is_unrecoverable, last_rebuild, request_rebuild
    from workers.tasks.index import rebuild_index

    owner, blobs, index = stored
    monkeypatch.setenv("ADAPTINF_DATABASE_URL", database_url)
    monkeypatch.setenv("ADAPTINF_DATA_DIR", str(tmp_path))  # its blob store is tmp_path/blobs, as above
    get_settings.cache_clear()
    try:
        blobs.delete(index.sha256)
        with session_scope(database_url) as session:
            version = session.get(IndexVersion, index.version_id)
            job, created = request_rebuild(session, version, owner)
            job_id = job.id
        monkeypatch.setattr(LocalBlobStore, "materialize", lambda self, sha: fault())
        if fault is _unavailable:
            with pytest.raises(BlobStoreUnavailable):  # celery's retry, called directly, re-raises
                rebuild_index(job_id)
        else:
            assert rebuild_index(job_id)["status"] == "failed"
        with session_scope(database_url) as session:
            version = session.get(IndexVersion, index.version_id)
            job = last_rebuild(session, version)
            assert job.id == job_id and job.status == status and (job.error or {}).get("code") == code
            assert not is_unrecoverable(job)
            again, created = request_rebuild(session, version, owner)
            # a queued job is joined; a failed one is followed by a new rebuild
            assert (again.id == job_id) == (status == "queued") and created == (status == "failed")
    finally:
        get_settings.cache_clear()
