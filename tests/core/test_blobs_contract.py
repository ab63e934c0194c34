"""The BlobStore contract, run against both implementations: the local store (core/blobs/local.py)
and the S3 store (core/blobs/s3.py) on a real S3 endpoint (moto's server, a bucket per test).

Each implementation has a harness that does behind the store's back what a disk fault, a rogue
writer or a crashed upload would: corrupt a blob, delete it, leave a stale temp behind.
"""
from __future__ import annotations

import hashlib
import io
import os
import time

import pytest

from core.blobs import BlobNotFound, BlobStore, LocalBlobStore


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalHarness:

    def __init__(self, tmp_path):
        self.store = LocalBlobStore(tmp_path / "blobs")

    def corrupt(self, sha: str, data: bytes) -> None:
        path = self.store.path(sha)
        path.chmod(0o644)  # blobs are stored read-only
        path.write_bytes(data)

    def remove_behind(self, sha: str) -> None:
        self.store.path(sha).unlink()

    def age(self, sha: str, seconds: float) -> None:
        os.utime(self.store.path(sha), (time.time() - seconds,) * 2)

    def leave_stale_temp(self) -> None:
        tmp = self.store.root / "tmp" / "put.crashed.tmp"
        tmp.write_bytes(b"half")
        os.utime(tmp, (time.time() - 7200,) * 2)

    def strays(self) -> list[str]:
        return [p.name for p in self.store.root.rglob("*") if p.is_file() and ".tmp" in p.name]


class S3Harness:

    def __init__(self, tmp_path, endpoint):
        from core.blobs.s3 import S3BlobStore

        self.client, self.bucket = endpoint.client(), endpoint.new_bucket()
        self.store = S3BlobStore(f"s3://{self.bucket}/blobs", endpoint_url=endpoint.url, cache_dir=tmp_path / "cache")

    def key(self, sha: str) -> str:
        return f"blobs/{sha[:2]}/{sha[2:4]}/{sha}"

    def corrupt(self, sha: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(sha), Body=data)

    def remove_behind(self, sha: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha))

    def age(self, sha: str, seconds: float) -> None:
        pass  # S3 has no utime; its reuse refreshes LastModified whatever its age

    def leave_stale_temp(self) -> None:
        # moto dates every multipart upload in 2010: stale against any cutoff since.
        self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key(_sha(b"crashed")))

    def strays(self) -> list[str]:
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return [u["Key"] for u in uploads] + [p.name for p in self.store.cache.tmp_dir.iterdir()]


@pytest.fixture(params=["local", "s3"])
def harness(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalHarness(tmp_path)
    endpoint = request.getfixturevalue("s3_endpoint")
    for name, value in endpoint.env().items():
        monkeypatch.setenv(name, value)
    return S3Harness(tmp_path, endpoint)


@pytest.fixture
def store(harness) -> BlobStore:
    return harness.store


def test_put_bytes_is_content_addressed(store):
    data = b"hello blobs"
    ref = store.put_bytes(data)
    assert ref.sha256 == _sha(data) and ref.size == len(data)
    assert store.exists(ref.sha256) and store.verify(ref.sha256)
    assert store.size(ref.sha256) == len(data)
    info = store.stat(ref.sha256)
    assert (info.sha256, info.size) == (ref.sha256, len(data)) and abs(info.mtime - time.time()) < 60
    with store.open(ref.sha256) as f:
        assert f.read() == data
    assert store.put_bytes(data) == ref  # same content, same blob


def test_put_stream_hashes_while_copying_in_chunks(harness, monkeypatch):
    monkeypatch.setattr("core.files.CHUNK_SIZE", 7)  # force many chunks (both stores copy through it)
    data = os.urandom(1000)
    ref = harness.store.put_stream(io.BytesIO(data))
    assert ref.sha256 == _sha(data) and ref.size == 1000
    with harness.store.open(ref.sha256) as f:
        assert f.read() == data
    assert harness.strays() == []


def test_put_file_copy_and_move(harness, tmp_path):
    store = harness.store
    src = tmp_path / "upload.bin"
    src.write_bytes(b"abc" * 100)
    ref = store.put_file(src)
    assert src.read_bytes() == b"abc" * 100 and store.verify(ref.sha256)
    src2 = tmp_path / "upload2.bin"
    src2.write_bytes(b"xyz" * 100)
    ref2 = store.put_file(src2, move=True)
    assert not src2.exists()
    assert store.materialize(ref2.sha256).read_bytes() == b"xyz" * 100
    src3 = tmp_path / "dup.bin"  # a file whose content is already stored: the source just goes
    src3.write_bytes(b"xyz" * 100)
    assert store.put_file(src3, move=True) == ref2
    assert not src3.exists()
    assert harness.strays() == []


def test_a_failed_stream_leaves_nothing(harness):
    class Broken(io.RawIOBase):
        def __init__(self):
            self.calls = 0

        def readable(self):
            return True

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection reset")
            return b"x" * 10

    with pytest.raises(OSError, match="connection reset"):
        harness.store.put_stream(Broken())
    assert list(harness.store.list_blobs()) == [] and harness.strays() == []


def test_verify_catches_a_corrupted_blob(harness):
    store = harness.store
    ref = store.put_bytes(b"precious bytes")
    assert store.verify(ref.sha256)
    harness.corrupt(ref.sha256, b"precious bytez")
    assert store.exists(ref.sha256)
    assert not store.verify(ref.sha256)
    assert not store.verify(_sha(b"never stored"))


def test_bad_names_and_missing_blobs(store, tmp_path):
    with pytest.raises(ValueError, match="not a sha256"):
        store.exists("../../etc/passwd")
    missing = _sha(b"missing")
    for call in (store.open, store.size, store.stat, store.materialize, store.touch):
        with pytest.raises(BlobNotFound):
            call(missing)
    assert not store.exists(missing)
    ref = store.put_bytes(b"to delete")
    store.delete(ref.sha256)
    assert not store.exists(ref.sha256)
    store.delete(ref.sha256)  # deleting twice is no error
    out = store.copy_to(store.put_bytes(b"copy me").sha256, tmp_path / "out.bin")
    assert out.read_bytes() == b"copy me"


@pytest.mark.parametrize("how", ["bytes", "stream", "file", "move"])
def test_putting_the_same_content_again_repairs_a_corrupt_blob(harness, tmp_path, how):
    store = harness.store
    data = os.urandom(4096)
    ref = store.put_bytes(data)
    assert store.verify(ref.sha256)  # known intact: a put now would reuse it, until it changes
    harness.corrupt(ref.sha256, b"\0" * 16 + data[16:])
    assert not store.verify(ref.sha256)
    src = tmp_path / "again.bin"
    src.write_bytes(data)
    put = {"bytes": lambda: store.put_bytes(data), "stream": lambda: store.put_stream(io.BytesIO(data)),
           "file": lambda: store.put_file(src), "move": lambda: store.put_file(src, move=True)}[how]
    assert put() == ref
    assert store.verify(ref.sha256)
    with store.open(ref.sha256) as f:
        assert f.read() == data
    assert harness.strays() == []


def test_a_truncated_or_deleted_blob_is_rewritten(harness):
    store, data = harness.store, b"x" * 5000
    ref = store.put_bytes(data)
    harness.corrupt(ref.sha256, data[:10])
    assert store.put_bytes(data) == ref and store.verify(ref.sha256)
    harness.remove_behind(ref.sha256)
    assert not store.exists(ref.sha256)
    assert store.put_bytes(data) == ref and store.verify(ref.sha256)


def test_materialize_gives_a_read_only_local_copy(store):
    data = os.urandom(3000)
    ref = store.put_bytes(data)
    path = store.materialize(ref.sha256)
    assert path.read_bytes() == data
    assert path.stat().st_mode & 0o222 == 0  # never written through
    assert store.materialize(ref.sha256) == path


def test_list_blobs_names_every_blob_with_its_size(store):
    datas = [b"one", b"two" * 10, os.urandom(2000)]
    refs = [store.put_bytes(d) for d in datas]
    assert {(b.sha256, b.size) for b in store.list_blobs()} == {(r.sha256, r.size) for r in refs}
    store.delete(refs[0].sha256)
    assert {b.sha256 for b in store.list_blobs()} == {r.sha256 for r in refs[1:]}


def test_touch_and_reuse_refresh_the_mtime_gc_counts_from(harness):
    store = harness.store
    a, b = store.put_bytes(b"touched"), store.put_bytes(b"reused")
    harness.age(b.sha256, 7200)  # the local store refreshes a reused blob only once it is an hour old
    assert store.verify(a.sha256) and store.verify(b.sha256)
    before = {s: store.stat(s).mtime for s in (a.sha256, b.sha256)}
    time.sleep(1.1)  # S3's LastModified counts whole seconds
    store.touch(a.sha256)
    assert store.put_bytes(b"reused") == b
    for sha in (a.sha256, b.sha256):
        assert store.stat(sha).mtime > before[sha]
        assert store.verify(sha)
    with store.open(a.sha256) as f:
        assert f.read() == b"touched"


def test_sweep_tmp_reports_then_removes_stale_leftovers(harness):
    store = harness.store
    harness.leave_stale_temp()
    assert store.sweep_tmp(1e9, delete=True) == []  # nothing is older than 2001
    assert harness.strays()
    stale = store.sweep_tmp(time.time() - 3600, delete=False)
    assert len(stale) == 1 and harness.strays()
    assert store.sweep_tmp(time.time() - 3600, delete=True) == stale
    assert harness.strays() == [] and store.sweep_tmp(time.time(), delete=False) == []
