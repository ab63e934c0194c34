"""Settings: where blobs live (ADAPTINF_BLOB_STORE, ADAPTINF_S3_ENDPOINT_URL), checked at load."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.blobs import LocalBlobStore
from service.config import Settings


def _clean_env(monkeypatch) -> None:
    for name in ("ADAPTINF_BLOB_STORE", "ADAPTINF_S3_ENDPOINT_URL", "ADAPTINF_BLOB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_blobs_stay_in_the_data_dir_by_default(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    settings = Settings(data_dir=tmp_path)
    store = settings.blob_store()
    assert isinstance(store, LocalBlobStore) and not store.remote
    assert store.location == str(tmp_path.resolve() / "blobs")


def test_an_s3_url_picks_the_s3_store_once_per_process(tmp_path, monkeypatch, s3_endpoint):
    _clean_env(monkeypatch)
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ADAPTINF_BLOB_STORE", "s3://my-bucket//runs/")
    settings = Settings(data_dir=tmp_path)
    assert settings.blob_store_url == "s3://my-bucket/runs" and settings.s3_endpoint_url == s3_endpoint.url
    store = settings.blob_store()
    assert store.remote and store.location == "s3://my-bucket/runs"
    assert store.cache.root == tmp_path.resolve() / "blob-cache"
    assert Settings(data_dir=tmp_path).blob_store() is store  # the client and the cache count are shared
    other = Settings(data_dir=tmp_path, blob_store_url="s3://my-bucket/other").blob_store()
    assert other is not store and other.location == "s3://my-bucket/other"


@pytest.mark.parametrize("name, value, message", [
    ("ADAPTINF_BLOB_STORE", "/mnt/blobs", "must be empty"),
    ("ADAPTINF_BLOB_STORE", "s3://My_Bucket/x", "not a valid S3 bucket name"),
    ("ADAPTINF_S3_ENDPOINT_URL", "minio:9000", "must be empty .AWS S3. or an http"),
])
def test_a_bad_blob_setting_fails_at_load_naming_it(tmp_path, monkeypatch, name, value, message):
    _clean_env(monkeypatch)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=f"{name}.*{message}|{message}") as err:
        Settings(data_dir=tmp_path)
    assert name in str(err.value)
