"""The verified-hash memo: a file is hashed once per version, and any change is seen again."""
from __future__ import annotations

import hashlib
import os
import time

import pytest

from core import verified


@pytest.fixture
def counted(monkeypatch):
    """Counts the hashes core.verified computes."""
    calls = []
    real = verified.file_sha256

    def file_sha256(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(verified, "file_sha256", file_sha256)
    monkeypatch.setattr(verified, "_memo", type(verified._memo)())
    return calls


def _old(path, seconds=10):
    """Set the file's mtime `seconds` in the past (older than the racy window)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_a_verified_version_is_not_hashed_again(tmp_path, counted):
    path = tmp_path / "blob"
    path.write_bytes(b"content")
    _old(path)
    sha = hashlib.sha256(b"content").hexdigest()
    assert verified.sha256_matches(path, sha) and verified.sha256_matches(path, sha)
    assert len(counted) == 1
    assert not verified.sha256_matches(path, hashlib.sha256(b"other").hexdigest())
    assert len(counted) == 2  # a failed check is never remembered


def test_a_write_is_seen_even_in_the_same_second(tmp_path, counted):
    path = tmp_path / "blob"
    path.write_bytes(b"content")
    sha = hashlib.sha256(b"content").hexdigest()
    # fresh: inside the racy window, so it is hashed every time rather than trusted
    assert verified.sha256_matches(path, sha) and verified.sha256_matches(path, sha)
    assert len(counted) == 2
    _old(path)
    assert verified.sha256_matches(path, sha)
    with open(path, "r+b") as f:  # same size, new bytes, mtime now
        f.write(b"CONTENT")
    assert not verified.sha256_matches(path, sha)
    # a write that restores an old mtime is caught once the memo entry ages out
    path.write_bytes(b"content")
    _old(path, 20)
    assert verified.sha256_matches(path, sha)
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(b"X")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verified.sha256_matches(path, sha)  # the blind spot the docstring names
    entry = verified._memo[(str(path), sha)]
    verified._memo[(str(path), sha)] = (entry[0], entry[1] - verified.MAX_AGE_S)
    assert not verified.sha256_matches(path, sha)


def test_missing_file(tmp_path, counted):
    assert not verified.sha256_matches(tmp_path / "nope", "0" * 64)
    assert counted == []
