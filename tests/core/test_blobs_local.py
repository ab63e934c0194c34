"""The local blob store (core/blobs/local.py): content addressing, atomic writes, repair by re-put."""
from __future__ import annotations

import hashlib
import os

import pytest

from core.files import atomic_write
from core.blobs import BlobNotFound, LocalBlobStore


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    return LocalBlobStore(tmp_path / "blobs")


def _stray_files(root) -> list[str]:
    return [p.name for p in root.rglob("*") if p.is_file() and ".tmp" in p.name]


def test_put_bytes_is_content_addressed_and_sharded(store):
    data = b"hello blobs"
    ref = store.put_bytes(data)
    assert ref.sha256 == _sha(data) and ref.size == len(data)
    path = store.path(ref.sha256)
    assert path.relative_to(store.root).parts == (ref.sha256[:2], ref.sha256[2:4], ref.sha256)
    assert path.read_bytes() == data
    assert store.exists(ref.sha256) and store.verify(ref.sha256)
    with store.open(ref.sha256) as f:
        assert f.read() == data
    # Same content, same blob: storing again is a no-op.
    assert store.put_bytes(data) == ref


def test_put_file_copy_and_move(store, tmp_path):
    src = tmp_path / "upload.bin"
    src.write_bytes(b"abc" * 100)
    ref = store.put_file(src)
    assert src.exists() and store.verify(ref.sha256)
    src2 = tmp_path / "upload2.bin"
    src2.write_bytes(b"xyz" * 100)
    ref2 = store.put_file(src2, move=True)
    assert not src2.exists()
    assert store.path(ref2.sha256).read_bytes() == b"xyz" * 100
    # Moving a file whose content is already stored just drops the source.
    src3 = tmp_path / "dup.bin"
    src3.write_bytes(b"xyz" * 100)
    assert store.put_file(src3, move=True) == ref2
    assert not src3.exists()
    assert _stray_files(store.root) == []


def test_atomic_write_failure_keeps_old_content(tmp_path):
    target = tmp_path / "sub" / "file.json"
    atomic_write(target, b"old")

    def writer(f):
        f.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, writer)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"


def test_verify_catches_a_corrupted_blob(store):
    ref = store.put_bytes(b"precious bytes")
    path = store.path(ref.sha256)
    path.chmod(0o644)
    path.write_bytes(b"precious bytez")
    assert store.exists(ref.sha256)
    assert not store.verify(ref.sha256)
    assert not store.verify(_sha(b"never stored"))


def test_bad_names_and_missing_blobs(store):
    with pytest.raises(ValueError, match="not a sha256"):
        store.path("../../etc/passwd")
    with pytest.raises(BlobNotFound):
        store.open(_sha(b"missing"))
    ref = store.put_bytes(b"to delete")
    store.delete(ref.sha256)
    assert not store.exists(ref.sha256)
    out = store.copy_to(store.put_bytes(b"copy me").sha256, store.root.parent / "out.bin")
    assert out.read_bytes() == b"copy me"


def _corrupt(path, data: bytes) -> None:
    path.chmod(0o644)  # blobs are stored read-only
    with open(path, "r+b") as f:
        f.write(data)


def test_a_truncated_or_deleted_blob_is_rewritten_too(store):
    data = b"x" * 5000
    ref = store.put_bytes(data)
    path = store.path(ref.sha256)
    path.chmod(0o644)
    path.write_bytes(data[:10])
    assert store.put_bytes(data) == ref and path.read_bytes() == data
    path.unlink()
    assert store.put_bytes(data) == ref and path.read_bytes() == data


def test_reusing_a_blob_hashes_it_once_and_refreshes_it_only_when_old(store, monkeypatch):
    """A new mtime is a new version to the verified memo: touching a blob on every reuse re-hashed
    it on the next one. A young blob is left as it is; an hour-old one is refreshed (gc's grace)."""
    import time

    from core import verified

    data = os.urandom(4096)
    sha = store.put_bytes(data).sha256
    path = store.path(sha)
    young = time.time() - 120  # past the memo's racy window, well inside REUSE_REFRESH_S
    os.utime(path, (young, young))
    hashes = []
    real = verified.file_sha256
    monkeypatch.setattr(verified, "file_sha256", lambda p: hashes.append(p) or real(p))
    for _ in range(5):
        assert store.put_bytes(data).sha256 == sha
    assert len(hashes) == 1 and path.stat().st_mtime == young
    os.utime(path, (time.time() - 7200,) * 2)  # an hour old: the reuse keeps it inside gc's grace
    assert store.put_bytes(data).sha256 == sha and path.stat().st_mtime > time.time() - 60
