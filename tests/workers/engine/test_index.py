"""The pool index: ids are SQL ids, versions are blobs, checksum-verified loads and rebuilds."""
import os

import numpy as np
import pytest

import workers.engine.index as index_mod
from core.blobs import LocalBlobStore
from core.files import file_sha256
from workers.engine.index import FaissPoolIndex, IndexRowsMismatch, load_index, store_index_version

D = 24


def pool(n, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    return ids, rng.normal(size=(n, D)).astype(np.float16)


def brute_top1(features, queries):
    f = features.astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    q = queries.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return (q @ f.T).argmax(axis=1)


def never_rebuild():
    raise AssertionError("rebuild must not be called for an intact index")


@pytest.fixture
def blobs(tmp_path):
    return LocalBlobStore(tmp_path / "blobs")


def test_flat_version_searches_by_sql_id(tmp_path, blobs):
    ids, x = pool(500)
    v = store_index_version(blobs, tmp_path / "work", 3, ids, x)
    assert (v.kind, v.ntotal, v.round_no, v.dim) == ("flat", 500, 3, D)
    assert v.size_bytes == blobs.size(v.sha256) and blobs.verify(v.sha256)
    assert not list((tmp_path / "work").iterdir())  # the store took the file
    idx = FaissPoolIndex.open(blobs, v, never_rebuild, workdir=tmp_path / "work")
    queries = x[:40].astype(np.float32) + 0.01 * np.random.default_rng(1).normal(size=(40, D))
    sims, found = idx.search(queries, 5)
    np.testing.assert_array_equal(found[:, 0], ids[brute_top1(x, queries)])
    assert sims.dtype == np.float32 and np.all(sims[:, 0] <= 1.001) and np.all(np.diff(sims, axis=1) <= 1e-6)


def test_ivf_past_the_threshold(tmp_path, blobs, monkeypatch):
    monkeypatch.setattr(index_mod, "FLAT_MAX_ROWS", 1000)
    ids, x = pool(4000)
    v = store_index_version(blobs, tmp_path, 1, ids, x)
    assert v.kind == "ivf" and v.ntotal == 4000
    idx = FaissPoolIndex.open(blobs, v, never_rebuild, workdir=tmp_path)
    _, found = idx.search(x[:200], 1)
    assert (found[:, 0] == ids[:200]).mean() >= 0.95  # a vector finds itself through IVF probing


def _damage(blobs, sha, how):
    path = blobs.materialize(sha)
    os.chmod(path, 0o644)  # blobs are stored read-only
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    else:
        blobs.delete(sha)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_or_missing_blob_is_rebuilt(tmp_path, blobs, damage):
    ids, x = pool(400)
    v = store_index_version(blobs, tmp_path, 5, ids, x, seed=2)
    _damage(blobs, v.sha256, damage)
    calls, rebuilt = [], []

    def rebuild():
        calls.append(1)
        return ids, x

    index = load_index(blobs, v, rebuild, rebuilt.append, workdir=tmp_path, seed=2)
    assert calls == [1] and index.ntotal == 400
    # the rewrite is deterministic: the same rows give the same bytes, put back under the same name
    assert rebuilt[0].sha256 == v.sha256 and blobs.verify(v.sha256)
    assert file_sha256(blobs.materialize(v.sha256)) == v.sha256
    _, found = index.search(x[:10].astype(np.float32), 1)
    np.testing.assert_array_equal(found[:, 0], ids[:10])
    load_index(blobs, rebuilt[0], never_rebuild, workdir=tmp_path)


def test_rebuild_with_wrong_rows_is_refused(tmp_path, blobs):
    ids, x = pool(100)
    v = store_index_version(blobs, tmp_path, 1, ids, x)
    blobs.delete(v.sha256)
    with pytest.raises(IndexRowsMismatch, match="rows"):
        load_index(blobs, v, lambda: (ids[:50], x[:50]), workdir=tmp_path)
