"""The pool index: ids are SQL ids, crash-safe versions, checksum-verified loads and rebuilds."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import workers.engine.index as index_mod
from workers.engine.index import (
    FaissPoolIndex, IndexBusyError, load_index, version_path, write_index_version, writer_lock,
)

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


def test_flat_version_searches_by_sql_id(tmp_path):
    ids, x = pool(500)
    v = write_index_version(tmp_path, 3, ids, x)
    assert v.kind == "flat" and v.ntotal == 500 and v.path == version_path(tmp_path, 3)
    assert v.size_bytes == v.path.stat().st_size and len(v.sha256) == 64
    idx = FaissPoolIndex.open(v, never_rebuild)
    queries = x[:40].astype(np.float32) + 0.01 * np.random.default_rng(1).normal(size=(40, D))
    sims, found = idx.search(queries, 5)
    np.testing.assert_array_equal(found[:, 0], ids[brute_top1(x, queries)])
    assert sims.dtype == np.float32 and np.all(sims[:, 0] <= 1.001) and np.all(np.diff(sims, axis=1) <= 1e-6)


def test_ivf_past_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "FLAT_MAX_ROWS", 1000)
    ids, x = pool(4000)
    v = write_index_version(tmp_path, 1, ids, x)
    assert v.kind == "ivf" and v.ntotal == 4000
    idx = FaissPoolIndex.open(v, never_rebuild)
    _, found = idx.search(x[:200], 1)
    assert (found[:, 0] == ids[:200]).mean() >= 0.95  # a vector finds itself through IVF probing


def test_crash_in_the_middle_of_a_write_keeps_the_old_version(tmp_path):
    ids, x = pool(300)
    old = write_index_version(tmp_path, 1, ids, x)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "x.npy", x)
    # A writer process that dies (no cleanup, no exception handling) halfway through writing
    # round 2 over round 1's file name: the rename never happens.
    child = textwrap.dedent(f"""
        import os, faiss, numpy as np
        import workers.engine.index as m
        real = faiss.write_index
        def dying_write(index, path):
            real(index, path)
            data = open(path, "rb").read()
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
            os._exit(9)
        faiss.write_index = dying_write
        d = {str(tmp_path)!r}
        m.write_index_version(d, 1, np.load(d + "/ids.npy")[:100], np.load(d + "/x.npy")[:100])
    """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=Path(__file__).parents[3])
    assert proc.returncode == 9
    assert list(tmp_path.glob(".*.tmp-*")), "the crashed writer should leave its temp file"
    idx = FaissPoolIndex.open(old, never_rebuild)  # old version intact: checksum matches
    assert idx.ntotal == 300
    write_index_version(tmp_path, 2, ids, x)  # the next writer clears the leftovers
    assert not list(tmp_path.glob(".*.tmp-*"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_or_missing_file_is_rebuilt(tmp_path, damage):
    ids, x = pool(400)
    v = write_index_version(tmp_path, 5, ids, x)
    if damage == "flip":
        data = bytearray(v.path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        v.path.write_bytes(bytes(data))
    elif damage == "truncate":
        v.path.write_bytes(v.path.read_bytes()[:-10])
    else:
        v.path.unlink()
    calls, rebuilt = [], []

    def rebuild():
        calls.append(1)
        return ids, x

    index = load_index(v, rebuild, rebuilt.append)
    assert calls == [1] and index.ntotal == 400
    assert rebuilt[0].path == v.path and rebuilt[0].sha256 == index_mod.file_sha256(v.path)
    # the rewrite is deterministic: same rows give the same bytes
    assert rebuilt[0].sha256 == v.sha256
    _, found = index.search(x[:10].astype(np.float32), 1)
    np.testing.assert_array_equal(found[:, 0], ids[:10])
    load_index(rebuilt[0], never_rebuild)


def test_rebuild_with_wrong_rows_is_refused(tmp_path):
    ids, x = pool(100)
    v = write_index_version(tmp_path, 1, ids, x)
    v.path.unlink()
    with pytest.raises(ValueError, match="rows"):
        load_index(v, lambda: (ids[:50], x[:50]))


def test_single_writer(tmp_path):
    ids, x = pool(50)
    with writer_lock(tmp_path):
        with pytest.raises(IndexBusyError):
            write_index_version(tmp_path, 1, ids, x, lock_timeout_s=0.2)
    assert write_index_version(tmp_path, 1, ids, x).ntotal == 50
