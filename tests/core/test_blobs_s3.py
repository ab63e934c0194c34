"""What only the S3 store (core/blobs/s3.py) does, against a real S3 endpoint (moto's server, a
bucket per test): the key layout, the local cache behind `materialize`, seekable ranged reads,
multipart uploads and copies, and errors that name the setting to fix. The behaviour both
stores share is in test_blobs_contract.py."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from core.blobs import BlobNotFound
from core.blobs.base import BlobCorrupt, BlobStoreUnavailable
from core.blobs.location import S3Location
from core.blobs.s3 import S3BlobStore
from core.blobs.s3_io import unavailable


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def aws_env(s3_endpoint, monkeypatch):
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


@pytest.fixture
def bucket(aws_env):
    return aws_env.new_bucket()


def _store(endpoint, bucket, cache, **kw) -> S3BlobStore:
    return S3BlobStore(f"s3://{bucket}/blobs", endpoint_url=endpoint.url, cache_dir=cache, **kw)


@pytest.fixture
def store(aws_env, bucket, tmp_path) -> S3BlobStore:
    return _store(aws_env, bucket, tmp_path / "cache")


def test_blobs_are_objects_under_prefix_ab_cd_sha(store, aws_env, bucket):
    ref = store.put_bytes(b"layout")
    client = aws_env.client()
    head = client.head_object(Bucket=bucket, Key=f"blobs/{ref.sha256[:2]}/{ref.sha256[2:4]}/{ref.sha256}")
    assert head["ContentLength"] == 6 and head["Metadata"] == {"sha256": ref.sha256}
    # Objects that are not blobs, or lie outside the prefix, are not listed (gc never sees them).
    other = _sha(b"elsewhere")
    for key in ("blobs/README", f"blobs/ab/cd/{other}", f"elsewhere/{other[:2]}/{other[2:4]}/{other}"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert [b.sha256 for b in store.list_blobs()] == [ref.sha256]
    assert store.location == f"s3://{bucket}/blobs"


def test_list_blobs_pages_through_more_than_one_listing(store, aws_env, bucket, monkeypatch):
    refs = {store.put_bytes(str(i).encode()).sha256 for i in range(7)}
    pages = []
    real = store._s3.get_paginator

    def small_pages(name):
        paginator = real(name)
        paginate = paginator.paginate
        paginator.paginate = lambda **kw: pages.append(1) or paginate(**kw, PaginationConfig={"PageSize": 2})
        return paginator

    monkeypatch.setattr(store._s3, "get_paginator", small_pages)
    assert {b.sha256 for b in store.list_blobs()} == refs and pages


def test_materialize_downloads_once_then_serves_the_cache(store, aws_env, bucket, tmp_path):
    data = os.urandom(5000)
    ref = store.put_bytes(data)
    other = _store(aws_env, bucket, tmp_path / "other-machine")  # an empty cache: must download
    path = other.materialize(ref.sha256)
    assert path.read_bytes() == data and path.is_relative_to(tmp_path / "other-machine")
    aws_env.client().delete_object(Bucket=bucket, Key=f"blobs/{ref.sha256[:2]}/{ref.sha256[2:4]}/{ref.sha256}")
    assert other.materialize(ref.sha256) == path  # no request: the object is gone, the copy serves
    # A damaged cached copy is noticed and not handed out.
    path.chmod(0o644)
    path.write_bytes(b"bit rot")
    with pytest.raises(BlobNotFound):
        other.materialize(ref.sha256)
    assert not path.exists()


def test_materialize_refuses_an_object_that_no_longer_hashes_to_its_name(store, aws_env, bucket):
    ref = store.put_bytes(b"original")
    store.cache.discard(ref.sha256)
    aws_env.client().put_object(Bucket=bucket, Key=store.loc.key(ref.sha256), Body=b"tampered")
    with pytest.raises(BlobCorrupt, match="no longer hashes"):
        store.materialize(ref.sha256)
    assert store.cache.get(ref.sha256) is None  # nothing bad was cached


def test_the_cache_drops_least_recently_used_copies_past_its_bound(aws_env, bucket, tmp_path):
    store = _store(aws_env, bucket, tmp_path / "cache", cache_max_bytes=10_000, cache_keep_s=0)
    refs = [store.put_bytes(os.urandom(4000)) for _ in range(5)]
    for ref in refs:
        store.cache.discard(ref.sha256)
    for ref in refs:
        store.materialize(ref.sha256)
        time.sleep(0.01)  # distinct mtimes: the order of use
    kept = [r.sha256 for r in refs if store.cache.path(r.sha256).exists()]
    assert kept == [r.sha256 for r in refs[-2:]]  # 9,000 bytes at most: 90% of the bound
    # Copies used within keep_s are never dropped: the bound is soft.
    soft = _store(aws_env, bucket, tmp_path / "soft", cache_max_bytes=10_000, cache_keep_s=3600)
    for ref in refs:
        soft.materialize(ref.sha256)
    assert all(soft.cache.path(r.sha256).exists() for r in refs)
    # A bound smaller than one blob still hands out the copy it just made.
    tiny = _store(aws_env, bucket, tmp_path / "tiny", cache_max_bytes=1000, cache_keep_s=0)
    for ref in refs:
        assert tiny.materialize(ref.sha256).stat().st_size == 4000


def test_open_is_seekable_over_ranged_reads(store):
    data = os.urandom(3 * 2**20 + 123)
    ref = store.put_bytes(data)
    with store.open(ref.sha256) as f:
        assert f.read(10) == data[:10]
        f.seek(2**20 + 5)
        assert f.read(100) == data[2**20 + 5 : 2**20 + 105]
        f.seek(-50, io.SEEK_END)
        assert f.read() == data[-50:]
        f.seek(3)
        assert f.read(4) == data[3:7] and f.tell() == 7
    empty = store.put_bytes(b"")
    with store.open(empty.sha256) as f:
        assert f.read() == b""


def test_tarfile_reads_a_gzipped_archive_straight_from_the_bucket(store, tmp_path):
    # tarfile seeks back to the members it listed: the reason open() must seek
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("a.bin", "b.bin"):
            payload = os.urandom(300_000)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            (tmp_path / name).write_bytes(payload)
    ref = store.put_bytes(buf.getvalue())
    with store.open(ref.sha256) as f, tarfile.open(fileobj=f, mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a.bin", "b.bin"]
        for m in members:
            assert tar.extractfile(m).read() == (tmp_path / m.name).read_bytes()


def test_an_object_replaced_during_a_read_fails_the_read(store, aws_env, bucket):
    data = os.urandom(2 * 2**20)
    ref = store.put_bytes(data)
    with store.open(ref.sha256) as f:
        assert f.read(100) == data[:100]
        f.seek(2**20 + 7)  # the next read is a new ranged GET
        aws_env.client().put_object(Bucket=bucket, Key=store.loc.key(ref.sha256), Body=b"other bytes")
        with pytest.raises(OSError, match="replaced while being read"):
            f.read(10)


def test_large_files_go_up_in_parts_and_are_touched_by_a_copy_in_parts(store, tmp_path, monkeypatch):
    data = os.urandom(9 * 2**20)  # above upload_file's 8 MiB multipart threshold
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    ref = store.put_file(src, move=True)
    assert not src.exists() and store.verify(ref.sha256)
    assert "-" in store._head(ref.sha256)["ETag"]  # a multipart ETag: <md5 of part md5s>-<parts>
    before = store.stat(ref.sha256).mtime
    monkeypatch.setattr("core.blobs.s3.MAX_COPY_BYTES", 2**20)  # the > 5 GiB path, on 9 MiB
    time.sleep(1.1)
    store.touch(ref.sha256)
    assert store.stat(ref.sha256).mtime > before and store.verify(ref.sha256)


def test_sweep_also_removes_stale_cache_temp_files(store):
    fd, tmp = store.cache.new_tmp("get.")
    os.close(fd)
    os.utime(tmp, (time.time() - 7200,) * 2)
    assert store.sweep_tmp(time.time() - 3600, delete=True) == [str(tmp)] and not tmp.exists()


def test_a_missing_bucket_is_named_with_its_setting(aws_env, tmp_path):
    store = S3BlobStore("s3://no-such-bucket-here/x", endpoint_url=aws_env.url, cache_dir=tmp_path / "c")
    calls = [store.check, lambda: store.exists(_sha(b"a")), lambda: store.put_bytes(b"a"),
             lambda: list(store.list_blobs()), lambda: store.open(_sha(b"a")), lambda: store.verify(_sha(b"a"))]
    for call in calls:
        with pytest.raises(BlobStoreUnavailable, match=r"does not exist.*ADAPTINF_BLOB_STORE") as err:
            call()
        assert isinstance(err.value, ConnectionError) and err.value.code == "blob_store_unavailable"


def test_an_endpoint_that_is_down_is_named_with_its_setting(aws_env, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3BlobStore("s3://some-bucket/x", endpoint_url=f"http://127.0.0.1:{port}", cache_dir=tmp_path / "c")
    t0 = time.monotonic()
    with pytest.raises(BlobStoreUnavailable, match=rf"cannot reach the S3 endpoint http://127.0.0.1:{port} "
                                                   r"\(ADAPTINF_S3_ENDPOINT_URL\)"):
        store.put_bytes(b"nowhere")
    assert time.monotonic() - t0 < 15  # three tries, then a clear error: not a hang


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"])
def test_refused_credentials_are_named(code):
    # moto accepts any key, so S3's refusal is built as botocore would raise it
    exc = ClientError({"Error": {"Code": code, "Message": "refused"}}, "PutObject")
    wrapped = RuntimeError("upload failed")
    wrapped.__context__ = exc  # boto3's managed upload raises its own error while handling this one
    for raised in (exc, wrapped):
        err = unavailable(raised, S3Location.parse("s3://b-1/p"), "http://minio:9000")
        assert err is not None and "AWS_ACCESS_KEY_ID" in str(err) and "s3://b-1/p (ADAPTINF_BLOB_STORE)" in str(err)
    err = unavailable(NoCredentialsError(), S3Location.parse("s3://b-1"), "")
    assert "no S3 credentials" in str(err) and "AWS_SECRET_ACCESS_KEY" in str(err)
    missing_key = ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
    assert unavailable(missing_key, S3Location.parse("s3://b-1"), "") is None  # the caller's to handle


@pytest.mark.parametrize("url, message", [
    ("s3://Upper/x", "not a valid S3 bucket name"),
    ("s3://ab", "not a valid S3 bucket name"),
    ("gs://bucket/x", "must be empty .* or s3://bucket"),
    ("s3://bucket/x?versionId=1", "no query"),
    ("s3://bucket/a/../b", "'..' segments"),
])
def test_bad_store_urls_are_refused_naming_the_setting(url, message):
    with pytest.raises(ValueError, match=f"ADAPTINF_BLOB_STORE.*{message}|{message}"):
        S3Location.parse(url)
    assert S3Location.parse("s3://my.bucket-1//a//b/").key("ab" * 32) == f"a/b/ab/ab/{'ab' * 32}"


def _uploads(client, bucket) -> list[str]:
    return sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_sweep_aborts_only_uploads_of_blob_keys_in_a_bucket_without_prefix(aws_env, bucket, tmp_path):
    """A store at the bucket's root shares the bucket with other applications: their multipart
    uploads are not ours to abort, however old."""
    store = S3BlobStore(f"s3://{bucket}", endpoint_url=aws_env.url, cache_dir=tmp_path / "c")
    client = aws_env.client()
    sha = _sha(b"crashed")
    ours = f"{sha[:2]}/{sha[2:4]}/{sha}"
    theirs = ["backups/db.tar", f"ab/cd/{sha}", f"media/{sha[:2]}/{sha[2:4]}/{sha}", "README"]
    for key in [ours, *theirs]:
        client.create_multipart_upload(Bucket=bucket, Key=key)  # moto dates them in 2010: all stale
    stale = store.sweep_tmp(time.time() - 3600, delete=True)
    assert len(stale) == 1 and ours in stale[0]
    assert _uploads(client, bucket) == sorted(theirs)


def test_sweep_never_aborts_an_upload_younger_than_the_floor(store, aws_env, bucket, monkeypatch):
    """`adaptinf gc --grace-hours 0` must not abort an upload in flight."""
    import types

    from core.blobs import s3 as s3_mod

    client = aws_env.client()
    key = store.loc.key(_sha(b"in flight"))
    client.create_multipart_upload(Bucket=bucket, Key=key)
    started = client.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["Initiated"].timestamp()
    now = started + 600  # the upload began ten minutes ago
    monkeypatch.setattr(s3_mod, "time", types.SimpleNamespace(time=lambda: now))
    assert store.sweep_tmp(now, delete=True) == [] and _uploads(client, bucket) == [key]  # grace 0
    now = started + s3_mod.MIN_UPLOAD_AGE_S + 60  # past the floor: a crashed writer's upload
    assert len(store.sweep_tmp(now, delete=True)) == 1 and _uploads(client, bucket) == []
