"""Checkpoints API: list (per pool, owner-scoped, paginated), read with evaluation results, and the
content download with Range (206 / 416), ETag / If-None-Match (304) and If-Range. SQLite and
PostgreSQL."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from tests.service.pool_rows import adapter_tar_gz, add_checkpoint, make_dataset, make_round


def _pool(client, caller, name="p"):
    body = {"name": name, "base_model": "tiny-llava", "model_type": "llava"}
    return client.post("/v1/pools", json=body, headers=caller.headers).json()["id"]


@pytest.fixture
def blobs(settings):
    return settings.blob_store()


@pytest.fixture
def ckpt(client, alice, database_url, blobs):
    pool_id = _pool(client, alice)
    ev, _ = make_dataset(database_url, alice.owner_id, 1)
    ids = make_round(database_url, pool_id, alice.owner_id, number=1, blobs=blobs,
                     evals=[(ev, "count", {"loss": 1.25, "accuracy": 0.5, "n": 8})])
    return {"id": ids["checkpoint_id"], "pool_id": pool_id, "round_id": ids["round_id"], "eval_ds": ev}


def test_read_and_list(client, alice, bob, ckpt, database_url, blobs):
    content = adapter_tar_gz()
    got = client.get(f"/v1/checkpoints/{ckpt['id']}", headers=alice.headers)
    assert got.status_code == 200, got.text
    c = got.json()
    assert (c["object"], c["pool_id"], c["round_id"], c["round_number"], c["kind"]) == (
        "checkpoint", ckpt["pool_id"], ckpt["round_id"], 1, "round")
    assert c["sha256"] == hashlib.sha256(content).hexdigest() and c["size_bytes"] == len(content)
    assert c["eval"] == [{"dataset_id": ckpt["eval_ds"], "skill": "count", "loss": 1.25, "accuracy": 0.5, "n": 8}]
    assert c["content_url"] == f"/v1/checkpoints/{ckpt['id']}/content"
    # a row written before metrics held {train, eval}: its training numbers under train (the last
    # step's loss as final_loss), eval pooled per skill from its evaluation results
    train = c["metrics"]["train"]
    assert (train["steps"], train["final_loss"], train["mean_loss"], train["loss_last"]) == (4, 1.5, 1.7, 1.5)
    assert "seconds" not in train and c["metrics"]["eval"] == {"count": {"accuracy": 0.5, "loss": 1.25, "n": 8}}

    warm = add_checkpoint(database_url, ckpt["pool_id"], blobs, round_id=ckpt["round_id"], kind="warmup")
    other_pool = _pool(client, alice, "other")
    other = add_checkpoint(database_url, other_pool, blobs)
    bobs = add_checkpoint(database_url, _pool(client, bob), blobs)

    everything = client.get("/v1/checkpoints", headers=alice.headers).json()
    assert [x["id"] for x in everything["data"]] == [ckpt["id"], warm, other]
    one_pool = client.get(f"/v1/checkpoints?pool_id={ckpt['pool_id']}", headers=alice.headers).json()
    assert [(x["id"], x["kind"]) for x in one_pool["data"]] == [(ckpt["id"], "round"), (warm, "warmup")]
    assert one_pool["data"][0] == c
    page = client.get(f"/v1/checkpoints?limit=1&after={ckpt['id']}", headers=alice.headers).json()
    assert [x["id"] for x in page["data"]] == [warm] and page["has_more"] is True

    for caller, path in ((alice, f"/v1/checkpoints/{bobs}"), (alice, f"/v1/checkpoints/{bobs}/content"),
                         (bob, f"/v1/checkpoints/{ckpt['id']}"), (bob, f"/v1/checkpoints?pool_id={other_pool}")):
        r = client.get(path, headers=caller.headers)
        assert r.status_code == 404 and r.json()["code"] == "not_found", path
    assert [x["id"] for x in client.get("/v1/checkpoints", headers=bob.headers).json()["data"]] == [bobs]


def test_content_is_the_adapter_tarball(client, alice, ckpt):
    r = client.get(f"/v1/checkpoints/{ckpt['id']}/content", headers=alice.headers)
    assert r.status_code == 200
    assert r.content == adapter_tar_gz()
    assert r.headers["content-type"] == "application/gzip" and r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
    assert r.headers["content-length"] == str(len(r.content))
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_head_answers_what_get_would_without_the_body(client, alice, bob, ckpt):
    url = f"/v1/checkpoints/{ckpt['id']}/content"
    full = adapter_tar_gz()
    got = client.get(url, headers=alice.headers)
    r = client.head(url, headers=alice.headers)
    assert r.status_code == 200 and r.content == b""
    for name in ("content-length", "etag", "content-type", "accept-ranges", "content-disposition"):
        assert r.headers[name] == got.headers[name], name
    assert r.headers["content-length"] == str(len(full))
    r = client.head(url, headers=alice.headers | {"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == b""
    assert (r.headers["content-range"], r.headers["content-length"]) == (f"bytes 10-19/{len(full)}", "10")
    assert client.head(url, headers=alice.headers | {"If-None-Match": got.headers["etag"]}).status_code == 304
    assert client.head(url, headers=bob.headers).status_code == 404


@pytest.mark.parametrize(
    ("header", "lo", "hi"),  # hi inclusive; negative = from the end
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, -1), ("bytes=-64", -64, -1), ("bytes=10-999999", 10, -1)],
)
def test_ranges(client, alice, ckpt, header, lo, hi):
    full = adapter_tar_gz()
    n = len(full)
    start, end = lo % n, hi % n
    r = client.get(f"/v1/checkpoints/{ckpt['id']}/content", headers=alice.headers | {"Range": header})
    assert r.status_code == 206, r.text
    assert r.content == full[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{n}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.headers["etag"] == f'"{hashlib.sha256(full).hexdigest()}"'


def test_unsatisfiable_range_and_conditional_requests(client, alice, ckpt):
    url = f"/v1/checkpoints/{ckpt['id']}/content"
    n = len(adapter_tar_gz())
    r = client.get(url, headers=alice.headers | {"Range": f"bytes={n}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{n}"
    assert r.json()["code"] == "range_not_satisfiable"

    etag = client.get(url, headers=alice.headers).headers["etag"]
    r = client.get(url, headers=alice.headers | {"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert client.get(url, headers=alice.headers | {"If-None-Match": '"stale"'}).status_code == 200

    # If-Range: a resume against the same content gets the range, against other content the whole file.
    assert client.get(url, headers=alice.headers | {"Range": "bytes=5-", "If-Range": etag}).status_code == 206
    r = client.get(url, headers=alice.headers | {"Range": "bytes=5-", "If-Range": '"old"'})
    assert r.status_code == 200 and len(r.content) == n


def _corrupt(path, data: bytes = b"\0" * 32) -> None:
    path.chmod(0o644)  # blobs are stored read-only
    with open(path, "r+b") as f:
        f.seek(10)
        f.write(data)


def _packed_adapter(tmp_path):
    """An adapter directory and its tar.gz as the workers pack it (core/adapter_archive.py)."""
    from core.adapter_archive import pack_adapter

    d = tmp_path / "saved"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    (d / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    return d, pack_adapter(d, tmp_path / "a.tar.gz").read_bytes()


def test_a_corrupt_checkpoint_is_never_served(client, alice, ckpt, blobs):
    url = f"/v1/checkpoints/{ckpt['id']}/content"
    sha = hashlib.sha256(adapter_tar_gz()).hexdigest()
    _corrupt(blobs.path(sha))
    for method, headers in (("GET", {}), ("GET", {"Range": "bytes=0-9"}), ("HEAD", {})):
        r = client.request(method, url, headers={**alice.headers, **headers})
        assert r.status_code == 500, (method, headers)
        assert r.headers["content-type"] == "application/problem+json"
        if method == "GET":
            p = r.json()
            assert (p["code"], p["blob"], p["checkpoint_id"], p["pool_id"]) == ("blob_corrupt", sha, ckpt["id"], ckpt["pool_id"])
            assert "no longer matches its sha256" in p["detail"] and f"pool_id={ckpt['pool_id']}" in p["detail"]
    blobs.path(sha).unlink()
    r = client.get(url, headers=alice.headers)
    assert r.status_code == 500 and r.json()["code"] == "blob_missing" and r.json()["blob"] == sha


def test_a_corrupt_checkpoint_is_restored_from_the_adapter_cache(client, alice, ckpt, blobs, settings,
                                                                  database_url, tmp_path):
    from core.adapter_archive import adapter_cache_dir

    saved, content = _packed_adapter(tmp_path)
    ckpt_id = add_checkpoint(database_url, ckpt["pool_id"], blobs, content=content)
    sha = hashlib.sha256(content).hexdigest()
    cached = adapter_cache_dir(settings.work_dir, sha)  # where a worker that trained or loaded it keeps it
    cached.parent.mkdir(parents=True)
    saved.rename(cached)
    _corrupt(blobs.path(sha))
    r = client.get(f"/v1/checkpoints/{ckpt_id}/content", headers=alice.headers)
    assert r.status_code == 200 and r.content == content and r.headers["etag"] == f'"{sha}"'
    assert blobs.path(sha).read_bytes() == content
    blobs.path(sha).unlink()  # a lost file comes back the same way
    r = client.get(f"/v1/checkpoints/{ckpt_id}/content", headers={**alice.headers, "Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == content[:10]


def test_with_blobs_in_s3_a_corrupt_checkpoint_is_refused_then_restored_from_the_adapter_cache(
        settings, alice, database_url, tmp_path, s3_endpoint, monkeypatch):
    from fastapi.testclient import TestClient

    from core.adapter_archive import adapter_cache_dir
    from service.main import create_app

    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    bucket, s3 = s3_endpoint.new_bucket(), s3_endpoint.client()
    on_s3 = settings.model_copy(update={"blob_store_url": f"s3://{bucket}/b", "s3_endpoint_url": s3_endpoint.url})
    blobs = on_s3.blob_store()
    saved, content = _packed_adapter(tmp_path)
    sha = hashlib.sha256(content).hexdigest()
    key = f"b/{sha[:2]}/{sha[2:4]}/{sha}"
    with TestClient(create_app(on_s3)) as client:
        ckpt_id = add_checkpoint(database_url, _pool(client, alice), blobs, content=content)
        url = f"/v1/checkpoints/{ckpt_id}/content"
        r = client.get(url, headers={**alice.headers, "Range": "bytes=5-14"})
        assert r.status_code == 206 and r.content == content[5:15] and r.headers["etag"] == f'"{sha}"'
        # Another writer replaces the object with other bytes: never served, though this
        # machine's cache still holds a good copy (the bucket is what is checked).
        s3.put_object(Bucket=bucket, Key=key, Body=content[:-1] + b"!")
        r = client.get(url, headers=alice.headers)
        assert r.status_code == 500 and r.json()["code"] == "blob_corrupt" and r.json()["blob"] == sha
        cached = adapter_cache_dir(on_s3.work_dir, sha)  # a worker on this machine kept it unpacked
        cached.parent.mkdir(parents=True)
        saved.rename(cached)
        r = client.get(url, headers=alice.headers)
        assert r.status_code == 200 and r.content == content
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == content  # re-published to the bucket
        s3.delete_object(Bucket=bucket, Key=key)  # a lost object comes back the same way
        assert client.get(url, headers=alice.headers).content == content
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(content)
    assert not on_s3.blob_dir.exists()
