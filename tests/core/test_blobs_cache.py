"""The local copy cache of remote blobs (core/blobs/cache.py): hits that do not re-hash, and a trim
that spares a copy handed out after it listed the folder."""
from __future__ import annotations

import hashlib
import os
import time

import pytest

from core import verified
from core.blobs.cache import BlobCache


def _put(cache: BlobCache, data: bytes, age_s: float) -> str:
    sha = hashlib.sha256(data).hexdigest()
    fd, tmp = cache.new_tmp("test.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path = cache.install(tmp, sha)
    os.utime(path, (time.time() - age_s,) * 2)
    return sha


@pytest.fixture
def hashes(monkeypatch) -> list:
    seen: list = []
    real = verified.file_sha256
    monkeypatch.setattr(verified, "file_sha256", lambda p: seen.append(p) or real(p))
    return seen


def test_repeated_hits_hash_the_copy_once(tmp_path, hashes):
    """A hit used to refresh the mtime, a new version to the verified memo: every hit re-hashed."""
    cache = BlobCache(tmp_path, max_bytes=10**9, keep_s=24 * 3600)
    sha = _put(cache, os.urandom(8192), age_s=600)  # past the memo's racy window, under keep_s / 10
    mtime = cache.path(sha).stat().st_mtime
    for _ in range(5):
        assert cache.get(sha) == cache.path(sha)
    assert len(hashes) == 1 and cache.path(sha).stat().st_mtime == mtime


def test_a_hit_refreshes_a_copy_older_than_a_tenth_of_keep_s(tmp_path, hashes):
    cache = BlobCache(tmp_path, max_bytes=10**9, keep_s=3600)
    sha = _put(cache, os.urandom(1024), age_s=1800)  # unused for half of keep_s
    assert cache.get(sha) is not None and cache.path(sha).stat().st_mtime > time.time() - 60
    assert cache.get(sha) is not None and len(hashes) == 2  # refreshed: a new version, hashed again once


def test_trim_spares_a_copy_handed_out_after_the_listing(tmp_path, monkeypatch):
    cache = BlobCache(tmp_path, max_bytes=3000, keep_s=3600)
    old = [_put(cache, os.urandom(1000), age_s=7200 + i) for i in range(3)]
    real = cache._entries

    def listing_then_a_get():
        entries = real()
        os.utime(cache.path(old[2]))  # another process's get() refreshes the oldest copy now
        return entries

    monkeypatch.setattr(cache, "_entries", listing_then_a_get)
    cache.trim()
    assert cache.path(old[2]).is_file()  # in use: kept although the listing saw it stale
    assert sum(cache.path(s).is_file() for s in old) == 2  # the next oldest went instead
